"""Keeping glibc from handing a frame's memory back to the kernel between frames.

A CPU frame allocates and frees tens of megabytes of intermediate tensors (espcn x3 at 640x360:
layer 2's fp32 output alone is 29.5 MB), and the pipeline's stages more (decoded and encoded frames,
1920x1080 output planes). With glibc's default tuning, a free that leaves more than ``M_TRIM_THRESHOLD``
at the top of the heap returns it to the kernel, and allocations over ``M_MMAP_THRESHOLD`` get pages of
their own that are unmapped on free; either way the next frame page-faults the same memory back in,
zero-filled. Measured on an AMD EPYC Zen 5 (2 cores) by the whole ``vsr bench --size 640x360 --scale 3
--frames 30 --precision int8`` process, with ``MALLOC_TOP_PAD_=131072`` (glibc's default, which this module
then leaves alone) against without: 6.43 M against 0.55 M minor faults, 18.9 s against 4.4 s of kernel time
(``/usr/bin/time``); docs/PERFORMANCE.md, "Session 12", has the fps.

:func:`keep_freed_heap` raises them once per process: memory a frame freed stays in the heap for the
next one, so the process's resident size stays at its peak instead of swinging to it and back every
frame; the peak itself does not change. Allocations over 32 MiB (glibc's ceiling for the mmap
threshold) still get pages of their own. Users who tune glibc themselves keep their tuning: with any
of its ``MALLOC_*_`` variables in the environment, or with another allocator preloaded, nothing is
changed. No-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

__all__ = ["keep_freed_heap"]

log = logging.getLogger("vsr")

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit (HEAP_MAX_SIZE / 2); mallopt refuses more
_TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept up to this; in practice: everything freed
_USER_TUNING = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@functools.cache
def keep_freed_heap() -> bool:
    """Raise glibc's trim and mmap thresholds for this process (once); whether they were raised."""
    if not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ for name in _USER_TUNING):
        log.debug("glibc malloc tuned by the environment: left as it is")
        return False
    if any(a in os.environ.get("LD_PRELOAD", "") for a in _OTHER_ALLOCATORS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # glibc only (musl has no version call)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    version.restype = ctypes.c_char_p
    log.debug("glibc %s: freed heap kept between frames: %s", version().decode(), done)
    return done
