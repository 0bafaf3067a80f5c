"""Sub-pixel operations: periodic shuffle, and deconvolution ⇄ convolution in LR space.

The ESPCN authors' note ("Is the deconvolution layer the same as a convolutional layer?")
shows that a transposed convolution with stride ``r`` and kernel ``(o, i, K, K)`` equals a
plain convolution in LR space with kernel ``(o·r², i, k, k)``, ``k = ceil(K / r)``,
followed by the periodic shuffle: every HR output pixel of phase ``(φh, φw)`` (its position
modulo ``r``) is touched only by the kernel taps congruent to a fixed phase, so the ``K×K``
kernel splits into ``r²`` independent ``k×k`` kernels, one per output phase. A kernel whose
size is not a multiple of ``r`` is first padded with zeros up to ``k·r``. This module makes
the result executable, in 1-D and 2-D, *including the borders*: the LR convolution's zero
padding and a crop of the HR output reproduce the transposed convolution's ``padding`` and
``output_padding`` exactly.

Conventions (PyTorch's throughout):

* Layouts. A transposed-convolution weight is ``(in, out, *K)`` as
  :class:`torch.nn.ConvTranspose2d` stores it; the LR convolution weight is
  ``(out·r^d, in, *k)`` as :class:`torch.nn.Conv2d` stores it, applied as a
  *cross-correlation* (like every CNN "convolution").
* Periodic shuffle. LR channel ``c·r^d + phase`` goes to HR channel ``c``; in 2-D phase
  ``φh·r + φw`` lands at ``(h·r + φh, w·r + φw)``, exactly
  :func:`torch.nn.functional.pixel_shuffle`; in 1-D phase ``φ`` lands at ``l·r + φ``.
* Transposed convolution. ``y_full[m·r + t] += x[m]·w[t]`` and the output is
  ``y_full[padding : ...]``, length ``(L-1)·r + K - 2·padding + output_padding``.
  In the note's Fig. 3 the *sub-pixel* convolution correlates the zero-interleaved input with
  ``f``; "reversing the element indices" gives the transposed convolution, so the note's
  ``f`` is ``w`` flipped: ``f = (1, 2, 3, 4)`` ⇔ ``w = (4, 3, 2, 1)``.
* Phases. Padding ``f`` at its *end* (``w`` at its start) with zeros up to ``k·r``, the
  LR correlation kernel of output phase ``φ`` is ``f_pad[r-1-φ :: r]``, i.e.
  ``w_pad[(k-1-v)·r + φ]`` for tap ``v``. With ``r = 2`` this gives the note's examples
  exactly: ``f = (1, 2, 3, 4)`` → phase 0 ``(2, 4)``, phase 1 ``(1, 3)``; ``f = (1, 2, 3)`` →
  phase 0 ``(2, 0)`` (the note's ``f1 = (2)`` plus the padding zero), phase 1 ``(1, 3)``.

:func:`deconv_to_subpixel` returns a :class:`SubpixelConv` (weight, bias, scale, LR
``padding``, HR ``crop``) that can be applied or turned into a module;
:func:`subpixel_to_deconv` inverts it into a :class:`TransposedConv`;
:func:`convert_transposed_convs` rewrites whole models.
"""

from .kernels import SubpixelConv, TransposedConv, deconv_to_subpixel, subpixel_to_deconv
from .modules import (
    SubpixelConversionWarning,
    SubpixelConvModule,
    convert_transposed_convs,
    unsupported_reason,
)
from .shuffle import PeriodicShuffle, periodic_shuffle, periodic_unshuffle

__all__ = [
    "PeriodicShuffle",
    "SubpixelConv",
    "SubpixelConvModule",
    "SubpixelConversionWarning",
    "TransposedConv",
    "convert_transposed_convs",
    "deconv_to_subpixel",
    "periodic_shuffle",
    "periodic_unshuffle",
    "subpixel_to_deconv",
    "unsupported_reason",
]
