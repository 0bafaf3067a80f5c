"""Which device and precision a run uses: ``auto`` resolved against the machine."""

from __future__ import annotations

import functools

import torch

from ..errors import DeviceError

__all__ = ["cpu_has_int8_dot", "cpu_has_native_bf16", "cpu_vendor", "exact_levels", "int8_beats_bf16", "precision_candidates", "resolve_device", "resolve_precision",
           "strict_fp32", "tf32_flags", "use_int8"]

#: CPU flags (``/proc/cpuinfo``) of integer dot-product instructions the int8 engine runs on.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

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
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():  # the blank line after the first processor
                    break
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (empty where it cannot be read)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_vendor() -> str:
    """The CPU's ``vendor_id`` as ``/proc/cpuinfo`` gives it (``GenuineIntel``, ``AuthenticAMD``; empty where unknown)."""
    return _cpuinfo().get("vendor_id", "")


def int8_beats_bf16() -> bool:
    """Whether ``auto`` takes the int8 engine over bf16 on this CPU (given the instructions and a file in the bound).

    Not on AMD CPUs with AVX512-BF16 (Zen 4, Zen 5), whose bf16 convolutions are as fast as the int8 engine or
    faster: espcn x3 at 640x360, 2 threads (``tools/bench_int8.py``), int8/bf16 0.99-1.02 on a Zen 4 (scheme v3) and
    0.58-0.61 on a Zen 5 (scheme v4; without the bypass 0.84-0.86), against 2.14 on an Intel Xeon with AVX512-BF16
    but no AMX (docs/PERFORMANCE.md, sessions 7, 8 and 11). ``--precision int8`` still runs it there.
    """
    return not (cpu_vendor() == "AuthenticAMD" and "avx512_bf16" in cpu_flags())


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 is faster than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_int8_dot() -> bool:
    """True when the CPU has integer dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool(set(INT8_FLAGS) & cpu_flags())


def float_advice() -> str:
    """What to run instead of int8 on this CPU: bf16 only where the CPU has it in hardware."""
    if cpu_has_native_bf16():
        return "use --precision bf16 or fp32"
    return "use --precision fp32 (this CPU has no native bf16, so bf16 would run in software, slower than fp32)"


def use_int8(spec: str, device: torch.device, *, ships: bool) -> bool:
    """Whether precision ``spec`` runs the int8 engine; ``ships``: the model's int8 file is there.

    ``auto`` → int8 only on a CPU with the instructions where int8 is the faster engine (:func:`int8_beats_bf16`),
    and for a model whose int8 file ships;
    ``int8`` on a device or CPU that cannot run it is an error (the file's absence is the caller's).
    """
    if spec == "auto":
        return device.type == "cpu" and ships and cpu_has_int8_dot() and int8_beats_bf16()
    if spec != "int8":
        return False
    if device.type != "cpu":
        raise DeviceError(f"precision int8 is the CPU engine; on {device.type} use fp16, bf16 or fp32 (or --device cpu)")
    if not cpu_has_int8_dot():
        raise DeviceError("precision int8 needs integer dot-product instructions, which this CPU lacks "
                          f"(none of {', '.join(INT8_FLAGS)} in /proc/cpuinfo); {float_advice()}")
    return True


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` → fp16 on CUDA, bf16 on CPUs with native bf16, else fp32 (also the float precision of int8)."""
    if spec in ("auto", "int8"):  # int8: the float precision beside it (deeper video, forward_float)
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if spec == "fp16" and device.type == "cpu":
        raise DeviceError(f"precision fp16 is for CUDA; on CPU {float_advice()}")
    return _DTYPES[spec]


# The largest integer level a float dtype holds exactly (2**significant_bits - 1): fp16 has 11
# significant bits, bf16 8. Planes deeper than this run in fp32 (LumaUpscaler._module_for).
_EXACT_LEVELS = {torch.float16: (1 << 10) - 1, torch.bfloat16: (1 << 8) - 1, torch.float32: (1 << 24) - 1}


def exact_levels(dtype: torch.dtype) -> int:
    """The largest ``max_value`` whose integer planes ``dtype`` runs at full accuracy (e.g. fp16: 10-bit)."""
    return _EXACT_LEVELS[dtype]


def _new_tf32_api() -> bool:
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv is not None and hasattr(conv, "fp32_precision")


def strict_fp32(device: torch.device) -> None:
    """Make fp32 on CUDA mean fp32: cuDNN convolutions default to TF32 (a 10-bit significand) on Ampere and later.

    The flags are process-wide (PyTorch has no per-call switch); vsr sets them whenever a
    fp32 model is built for CUDA, and never turns TF32 back on. Uses the ``fp32_precision``
    API where torch has it (2.9+; mixing it with the legacy ``allow_tf32`` flags is an error
    there), else the legacy flags.
    """
    if device.type != "cuda":
        return
    if _new_tf32_api():
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:  # pragma: no cover - torch < 2.9
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def tf32_flags() -> dict[str, str]:
    """What fp32 convolutions and matmuls on CUDA run as now ("ieee" is fp32; "tf32" is not)."""
    if _new_tf32_api():
        return {"cudnn_conv": torch.backends.cudnn.conv.fp32_precision,
                "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}
    return {"cudnn_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",  # pragma: no cover
            "cuda_matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"}


def precision_candidates(device: torch.device, *, model: str = "espcn", scale: int = 3,
                         weights: str | None = None, within_bound: bool = True) -> tuple[str, ...]:
    """The precisions worth running ``model`` at on ``device``, most accurate first.

    What ``vsr run --realtime`` (:mod:`vsr.realtime`) may trade for speed, from ``auto``'s choice on:
    CUDA fp32, fp16; CPUs with native bf16 fp32, bf16; other CPUs fp32 only (bf16 in software is
    slower than fp32 there); then int8 where ``auto`` would take it for ``model`` x ``scale``
    (``weights``: None, the shipped files), or with ``within_bound=False`` wherever an int8 file
    ships and the CPU has the instructions (``--precision int8`` would run), inside the 0.05 dB
    quality bound or not.
    """
    if device.type == "cuda":
        return ("fp32", "fp16")
    floats = ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)
    from ._luma import int8_model  # int8 where ``auto`` takes it: the instructions, and a file within 0.05 dB

    try:
        int8 = int8_model("auto" if within_bound else "int8", device, model, scale, weights) is not None
    except Exception:  # noqa: BLE001 - a file that does not load is not a candidate; the run says why if chosen
        int8 = False
    return (*floats, "int8") if int8 else floats
