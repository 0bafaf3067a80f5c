"""Exporting a model as an mpv user shader: GLSL hook passes on the video's luma.

The file is read by mpv's ``--glsl-shaders`` (``vo=gpu``) and by libplacebo (``vo=gpu-next``);
the syntax is mpv's manual's ("--glsl-shaders"), the layout that of FSRCNNX's generator:

- every pass hooks ``LUMA`` and runs only when the window is at least about r× the video
  (``//!WHEN``, the same on every pass, so that the chain runs whole or not at all);
- a convolution with C output maps is ceil(C/4) passes at the video's size, each writing 4
  maps into one RGBA float texture (``//!SAVE``, ``//!COMPONENTS 4``) from the ``//!BIND``-ed
  maps of the layer before; weights and biases are constants in the code; the activation
  follows. A layer reading more textures than one pass may bind (:data:`MAX_BINDS`) takes
  several passes per 4 maps, each adding to the partial sum of the one before;
- the network zero-pads every layer's input, but texture reads clamp to the edge: each tap
  that falls outside the frame is multiplied by 0;
- the last pass writes the r× luma (``//!WIDTH LUMA.w r *``, ``//!OFFSET ALIGN``) by the
  periodic shuffle: output pixel (r·x + i, r·y + j) is map j·r + i of video pixel (x, y),
  clamped to [0, 1] as vsr clamps.

mpv hands the ``LUMA`` hook the plane as stored, normalised to [0, 1] (Y / 255 at 8 bits,
Y / (2^b − 1) at b bits) without range expansion: the input vsr's networks take. Taps are
texture reads at texel centres. The network runs in the plane's stored orientation, as vsr
upscales frames: with a rotated video (``--video-rotate``, rotation metadata) mpv keeps
``LUMA`` as stored but lays the passes' textures out as displayed, so the taps into feature
maps and the shuffle's sub-pixel index are turned by ``HOOKED_rot`` (measured in mpv 0.35 at
0, 90, 180 and 270 degrees). Chroma is left to mpv's scalers.

The model is walked, not assumed: its leaf modules in registration order (the order ESPCN
and ``nn.Sequential`` run them) must be convolutions, each optionally followed by an
activation, then one ``PixelShuffle``. Anything else is refused naming the layer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import ConfigError
from ..models import create_model
from ._files import checked_destination, replacing

__all__ = ["MAX_BINDS", "ShaderCost", "export_mpv", "mpv_shader", "shader_cost", "when_condition"]

# Textures one pass binds. mpv and libplacebo parse up to 16, but vo=gpu on OpenGL gives each
# bound texture a vertex attribute beside the position, and GPUs offer 16 (GL_MAX_VERTEX_ATTRIBS):
# on Mesa's llvmpipe 16 binds fail to link. A layer with more input textures is split into
# passes that add partial sums (the partial sum is one more bind).
MAX_BINDS = 15
_SUPPORTED = "Conv2d (stride 1, zero 'same' padding, groups 1), Tanh, ReLU or PReLU after it, then one PixelShuffle"


@dataclass(frozen=True)
class _Conv:
    name: str  # the module's name in the model, for messages and the pass descriptions
    weight: np.ndarray  # (out, in, k, k) float32
    bias: np.ndarray  # (out,) float32
    activation: str | None = None  # "tanh", "relu", "prelu"
    slope: np.ndarray | None = None  # PReLU: one slope per output map

    @property
    def outputs(self) -> int:
        return self.weight.shape[0]

    @property
    def inputs(self) -> int:
        return self.weight.shape[1]

    @property
    def kernel(self) -> int:
        return self.weight.shape[2]


@dataclass(frozen=True)
class ShaderCost:
    """What the shader costs the GPU, counted from the model."""

    scale: int
    passes: int  # hook passes per frame
    fetches_per_video_pixel: int  # texture reads of the convolution passes, per pixel of the video
    fetches_per_output_pixel: float  # all texture reads per pixel of the r× luma

    def __str__(self) -> str:
        return (f"{self.passes} passes, {self.fetches_per_output_pixel:.4g} texture reads per output pixel "
                f"({self.fetches_per_video_pixel} per video pixel in the convolution passes)")


def _groups(maps: int) -> int:
    return math.ceil(maps / 4)


def _cannot(name: str, module: nn.Module, why: str = "") -> ConfigError:
    detail = f": {why}" if why else ""
    return ConfigError(f"mpv export cannot express layer {name!r} ({type(module).__name__}{detail}); "
                       f"a shader holds {_SUPPORTED}")


def _conv(name: str, m: nn.Conv2d) -> _Conv:
    k = m.kernel_size
    if k[0] != k[1] or k[0] % 2 == 0:
        raise _cannot(name, m, f"kernel {k[0]}x{k[1]}, not square and odd")
    if m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1:
        raise _cannot(name, m, f"stride {m.stride}, dilation {m.dilation}, groups {m.groups}")
    if m.padding not in ((k[0] // 2, k[0] // 2), "same") or m.padding_mode != "zeros":
        raise _cannot(name, m, f"padding {m.padding!r} ({m.padding_mode}), not zero 'same' padding")
    weight = m.weight.detach().float().cpu().numpy()
    bias = (m.bias.detach().float().cpu().numpy() if m.bias is not None
            else np.zeros(m.out_channels, np.float32))
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ConfigError(f"mpv export: layer {name!r} has weights that are not finite (NaN or inf); "
                          "retrain or pass other --weights")
    return _Conv(name, weight, bias)


def _walk(network: nn.Module) -> tuple[list[_Conv], int]:
    """The model's convolutions (with their activations) and the shuffle's factor."""
    convs: list[_Conv] = []
    scale = 0
    for name, m in network.named_modules():
        if next(m.children(), None) is not None or isinstance(m, nn.Identity):
            continue  # containers (their leaves come next) and no-ops
        if scale:
            raise _cannot(name, m, "after the PixelShuffle, which must be last")
        if isinstance(m, nn.Conv2d):
            conv = _conv(name, m)
            if not convs and conv.inputs != 1:
                raise ConfigError(f"mpv export: layer {name!r} takes {conv.inputs} channels; an mpv LUMA shader "
                                  "takes 1 (luma): export a luma model (channels=1)")
            if convs and conv.inputs != convs[-1].outputs:
                raise _cannot(name, m, f"takes {conv.inputs} maps but the layer before gives {convs[-1].outputs}")
            convs.append(conv)
        elif isinstance(m, (nn.Tanh, nn.ReLU, nn.PReLU)):
            if not convs or convs[-1].activation is not None:
                raise _cannot(name, m, "an activation must follow a convolution")
            last = convs[-1]
            slope = None
            if isinstance(m, nn.PReLU):
                a = m.weight.detach().float().cpu().numpy()
                if a.size not in (1, last.outputs):
                    raise _cannot(name, m, f"{a.size} slopes for {last.outputs} maps")
                slope = np.broadcast_to(a, (last.outputs,)).astype(np.float32)
            kind = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.PReLU: "prelu"}[type(m)]
            convs[-1] = _Conv(last.name, last.weight, last.bias, kind, slope)
        elif isinstance(m, nn.PixelShuffle):
            r = m.upscale_factor
            if not convs or convs[-1].outputs != r * r:
                got = convs[-1].outputs if convs else 0
                raise _cannot(name, m, f"x{r} needs {r * r} maps (one luma plane) from the layer before, got {got}")
            scale = r
        else:
            raise _cannot(name, m)
    if not convs or not scale:
        raise ConfigError(f"mpv export: the model ends without a convolution and a PixelShuffle; a shader holds {_SUPPORTED}")
    return convs, scale


@dataclass(frozen=True)
class _Pass:
    """One hook pass of a convolution: 4 output maps, from some of the layer's input textures."""

    conv: _Conv
    group: int  # output maps 4·group .. 4·group + 3
    first: int  # index of the first input texture read (each holds 4 input maps)
    reads: tuple[str, ...]  # the input textures read
    partial: str | None  # the texture holding the sum of the passes before (None: the first pass)
    save: str
    last: bool  # the pass that adds the last inputs and applies the activation

    @property
    def binds(self) -> tuple[str, ...]:
        """Every pass binds HOOKED too: its rotation turns the taps of rotated video (see _taps)."""
        hooked = () if "HOOKED" in self.reads else ("HOOKED",)
        return self.reads + ((self.partial,) if self.partial else ()) + hooked


