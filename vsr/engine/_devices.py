"""Which device and precision a run uses: ``auto`` resolved against the machine."""

from __future__ import annotations

import functools

import torch

from ..errors import DeviceError

__all__ = ["cpu_has_native_bf16", "resolve_device", "resolve_precision"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available; use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
        return dev
    if spec == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 is faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` → fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."""
    if spec == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if spec == "fp16" and device.type == "cpu":
        raise DeviceError("precision fp16 is for CUDA; on CPU use bf16 or fp32")
    return _DTYPES[spec]
