"""Exporting a model for other runtimes. One private module per target format.

``_onnx``: ONNX with dynamic frame size (FFmpeg's dnn_processing, OpenCV dnn, ONNX Runtime).
``_mpv``: a GLSL user shader on the luma for mpv (``vo=gpu``) and libplacebo (``vo=gpu-next``).
``_files``: the destination checks and the write-beside-then-rename both share.
"""

from ._mpv import MAX_BINDS, ShaderCost, export_mpv, mpv_shader, shader_cost, when_condition
from ._onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_max_difference

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "MAX_BINDS", "OUTPUT_NAME", "ShaderCost", "export_mpv", "export_onnx",
           "mpv_shader", "onnx_max_difference", "shader_cost", "when_condition"]