def _chunks(n: int) -> list[range]:
    """Input textures 0..n-1 split evenly into the fewest passes that bind at most MAX_BINDS each
    (with HOOKED and, after the first, the partial sum)."""
    parts = max(1, math.ceil((n - 1) / (MAX_BINDS - 2)))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


def _plan(convs: list[_Conv], r: int) -> tuple[list[_Pass], list[str]]:
    """Every convolution pass in order, and the textures holding the last layer's maps."""
    passes: list[_Pass] = []
    ins = ["HOOKED"]  # the first layer reads the luma itself
    for li, conv in enumerate(convs, 1):
        outs = [f"VSR{r}_L{li}_{g}" for g in range(_groups(conv.outputs))]
        chunks = _chunks(len(ins))
        for g, out in enumerate(outs):
            partial = None
            for c, chunk in enumerate(chunks):
                last = c == len(chunks) - 1
                save = out if last else f"{out}_S{c}"
                passes.append(_Pass(conv, g, chunk.start, tuple(ins[i] for i in chunk), partial, save, last))
                partial = save
        ins = outs
    return passes, ins


def shader_cost(network: nn.Module) -> ShaderCost:
    """Passes and texture reads of the shader :func:`mpv_shader` writes for ``network``."""
    convs, r = _walk(network)
    passes, outs = _plan(convs, r)
    lr = sum(p.conv.kernel**2 * len(p.reads) + (p.partial is not None) for p in passes)
    return ShaderCost(r, len(passes) + 1, lr, lr / r**2 + len(outs))


