"""Exporting a model for other runtimes: ONNX with dynamic frame size.

The exported graph is the network alone, on luma: input ``input`` ``N×1×H×W`` float32
in [0, 1] (Y of BT.601 studio range divided by 255, as vsr feeds it), output ``output``
``N×1×rH×rW``, not clamped (clip to [0, 1] before converting to 8 bits). Batch, height
and width are dynamic. FFmpeg's ``dnn_processing`` filter feeds exactly that for YUV
frames (the Y plane as float, chroma scaled by swscale); OpenCV's ``cv2.dnn`` reads it too.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..errors import ConfigError
from ..models import ESPCN, create_model
from ._files import checked_destination, replacing

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_max_difference"]

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17


def _need_onnx() -> object:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'vsr[onnx]' (or pip install onnx)") from None
    return onnx


def export_onnx(
    path: str | os.PathLike[str],
    *,
    scale: int = 3,
    model: str = "espcn",
    weights: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` at ``scale`` (``weights``; None: the shipped ones) as an ONNX file; returns its path.

    The file is checked with ``onnx.checker`` and carries its provenance in the model's
    metadata (vsr version, model, scale, input convention). Written beside ``path`` and
    renamed into place, so a failed export leaves nothing behind.
    """
    onnx = _need_onnx()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 11 <= opset <= 21:
        raise ConfigError(f"opset must be an integer from 11 to 21, got {opset!r}")
    dest = checked_destination(path, overwrite=overwrite, example=f"espcn_x{scale}.onnx")
    network = create_model(model, scale=scale, weights=os.fspath(weights) if weights is not None else "shipped")
    with replacing(dest, overwrite=overwrite) as tmp:
        _write(network, tmp, opset)
        proto = onnx.load(str(tmp))  # type: ignore[attr-defined]
        onnx.checker.check_model(proto)  # type: ignore[attr-defined]
        proto.doc_string = (f"vsr {__version__}: {model} x{scale} super-resolution on luma. "
                            f"{INPUT_NAME}: N x 1 x H x W float32 in [0, 1] (Y, BT.601 studio range, /255); "
                            f"{OUTPUT_NAME}: N x 1 x {scale}H x {scale}W, unclamped.")
        for key, value in {"vsr_version": __version__, "model": model, "scale": str(scale),
                           "halo": str(network.config.halo), "input_range": "0..1",
                           "colour": "Y of ITU-R BT.601 studio range (16-235) / 255"}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))  # type: ignore[attr-defined]
    return dest


def _write(network: ESPCN, path: Path, opset: int) -> None:
    example = torch.rand(1, 1, 24, 32)
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network.float().eval(), (example,), str(path),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}},
            opset_version=opset, dynamo=False,
        )


def onnx_max_difference(path: str | os.PathLike[str], network: ESPCN, *, shape: tuple[int, int, int, int] = (2, 1, 37, 53),
                        seed: int = 0) -> float | None:
    """Largest |ONNX Runtime − PyTorch| on random input of ``shape``; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (y_onnx,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    with torch.inference_mode():
        y_torch = network.float().eval()(torch.from_numpy(x)).numpy()
    if y_onnx.shape != y_torch.shape:
        return float("inf")
    return float(np.abs(y_onnx - y_torch).max())
