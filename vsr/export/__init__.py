"""Exporting a model for other runtimes. One private module per target format.

``_onnx``: ONNX with dynamic frame size (FFmpeg's dnn_processing, OpenCV dnn, ONNX Runtime).
"""

from ._onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_max_difference

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_max_difference"]
