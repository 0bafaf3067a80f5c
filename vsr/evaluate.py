"""Evaluation under the published single-image SR protocol.

For every image of a folder (the protocol of SRCNN/ESPCN and the papers since):

1. the HR image is cropped to a multiple of ``scale`` (``modcrop``);
2. the LR image is MATLAB ``imresize(HR, 1/scale, 'bicubic')`` of the RGB image, 8-bit;
3. the model gets the LR image's Y (MATLAB ``rgb2ycbcr``, BT.601 16-235, 8-bit) divided by 255;
4. its output is clamped to [0, 1], multiplied by 255 and rounded to 8 bits (what a
   saved result holds), then compared with the HR image's Y;
5. PSNR and SSIM are computed with ``scale`` pixels shaved from every border.

The bicubic baseline is ``imresize(LR, scale, 'bicubic')`` of the RGB LR image, then Y.
A grayscale image (Set14's ``bridge.png``) is its own Y.  This reproduces the published
bicubic figures (Set5 33.66/30.39/28.42 dB at x2/x3/x4) to within 0.02 dB.

Anything that maps an LR-Y float array to an HR-Y float array can be evaluated;
:func:`model_upscaler` turns an :class:`~vsr.models.ESPCN` into such a callable.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import ConfigError, MediaError
from .imresize import imresize
from .metrics import psnr, rgb2y, ssim

__all__ = [
    "IMAGE_SUFFIXES",
    "EvalResult",
    "ImageResult",
    "Upscaler",
    "evaluate",
    "engine_upscaler",
    "list_images",
    "load_image",
    "make_lr",
    "model_upscaler",
    "modcrop",
    "prepare_sample",
    "to_y",
]

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

#: LR Y in [0, 1], shape (h, w) float32  ->  HR Y in [0, 1], shape (scale*h, scale*w).
Upscaler = Callable[[np.ndarray], np.ndarray]


def list_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"image folder {str(folder)!r} does not exist; pass a folder of PNG/BMP images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}; pass a folder of images"
        )
    return files


def load_image(path: str | Path) -> np.ndarray:
    """An 8-bit image as (H, W, 3) RGB or (H, W) gray; alpha dropped, 16-bit scaled down."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MediaError(f"cannot read image {str(path)!r}; is it a PNG/BMP/JPEG file?")
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise MediaError(f"image {str(path)!r} has unsupported sample type {img.dtype}")
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def to_y(img: np.ndarray) -> np.ndarray:
    """8-bit Y: MATLAB ``rgb2ycbcr`` luma of RGB, a gray image as it is."""
    return img if img.ndim == 2 else rgb2y(img)


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's LR image: MATLAB bicubic downscaling (antialiased) of the modcropped HR, 8-bit."""
    return imresize(modcrop(hr, scale), 1.0 / scale)


@dataclass(frozen=True)
class Sample:
    """One image prepared for evaluation: 8-bit Y planes."""

    name: str
    hr_y: np.ndarray
    lr_y: np.ndarray
    bicubic_y: np.ndarray


def prepare_sample(hr: np.ndarray, scale: int, name: str = "") -> Sample:
    if scale not in (2, 3, 4):
        raise ConfigError(f"scale must be 2, 3 or 4, got {scale!r}")
    hr = modcrop(hr, scale)
    if min(hr.shape[:2]) < 11 + 2 * scale:
        raise ConfigError(f"image {name!r} is too small ({hr.shape[1]}x{hr.shape[0]}) to evaluate")
    lr = imresize(hr, 1.0 / scale)
    return Sample(name, to_y(hr), to_y(lr), to_y(imresize(lr, scale)))


@dataclass(frozen=True)
class ImageResult:
    name: str
    width: int
    height: int
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


@dataclass(frozen=True)
class EvalResult:
    """Means over a folder (the literature averages per-image PSNR) and the per-image rows."""

    dataset: str
    scale: int
    model: str
    images: tuple[ImageResult, ...]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def _mean(self, key: str) -> float:
        return float(np.mean([getattr(r, key) for r in self.images]))

    @property
    def psnr(self) -> float:
        return self._mean("psnr")

    @property
    def ssim(self) -> float:
        return self._mean("ssim")

    @property
    def bicubic_psnr(self) -> float:
        return self._mean("bicubic_psnr")

    @property
    def bicubic_ssim(self) -> float:
        return self._mean("bicubic_ssim")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "model": self.model,
            "psnr": round(self.psnr, 4),
            "ssim": round(self.ssim, 5),
            "bicubic_psnr": round(self.bicubic_psnr, 4),
            "bicubic_ssim": round(self.bicubic_ssim, 5),
            "seconds": round(self.seconds, 3),
            **self.extra,
            "images": [
                {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(r).items()}
                for r in self.images
            ],
        }