def _f(x: float) -> str:
    """A float32 constant as a GLSL float literal that reads back to the same float32."""
    s = f"{float(np.float32(x)):.9g}"
    return s if any(c in s for c in ".en") else s + ".0"


def _vec4(values: np.ndarray) -> str:
    v = np.zeros(4, np.float32)
    v[: len(values)] = values
    return f"vec4({', '.join(_f(x) for x in v)})"


def _mat4(w: np.ndarray) -> str:
    """``w`` (≤4 outputs, ≤4 inputs) as the mat4 M with M * inputs = outputs (GLSL is column-major)."""
    m = np.zeros((4, 4), np.float32)
    m[: w.shape[0], : w.shape[1]] = w
    return f"mat4({', '.join(_f(x) for x in m.T.reshape(-1))})"


_INSIDE = """float inside(vec2 q, vec2 end) {  // 1 for a pixel of the frame, 0 outside: the network's zero padding
    return step(0.0, q.x) * step(0.0, q.y) * step(q.x, end.x) * step(q.y, end.y);
}
"""

_TANH = """vec4 tanh4(vec4 x) {  // exact where the exp form overflows
    vec4 t = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - t) / (1.0 + t);
}
"""


def _header(lines: list[str], *, desc: str, when: str, binds: list[str]) -> None:
    lines += [f"//!DESC {desc}", "//!HOOK LUMA", f"//!WHEN {when}"] + [f"//!BIND {b}" for b in binds]


def _conv_pass(p: _Pass, *, title: str, when: str) -> str:
    conv = p.conv
    k, lo, hi = conv.kernel, 4 * p.group, min(4 * p.group + 4, conv.outputs)
    act = (conv.activation or "linear") if p.last else "partial sum"
    lines: list[str] = []
    _header(lines, desc=f"{title} {conv.name}: {k}x{k} conv {conv.inputs}->{conv.outputs}, maps {lo}-{hi - 1}, {act}",
            when=when, binds=list(p.binds))
    lines += [f"//!SAVE {p.save}", "//!COMPONENTS 4", "", _INSIDE]
    if conv.activation == "tanh" and p.last:
        lines.append(_TANH)
    first = p.reads[0]
    start = f"{p.partial}_tex({first}_pos)" if p.partial else _vec4(conv.bias[lo:hi])
    lines += ["vec4 hook() {",
              f"    vec2 pos = {first}_pos, pt = {first}_pt;",
              "    vec2 here = floor(pos / pt);  // this pixel's column and row",
              "    vec2 end = 1.0 / pt - 0.5;  // past the last column and row",
              f"    vec4 res = {start};",
              "    vec4 acc;"]
    if first != "HOOKED":
        lines.append("    vec2 d;")
    w = conv.weight[lo:hi]
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            if first == "HOOKED":
                d = f"vec2({_f(dx)}, {_f(dy)})"
            else:  # feature maps are stored as displayed: turn the offset as mpv turned the video
                d = "d"
                lines.append(f"    d = floor(vec2({_f(dx)}, {_f(dy)}) * HOOKED_rot + 0.5);")
            tap = f"pos + {d} * pt"
            ky, kx = dy + k // 2, dx + k // 2
            if conv.inputs == 1:
                terms = [f"{_vec4(w[:, 0, ky, kx])} * {first}_tex({tap}).x"]
            else:
                terms = [f"{_mat4(w[:, 4 * j : 4 * j + 4, ky, kx])} * {tex}_tex({tap})"
                         for j, tex in enumerate(p.reads, p.first)]
            lines.append(f"    acc = {terms[0]};")
            lines += [f"    acc += {t};" for t in terms[1:]]
            mask = "" if dx == dy == 0 else f"inside(here + {d}, end) * "
            lines.append(f"    res += {mask}acc;")
    if p.last and conv.activation == "tanh":
        lines.append("    res = tanh4(res);")
    elif p.last and conv.activation == "relu":
        lines.append("    res = max(res, 0.0);")
    elif p.last and conv.activation == "prelu":
        assert conv.slope is not None
        lines.append(f"    res = max(res, 0.0) + {_vec4(conv.slope[lo:hi])} * min(res, 0.0);")
    lines += ["    return res;", "}", ""]
    return "\n".join(lines)


