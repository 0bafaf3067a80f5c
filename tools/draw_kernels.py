#!/usr/bin/env python3
"""Draw ESPCN's last-layer kernels next to the deconvolution kernels they equal (the note's figure).

The last layer of ``espcn`` is a ``(r², 32, 3, 3)`` convolution followed by the periodic
shuffle; :func:`vsr.ops.subpixel_to_deconv` turns it into the ``(32 → 1, 3r × 3r)``
transposed convolution (stride r, padding r) that computes the same output. Left: for each
of the 32 input channels, the r² kernels laid out on the r×r phase grid; right: the same
weights interleaved into one 3r×3r deconvolution kernel. Uses the shipped weights when
``vsr.models.shipped_weights("espcn", scale)`` finds them, random ones otherwise (the
title and stdout say which)::

    python tools/draw_kernels.py                 # docs/kernels_x3.png
    python tools/draw_kernels.py --scale 2 -o /tmp/k2.png --force
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vsr.models import create_model, shipped_weights  # noqa: E402
from vsr.ops import SubpixelConv, subpixel_to_deconv  # noqa: E402

CELL = 6  # pixels per weight
GAP = 2  # between the phase kernels inside a left-hand tile
SPACE = 10  # between tiles
TILES_PER_ROW = 8
FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (30, 30, 30)


def colorize(values: np.ndarray, limit: float) -> np.ndarray:
    """Weights → BGR: blue < 0 < red, white at 0, saturated at ±limit."""
    t = np.clip(values / max(limit, 1e-12), -1.0, 1.0)
    fade = (255 * (1 - np.abs(t))).astype(np.uint8)
    full = np.full_like(fade, 255)
    return np.where(
        (t >= 0)[..., None], np.stack([fade, fade, full], -1), np.stack([full, fade, fade], -1)
    )


def enlarge(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, CELL, axis=0), CELL, axis=1)


def phase_tile(kernels: np.ndarray, r: int, limit: float) -> np.ndarray:
    """(r², k, k) kernels of one input channel → the r×r grid of them, phase (φh, φw) at row φh, column φw."""
    k = kernels.shape[-1]
    side = r * k * CELL + (r - 1) * GAP
    tile = np.full((side, side, 3), 255, np.uint8)
    for phase, kernel in enumerate(kernels):
        ph, pw = divmod(phase, r)
        y, x = ph * (k * CELL + GAP), pw * (k * CELL + GAP)
        tile[y : y + k * CELL, x : x + k * CELL] = enlarge(colorize(kernel, limit))
    return tile


def panel(tiles: list[np.ndarray]) -> np.ndarray:
    side = tiles[0].shape[0]
    rows = -(-len(tiles) // TILES_PER_ROW)
    out = np.full((rows * (side + SPACE) - SPACE, TILES_PER_ROW * (side + SPACE) - SPACE, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = divmod(i, TILES_PER_ROW)
        out[y * (side + SPACE) : y * (side + SPACE) + side, x * (side + SPACE) : x * (side + SPACE) + side] = tile
    return out


def text_band(lines: list[str], width: int) -> np.ndarray:
    band = np.full((22 * len(lines) + 8, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (8, 20 + 22 * i), FONT, 0.5, INK, 1, cv2.LINE_AA)
    return band


def draw(scale: int) -> tuple[np.ndarray, str, float]:
    """The figure, a line saying where the weights came from, and the conv/deconv max difference."""
    weights = shipped_weights("espcn", scale)
    if weights is not None:
        model = create_model("espcn", scale=scale, weights=weights)
        source = f"shipped weights ({weights.name})"
    else:
        torch.manual_seed(0)
        model = create_model("espcn", scale=scale, weights=None)
        source = f"RANDOM weights (no shipped espcn x{scale} weights)"
    conv = model.subpixel
    sub = SubpixelConv(weight=conv.weight.detach(), bias=None, scale=scale,
                       padding=tuple(conv.padding), crop=((0, 0), (0, 0)))
    deconv = subpixel_to_deconv(sub)
    with torch.no_grad():  # check the claim the figure makes, on this very layer
        h = torch.randn(1, conv.in_channels, 20, 20, dtype=torch.float64)
        lr = SubpixelConv(weight=sub.weight.double(), bias=None, scale=scale, padding=sub.padding, crop=sub.crop)
        hr = type(deconv)(deconv.weight.double(), None, scale, deconv.padding, deconv.output_padding)
        max_diff = float((lr.apply(h) - hr.apply(h)).abs().max())

    lr_w = sub.weight.numpy()  # (r², C, k, k)
    hr_w = deconv.weight.numpy()  # (C, 1, K, K)
    channels = lr_w.shape[1]
    limits = [float(np.abs(lr_w[:, c]).max()) for c in range(channels)]  # same numbers on both sides
    left = panel([phase_tile(lr_w[:, c], scale, limits[c]) for c in range(channels)])
    right = panel([enlarge(colorize(hr_w[c, 0], limits[c])) for c in range(channels)])
    height = max(left.shape[0], right.shape[0])
    pad = lambda p: np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255)  # noqa: E731
    gutter = np.full((height, 40, 3), 255, np.uint8)
    body = np.hstack([pad(left), gutter, pad(right)])
    body = np.pad(body, ((0, 10), (8, 8), (0, 0)), constant_values=255)
    width = body.shape[1]
    k, big = lr_w.shape[-1], hr_w.shape[-1]
    title = text_band([
        f"ESPCN x{scale} last layer, {source}",
        f"left: conv kernels ({scale * scale}, {channels}, {k}, {k}) + periodic shuffle, each input channel's "
        f"{scale * scale} kernels on the {scale}x{scale} phase grid",
        f"right: the equal deconvolution ({channels} -> 1, {big}x{big}), stride {scale}, padding "
        f"{deconv.padding[0]}  (vsr.ops.subpixel_to_deconv)",
    ], width)
    offset = left.shape[1] + 40 + 8
    caption = text_band([
        f"blue < 0 < red, scaled per input channel; biases not drawn. max |conv+shuffle - deconv| = {max_diff:.1e}",
    ], width)
    labels = np.full((26, width, 3), 255, np.uint8)
    cv2.putText(labels, "LR convolution kernels", (8, 18), FONT, 0.5, INK, 1, cv2.LINE_AA)
    cv2.putText(labels, "deconvolution kernels", (offset, 18), FONT, 0.5, INK, 1, cv2.LINE_AA)
    return np.vstack([title, labels, body, caption]), source, max_diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=3)
    parser.add_argument("-o", "--output", type=Path, help="PNG to write (default docs/kernels_x<scale>.png)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    out = args.output or Path(__file__).resolve().parents[1] / "docs" / f"kernels_x{args.scale}.png"
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    image, source, max_diff = draw(args.scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), image):
        print(f"error: could not write {out}; check the directory and the .png suffix", file=sys.stderr)
        return 1
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}) from {source}; "
          f"max |conv+shuffle - deconv| = {max_diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