def to_uint8(y: np.ndarray) -> np.ndarray:
    """Model output in [0, 1] (float) to what a saved 8-bit image holds."""
    return np.round(np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def model_upscaler(model: torch.nn.Module, device: str | torch.device = "cpu") -> Upscaler:
    """Wrap an ESPCN-like module ``(N, 1, h, w) -> (N, 1, rh, rw)`` as an :data:`Upscaler` (fp32)."""
    dev = torch.device(device)
    model = model.to(dev).eval()

    def run(lr_y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(lr_y, dtype=np.float32))[None, None].to(dev)
        with torch.inference_mode():
            y = model(x)
        return y[0, 0].float().cpu().numpy()

    return run


def engine_upscaler(engine: Any) -> Upscaler:
    """Wrap a :class:`vsr.engine.LumaUpscaler` as an :data:`Upscaler`: the LR Y as the uint8 plane ``vsr run`` feeds it.

    The protocol's LR image is 8-bit, so ``lr_y * 255`` is exact; the engine's rounded output
    is what a saved result holds.
    """

    def run(lr_y: np.ndarray) -> np.ndarray:
        plane = torch.from_numpy(np.round(np.asarray(lr_y, dtype=np.float64) * 255).astype(np.uint8))[None, None]
        out = engine(plane.to(engine.device), 255)
        return out[0, 0].cpu().numpy().astype(np.float32) / 255

    return run


def _iter_samples(dataset: str | Path | Sequence[Sample], scale: int) -> Iterator[Sample]:
    if isinstance(dataset, (str, Path)):
        for path in list_images(dataset):
            yield prepare_sample(load_image(path), scale, path.name)
    else:
        yield from dataset


def evaluate(
    upscaler: Upscaler | torch.nn.Module | None,
    dataset: str | Path | Sequence[Sample],
    scale: int,
    *,
    device: str | torch.device = "cpu",
    name: str = "",
) -> EvalResult:
    """PSNR/SSIM of ``upscaler`` and of bicubic on every image of ``dataset``.

    ``upscaler``: an :data:`Upscaler`, a torch module (run in fp32 on ``device``), or
    None to score bicubic alone (then ``psnr == bicubic_psnr``).  ``dataset``: a folder
    or already prepared samples (see :func:`prepare_sample`; lets training reuse them).
    """
    if isinstance(upscaler, torch.nn.Module):
        module_scale = getattr(upscaler, "scale", scale)
        if module_scale != scale:
            raise ConfigError(f"the model upscales x{module_scale} but --scale is {scale}")
        fn: Upscaler | None = model_upscaler(upscaler, device)
    else:
        fn = upscaler
    rows: list[ImageResult] = []
    start = time.perf_counter()
    for sample in _iter_samples(dataset, scale):
        if fn is None:
            out = sample.bicubic_y
        else:
            sr = fn(sample.lr_y.astype(np.float32) / 255.0)
            if sr.shape != sample.hr_y.shape:
                raise ConfigError(
                    f"the upscaler returned {sr.shape} for {sample.name!r}, expected {sample.hr_y.shape}"
                )
            out = to_uint8(sr)
        rows.append(
            ImageResult(
                name=sample.name,
                width=int(sample.hr_y.shape[1]),
                height=int(sample.hr_y.shape[0]),
                psnr=psnr(sample.hr_y, out, shave_border=scale),
                ssim=ssim(sample.hr_y, out, shave_border=scale),
                bicubic_psnr=psnr(sample.hr_y, sample.bicubic_y, shave_border=scale),
                bicubic_ssim=ssim(sample.hr_y, sample.bicubic_y, shave_border=scale),
            )
        )
    seconds = time.perf_counter() - start
    dataset_name = Path(dataset).name if isinstance(dataset, (str, Path)) else "samples"
    return EvalResult(dataset_name, scale, name or ("bicubic" if fn is None else "model"), tuple(rows), seconds)

