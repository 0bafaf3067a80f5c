"""Running a model on pixel planes: device and precision choice, tiling, integer I/O.

Synchronous by design: the streaming pipeline (:mod:`vsr.pipeline`) owns threads and
CUDA streams and calls into this package. The live preview, the Python API and the
benchmarks use the same :class:`LumaUpscaler`, so every path upscales the same way.

Private modules: ``_devices`` (``auto`` resolved against the machine), ``_luma`` (the
upscaler: tiling, integer I/O, out-of-memory fallback), ``_fused_bf16`` (the CPU fast path:
prepacked oneDNN convolutions with fused activations, bf16 or fp32), ``_int8`` (oneDNN int8
convolutions for 8-bit planes, the scheme of :mod:`vsr.quantize`), ``_heap`` (glibc's thresholds
raised so that a frame's freed tensors stay in the heap for the next frame).
"""

from ._devices import (cpu_has_int8_dot, cpu_has_native_bf16, exact_levels, precision_candidates, resolve_device, resolve_precision,
                       strict_fp32, tf32_flags, use_int8)
from ._luma import LumaUpscaler, int8_model, upscaler_from_config

__all__ = ["LumaUpscaler", "int8_model", "upscaler_from_config", "cpu_has_int8_dot", "cpu_has_native_bf16",
           "exact_levels", "precision_candidates", "resolve_device", "resolve_precision", "strict_fp32", "tf32_flags", "use_int8"]
