"""Where an int8 frame's time goes: each step of ``Int8CpuNet.__call__`` timed apart on one whole frame.

The steps are the engine's own calls, in its order, on a real frame (stream-of-water tiled to
the size); the last row times the engine's whole call on the same frame, and the steps' output
is checked to equal it bit for bit, so that the breakdown cannot drift from the engine. Medians
over ``--repeats`` after 5 warm-up rounds. ``--tiles``: the engine (``LumaUpscaler``) on whole
frames against cache tiles of each given side, same frames, same medians. ``--alternatives``: the
ways around the engine's slow steps that were measured and not taken (docs/PERFORMANCE.md, session 8),
each beside the step it would replace, same frame, same medians. ``--ceiling``: the machine's own
matmul throughput (a large int8 GEMM through oneDNN's int8 kernels, an fp32 ``torch.mm``) and
what each of the model's convolutions would take at it, beside the measured steps: a floor under
the frame time that no int8 scheme of this network beats on this CPU::

    python tools/int8_breakdown.py --model espcn --scale 3 --size 640x360 --threads 2 --json out.json
    python tools/int8_breakdown.py --tiles 64,128,192,256,320
    python tools/int8_breakdown.py --alternatives
    python tools/int8_breakdown.py --ceiling
    python tools/int8_breakdown.py --no-bypass      # scheme v4's file through v3's steps: the bypass's cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_backends import fps_of  # noqa: E402
from bench_int8 import _frames  # noqa: E402
from vsr.bench import machine_info  # noqa: E402
from vsr.engine._fused_bf16 import write_shuffled  # noqa: E402
from vsr.engine import LumaUpscaler  # noqa: E402
from vsr.engine._heap import keep_freed_heap  # noqa: E402
from vsr.engine._int8 import Int8CpuNet  # noqa: E402
from vsr.quantize import load_int8, output_step, quantized_weight, shipped_int8  # noqa: E402


def breakdown(net: Int8CpuNet, x: torch.Tensor, repeats: int) -> dict[str, float]:
    q = torch.ops.onednn.qconv2d_pointwise
    times: dict[str, list[float]] = {}

    def step(name: str, f: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        r = f()
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return r

    act = "relu" if net.kind == "relu" else "none"
    for _ in range(repeats + 5):
        coded, (w_last, b_last, pad_last, bounds), bypass = net._pack(255, list(x.shape))
        *coded, (w_f, s_f, b_f, pad_f, xzp_f, _) = list(coded)
        y = x
        for i, (w, ws, b, pad, xzp, ozp) in enumerate(coded):
            y = step(f"layer {i + 1}: int8 conv, uint8 codes out",
                     lambda: q(y, 1.0, xzp, w, ws, net._zeros(len(ws)), b, [1, 1], pad, [1, 1], 1, 1.0, ozp, None,
                               act, [], ""))
            if net._tables:
                codes = _hwc(y)
                what = "tanh residual" if bypass is not None else "tanh"
                step(f"{what} of layer {i + 1}'s codes (cv2.LUT, per-channel tables)",
                     lambda: cv2.LUT(codes, net._tables[i], dst=codes))
        n = len(coded) + 1
        y = step(f"layer {n}: int8 conv, fp32 out",
                 lambda: q(y, 1.0, xzp_f, w_f, s_f, net._zeros(len(s_f)), b_f, [1, 1], pad_f, [1, 1], 1, 1.0, 0,
                           torch.float32, "none" if bypass is not None else act, [], ""))
        if bypass is not None:
            xf = x.float()
            step("scheme v4's linear part: the ring's outside terms taken off", lambda: net._take_off_ring(y, xf, bypass))
            y = step("scheme v4's linear part: fp32 composite conv, add" + (" and relu" if net.kind == "relu" else "")
                     + " as its post-ops", lambda: net._add_composite(y, xf, bypass, net.kind == "relu"))
        if net.kind == "tanh":
            step("tanh in fp32 (as sigmoid(2z) - 1/2)", lambda: y.sigmoid_().sub_(0.5))
        out = step(f"layer {n + 1}: fp32 conv", lambda: torch.ops.mkldnn._convolution_pointwise(
            y, w_last, b_last, pad_last, [1, 1], [1, 1], 1, "hardtanh", bounds, ""))
        planes = step("periodic shuffle + integer copy", lambda: write_shuffled(out, net.scale, torch.uint8))
        whole = step("whole frame (Int8CpuNet)", lambda: net(x))
        if not torch.equal(planes, whole):
            raise SystemExit("int8_breakdown: the steps no longer compute what Int8CpuNet does; update them")
    return {k: statistics.median(v[5:]) for k, v in times.items()}


def tiles(model: object, frames: list[torch.Tensor], sides: list[int], repeats: int) -> dict[str, float]:
    """ms per frame of the int8 engine on whole frames (side 0) and in cache tiles of each side."""
    engine = LumaUpscaler(model, dtype=torch.bfloat16, int8=True)
    reference = engine(frames[0], 255)
    times: dict[int, list[float]] = {side: [] for side in [0, *sides]}
    for _ in range(repeats):
        for side in times:  # alternating, so that drift reaches every side alike
            engine.tile = side
            t0 = time.perf_counter()
            for x in frames:
                engine(x, 255)
            times[side].append((time.perf_counter() - t0) / len(frames) * 1000)
    engine.tile = 0
    if not torch.equal(engine(frames[0], 255), reference):  # pragma: no cover - tiles are exact by design
        raise SystemExit("int8_breakdown: tiled output differs from whole frames")
    return {("whole frame" if side == 0 else f"tiles of {side}"): statistics.median(v) for side, v in times.items()}


def _hwc(codes: torch.Tensor) -> Any:
    """uint8 codes in channels_last memory as the (N*h, w, C) array ``cv2.LUT`` takes: a view."""
    return codes.permute(0, 2, 3, 1).numpy().reshape(-1, codes.shape[3], codes.shape[1])


def _median_ms(f: Callable[[], Any], repeats: int) -> float:
    """Median ms of ``f`` over ``repeats`` calls after a warm-up (:func:`bench_backends.fps_of`)."""
    return 1000.0 / fps_of(f, repeats)


def alternatives(net: Int8CpuNet, frames: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """ms of each step the engine takes against the alternatives measured for it (tanh models)."""
    q, pw = torch.ops.onednn.qconv2d_pointwise, torch.ops.mkldnn._convolution_pointwise
    x = frames[0].contiguous(memory_format=torch.channels_last)
    (first, *_, last_hidden), (w_last, b_last, pad_last, bounds), _ = net._pack(255, list(x.shape))
    w1, ws1, b1, pad1, zp1, ozp1 = first
    wf, sf, bf, padf, zpf, _ = last_hidden
    table = net._tables[0]

    def layer1() -> torch.Tensor:  # the engine's layer 1 and its table pass
        codes = q(x, 1.0, zp1, w1, ws1, net._zeros(len(ws1)), b1, [1, 1], pad1, [1, 1], 1, 1.0, ozp1, None,
                  "none", [], "")
        cv2.LUT(_hwc(codes), table, dst=_hwc(codes))
        return codes

    codes = layer1()
    view = _hwc(codes)
    z = q(codes, 1.0, zpf, wf, sf, net._zeros(len(sf)), bf, [1, 1], padf, [1, 1], 1, 1.0, 0, torch.float32,
          "none", [], "")  # the last hidden layer's output (with the engine's 2 folded in)
    ms: dict[str, float] = {}
    # the last hidden layer's activation
    ms["tanh_ in fp32 (before session 8)"] = _median_ms(lambda: z.clone().tanh_(), repeats)
    ms["sigmoid_ in fp32 (the engine)"] = _median_ms(lambda: z.clone().sigmoid_(), repeats)
    ms["a copy of that tensor (in each of the two rows above)"] = _median_ms(lambda: z.clone(), repeats)
    # the last layer: fp32 (the engine) against bf16 weights and activations, output value - 128
    a = z.clone().sigmoid_().sub_(0.5)
    out32 = pw(a, w_last, b_last, pad_last, [1, 1], [1, 1], 1, "hardtanh", bounds, "")
    conv3 = net._model.convs()[-1]
    w16 = (conv3.weight.detach().float() * 255).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w16 = torch.ops.mkldnn._reorder_convolution_weight(w16, list(conv3.padding), [1, 1], [1, 1], 1, list(a.shape))
    b16 = conv3.bias.detach().float() * 255 + 0.5 - 128
    t16 = torch.tanh(z / 2).to(torch.bfloat16)  # the fp32 activation, not halved, in bf16

    def bf16() -> torch.Tensor:
        return pw(t16, w16, b16, list(conv3.padding), [1, 1], [1, 1], 1, "hardtanh", [-128.0, 127.49], "")

    ms["last layer, fp32 (the engine)"] = _median_ms(lambda: pw(a, w_last, b_last, pad_last, [1, 1], [1, 1], 1,
                                                                "hardtanh", bounds, ""), repeats)
    ms["last layer, bf16"] = _median_ms(bf16, repeats)
    diff = (bf16().float() + 128 - out32).abs()
    ms["  bf16 against fp32: mean |difference|, output levels"] = diff.mean().item()
    ms["  bf16 against fp32: max |difference|, output levels"] = diff.max().item()
    # layer 1 and its table
    ms["layer 1 conv + table (the engine)"] = _median_ms(layer1, repeats)
    ms["table alone, one call (cv2 runs it on one thread under 2^18 pixels)"] = _median_ms(
        lambda: cv2.LUT(view, table, dst=view), repeats)
    taller = view[torch.arange(410 * view.shape[0] // 360) % view.shape[0]].copy()  # just over 2^18 pixels
    ms[f"table alone, one call on {len(taller)} rows instead of {len(view)} (over 2^18 pixels)"] = _median_ms(
        lambda: cv2.LUT(taller, table, dst=taller), repeats)
    halves = [view[: len(view) // 2], view[len(view) // 2:]]
    with ThreadPoolExecutor(2) as pool:
        ms["table alone, two halves on two Python threads"] = _median_ms(
            lambda: list(pool.map(lambda h: cv2.LUT(h, table, dst=h), halves)), repeats)
    conv = net._model.convs()[0]
    wq, wsq = quantized_weight(conv.weight.detach() / 255)
    wsq2 = (wsq * 2).contiguous()
    wp = torch.ops.onednn.qconv_prepack(wq.contiguous(memory_format=torch.channels_last), wsq2, 1.0, 0, [1, 1],
                                        list(conv.padding), [1, 1], 1, None)
    b2 = (conv.bias.detach().float() * 2).contiguous()
    step = output_step("tanh", net._model.scales[0])
    gain, offset = (2 / step).reshape(1, -1, 1, 1), (128 - 1 / step).reshape(1, -1, 1, 1)

    def float_tanh() -> torch.Tensor:  # layer 1 in fp32, tanh of the exact pre-activation, coded in float passes
        y = q(x, 1.0, 0, wp, wsq2, net._zeros(len(wsq2)), b2, [1, 1], list(conv.padding), [1, 1], 1, 1.0, 0,
              torch.float32, "none", [], "")
        return y.sigmoid_().mul_(gain).add_(offset).round_().to(torch.uint8)

    ms["layer 1 in fp32 + tanh and coding in float passes"] = _median_ms(float_tanh, repeats)
    h, w = x.shape[2], x.shape[3]
    padded = torch.nn.functional.pad(frames[0][0, 0], (2, 2, 2, 2))  # 0 is the plane's zero point

    def im2col() -> torch.Tensor:  # the 5x5 neighbourhoods of the plane as 25 uint8 columns, one row a pixel
        return torch.stack([padded[dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)], -1).reshape(-1, 25)

    ms["im2col of the plane for layer 1 (25 uint8 columns)"] = _median_ms(im2col, repeats)
    cols = im2col()
    lin = torch.ops.onednn.qlinear_prepack(wq.reshape(64, 25).contiguous(), list(cols.shape))
    for attr in ("none", "tanh"):  # per-tensor output codes: timing only, not the shipped scheme's numbers
        ms[f"layer 1 as an int8 linear on those columns, post-op {attr}"] = _median_ms(
            lambda: torch.ops.onednn.qlinear_pointwise(cols, 1.0, 0, lin, wsq2, net._zeros(64), b2, 1 / 127.5,
                                                       128, None, attr, [], ""), repeats)
    # two frames a call (more pixels per table pass) against one, through the engine vsr runs
    engine = LumaUpscaler(net._model, dtype=torch.bfloat16, int8=True)
    pairs = [torch.cat(frames[i:i + 2]) for i in range(0, len(frames) - 1, 2)]
    ms["engine, one frame a call (ms a frame)"] = _median_ms(lambda: [engine(f, 255) for f in frames],
                                                            repeats) / len(frames)
    ms["engine, two frames a call (ms a frame)"] = _median_ms(lambda: [engine(f, 255) for f in pairs],
                                                             repeats) / (2 * len(pairs))
    return ms


_PEAK_SHAPES = ((8192, 1024, 1024, torch.float32), (8192, 1024, 1024, torch.uint8), (4096, 4096, 256, torch.float32),
                (4096, 4096, 256, torch.uint8))


def _peak_gmacs(repeats: int) -> dict[str, float]:
    """Billions of multiply-adds a second of large GEMMs in the engine's two precisions: int8 through oneDNN's
    quantised linear (uint8 x int8, int32 accumulation), the best of ``_PEAK_SHAPES`` (fp32 or uint8 out: on an
    AMD Zen 4 the 8192 x 1024 x 1024 GEMM with fp32 out alone ran below what the engine's layer 2 attains, so it
    was no peak), and fp32 through ``torch.mm`` (8192 x 1024 x 1024)."""
    g = torch.Generator().manual_seed(0)
    best = 0.0
    for m, k, n, out in _PEAK_SHAPES:
        x8 = torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=g)
        w8 = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
        packed = torch.ops.onednn.qlinear_prepack(w8, [m, k])
        ws, zeros, bias = torch.full((n,), 1e-4), torch.zeros(n, dtype=torch.int64), torch.zeros(n)
        scale, zero = (1.0, 0) if out == torch.float32 else (0.05, 128)
        ms = _median_ms(lambda: torch.ops.onednn.qlinear_pointwise(x8, 1.0, 0, packed, ws, zeros, bias, scale, zero, out,
                                                                   "none", [], ""), repeats)
        best = max(best, m * k * n / (ms * 1e6))
    m, k, n = 8192, 1024, 1024
    a = torch.randn(m, k, generator=g)
    b = torch.randn(k, n, generator=g)
    return {"int8": best, "fp32": m * k * n / (_median_ms(lambda: torch.mm(a, b), repeats) * 1e6)}


def ceiling(net: Int8CpuNet, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    """Each convolution's multiply-adds at the machine's GEMM peak for the precision the engine runs it in,
    beside the measured breakdown; the frame floor is those plus the measured non-convolution steps."""
    peaks = _peak_gmacs(max(5, repeats // 2))
    convs = net._model.convs()
    pixels = x.shape[2] * x.shape[3]
    measured = breakdown(net, x, repeats)
    conv_rows = [k for k in measured if k.startswith("layer ")]
    floor: dict[str, float] = {}
    for i, (conv, row) in enumerate(zip(convs, conv_rows)):
        precision = "fp32" if i == len(convs) - 1 else "int8"
        gmac = pixels * conv.weight.numel() / 1e9
        floor[f"{row} ({gmac:.3f} GMAC) at the {precision} peak"] = gmac / peaks[precision] * 1000
    other = {k: v for k, v in measured.items() if k not in conv_rows and not k.startswith("whole")}
    floor_ms = sum(floor.values()) + sum(other.values())
    return {"peak_gmacs": peaks, "measured_ms": measured, "conv_floor_ms": floor,
            "frame_floor_ms": floor_ms, "frame_floor_fps": 1000 / floor_ms,
            "frame_floor_without_other_steps_fps": 1000 / sum(floor.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--size", default="640x360")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tiles", metavar="SIDES", help="comma-separated LR tile sides to time against whole frames")
    p.add_argument("--alternatives", action="store_true",
                   help="time the alternatives to the engine's slow steps that were measured and not taken")
    p.add_argument("--ceiling", action="store_true",
                   help="the machine's GEMM peaks and the frame time the model's convolutions would take at them")
    p.add_argument("--no-bypass", action="store_true",
                   help="the same file through scheme v3's steps (no linear part): what the bypass costs in time")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    int8_file = shipped_int8(args.model, args.scale)
    if int8_file is None:
        sys.exit(f"int8_breakdown: no int8 file ships for {args.model} x{args.scale}")
    model = load_int8(int8_file)[0]
    if args.no_bypass:
        model = model.unbypassed()
    if args.tiles:
        sides = [int(v) for v in args.tiles.split(",")]
        for k, v in tiles(model, _frames(width, height, 10), sides, max(3, args.repeats // 5)).items():
            print(f"{v:7.2f} ms  {k}")
        return
    keep_freed_heap()  # as LumaUpscaler does for every CPU engine: frames do not page-fault their tensors back in
    net = Int8CpuNet(model)
    if args.alternatives:
        if net.kind != "tanh":
            sys.exit(f"int8_breakdown: --alternatives are for tanh models; {args.model} uses {net.kind}")
        repeats = max(5, args.repeats // 2)
        ms = alternatives(net, _frames(width, height, 4), repeats)
        for k, v in ms.items():
            print(f"{v:7.2f} {'' if k.startswith('  ') else 'ms'}  {k}")
        if args.json:
            _write_json(args, repeats, {"alternatives_ms": ms})
        return
    x = _frames(width, height, 1)[0].contiguous(memory_format=torch.channels_last)
    if args.ceiling:
        c = ceiling(net, x, args.repeats)
        for k, v in c["peak_gmacs"].items():
            print(f"{v:7.1f} GMAC/s  {k} GEMM peak")
        for k, v in c["measured_ms"].items():
            print(f"{v:7.2f} ms  measured: {k}")
        for k, v in c["conv_floor_ms"].items():
            print(f"{v:7.2f} ms  floor: {k}")
        print(f"{c['frame_floor_ms']:7.2f} ms  floor of a frame (convolutions at peak + the measured other steps): "
              f"{c['frame_floor_fps']:.1f} fps; convolutions alone at peak: {c['frame_floor_without_other_steps_fps']:.1f} fps")
        if args.json:
            _write_json(args, args.repeats, c)
        return
    ms = breakdown(net, x, args.repeats)
    steps = sum(v for k, v in ms.items() if not k.startswith("whole"))
    for k, v in ms.items():
        print(f"{v:7.2f} ms  {k}")
    print(f"{steps:7.2f} ms  sum of the steps")
    if args.json:
        _write_json(args, args.repeats, {"ms": ms, "sum_of_steps_ms": steps})


def _write_json(args: argparse.Namespace, repeats: int, figures: dict[str, Any]) -> None:
    Path(args.json).write_text(json.dumps({"machine": machine_info(), "model": args.model, "scale": args.scale,
                                           "size": args.size, "threads": args.threads, "repeats": repeats,
                                           **figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
