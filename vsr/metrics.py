"""Image-quality metrics as the super-resolution literature computes them.

* :func:`rgb2y`: the Y of MATLAB's ``rgb2ycbcr`` (ITU-R BT.601, studio range 16-235).
* :func:`psnr` and :func:`ssim` on 8-bit values with ``shave`` pixels cut from every
  border; :func:`ssim` is Wang et al.'s reference ``ssim_index.m`` (11x11 Gaussian,
  sigma 1.5, K = (0.01, 0.03), L = 255, 'valid' filtering), which the SR papers use.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

__all__ = ["rgb2y", "psnr", "ssim", "shave"]

# MATLAB rgb2ycbcr, for R, G, B in [0, 255]: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def rgb2y(rgb: np.ndarray, *, round_uint8: bool = True) -> np.ndarray:
    """Luma Y of MATLAB's ``rgb2ycbcr`` for an (H, W, 3) RGB image with values in [0, 255].

    With ``round_uint8`` (MATLAB's behaviour for ``uint8`` input) the result is a
    ``uint8`` array; otherwise float64 in [16, 235].
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConfigError(f"rgb2y needs an (H, W, 3) RGB image, got shape {rgb.shape}")
    y = rgb.astype(np.float64) @ _Y_WEIGHTS + 16.0
    if round_uint8:
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
    return y


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """``img`` without ``border`` pixels on each side."""
    if border <= 0:
        return img
    return img[border:-border, border:-border, ...]


def _check_pair(a: np.ndarray, b: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ConfigError(f"images differ in shape: {a.shape} vs {b.shape}")
    a = shave(a, border).astype(np.float64)
    b = shave(b, border).astype(np.float64)
    if a.size == 0:
        raise ConfigError(f"nothing left after shaving {border} pixels from a {a.shape} image")
    return a, b


def psnr(reference: np.ndarray, test: np.ndarray, *, shave_border: int = 0, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    a, b = _check_pair(reference, test, shave_border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()  # separable: the 2-D window is outer(g, g), which sums to 1


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """2-D 'valid' correlation with the separable window ``outer(g, g)``."""
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g  # (H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g  # (H-k+1, W-k+1)


def ssim(reference: np.ndarray, test: np.ndarray, *, shave_border: int = 0, peak: float = 255.0) -> float:
    """Mean SSIM of two single-channel images (Wang et al. 2004, reference implementation)."""
    a, b = _check_pair(reference, test, shave_border)
    if a.ndim != 2:
        raise ConfigError(f"ssim needs single-channel (H, W) images, got shape {a.shape}")
    if min(a.shape) < 11:
        raise ConfigError(f"ssim needs images of at least 11x11 pixels, got {a.shape}")
    g = _gaussian_window()
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a, g) - mu_a2
    var_b = _filter_valid(b * b, g) - mu_b2
    cov = _filter_valid(a * b, g) - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_a2 + mu_b2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