def _shuffle_pass(ins: list[str], r: int, *, title: str, when: str) -> str:
    lines: list[str] = []
    _header(lines, desc=f"{title}: periodic shuffle to the {r}x luma", when=when, binds=[*ins, "HOOKED"])
    first = ins[0]
    lines += [f"//!WIDTH LUMA.w {r} *", f"//!HEIGHT LUMA.h {r} *", "//!OFFSET ALIGN", "//!COMPONENTS 1", "",
              "vec4 hook() {",
              f"    vec2 lr = {first}_pos / {first}_pt;  // position in video pixels",
              f"    vec2 sub = floor(fract(lr) * {_f(r)});  // which of the {r}x{r} output pixels of that video pixel,",
              f"    sub = floor(HOOKED_rot * (sub - {_f((r - 1) / 2)}) + {_f((r - 1) / 2 + 0.5)});  // counted as stored",
              f"    vec2 base = (floor(lr) + 0.5) * {first}_pt;",
              f"    float map = sub.y * {_f(r)} + sub.x;",
              "    float y = 0.0;"]
    for j, tex in enumerate(ins):
        picks = ", ".join(_f(4 * j + c) for c in range(4))
        lines.append(f"    y += dot({tex}_tex(base), vec4(equal(vec4(map), vec4({picks}))));")
    lines += ["    return vec4(clamp(y, 0.0, 1.0), 0.0, 0.0, 0.0);", "}", ""]
    return "\n".join(lines)


def when_condition(scale: int) -> str:
    """Run when the window is at least about ``scale``× the video on both axes (0.7 below: FSRCNNX's x2 uses 1.3)."""
    t = f"{scale - 0.7:.1f}"
    return f"OUTPUT.w LUMA.w / {t} > OUTPUT.h LUMA.h / {t} > *"


def mpv_shader(network: nn.Module, *, title: str = "vsr") -> str:
    """The text of the mpv user shader for ``network`` (``title`` names its passes in mpv's pass list)."""
    convs, r = _walk(network)
    when = when_condition(r)
    passes, last = _plan(convs, r)
    texts = [_conv_pass(p, title=title, when=when) for p in passes]
    return "\n".join([*texts, _shuffle_pass(last, r, title=title, when=when)])


def export_mpv(
    path: str | os.PathLike[str],
    *,
    scale: int = 3,
    model: str = "espcn",
    weights: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` at ``scale`` (``weights``; None: the shipped ones) as an mpv GLSL user shader; returns its path.

    Play with ``mpv --glsl-shaders=FILE video``. Written beside ``path`` and renamed into
    place, so a failed export leaves nothing behind; an existing file is kept unless ``overwrite``.
    """
    dest = checked_destination(path, overwrite=overwrite, example=f"espcn_x{scale}.glsl")
    network = create_model(model, scale=scale, weights=os.fspath(weights) if weights is not None else "shipped")
    with torch.inference_mode():
        title = f"vsr {model} x{scale}"
        body = mpv_shader(network, title=title)
        cost = shader_cost(network)
    head = (f"// {title}: ESPCN super-resolution of the luma as an mpv / libplacebo user shader, written by vsr "
            f"{__version__}.\n"
            f"// Use: mpv --glsl-shaders={dest.name} VIDEO (runs when the window is at least about {scale}x the "
            "video; chroma is left to mpv's scalers).\n"
            f"// Cost: {cost}.\n"
            "// Input: the luma plane as mpv hands it to LUMA hooks, in [0, 1]; float textures (rgba16f) needed.\n\n")
    with replacing(dest, overwrite=overwrite) as tmp:
        tmp.write_text(head + body, encoding="ascii")
    return dest
