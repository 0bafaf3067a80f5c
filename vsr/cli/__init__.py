"""The ``vsr`` command: a thin layer over the public API.

Each sub-command lives in its own module with ``add_parser(subparsers)`` and
``main(args) -> int``. Errors vsr raises on purpose print one line and exit 1;
``--debug`` shows the traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import traceback
from typing import Sequence

from .._version import __version__
from ..errors import VsrError

# (sub-command, module, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "run", "upscale video files, folders or a stdin stream (decode, ESPCN, encode, streaming)"),
    ("live", "live", "live preview: a camera, file or URL upscaled on the fly beside bicubic"),
    ("eval", "eval", "measure PSNR/SSIM on an image set under the published protocol"),
    ("train", "train", "train ESPCN weights from image folders"),
    ("bench", "bench", "measure speed: each stage alone, the pipeline, the bound and the peers"),
    ("export", "export", "export a model to ONNX (FFmpeg, OpenCV dnn, ONNX Runtime) or an mpv GLSL shader"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but with a hint
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vsr", description="Real-time video super-resolution with ESPCN.")
    parser.add_argument("--version", action="version", version=f"vsr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in COMMANDS:
        mod = importlib.import_module(f".{module}", __name__)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (clean stop, no partial output) but exiting 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (it may be replaced after setup)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    """Notes go to stderr (never stdout, which may carry video), as 'vsr: note: ...'."""
    logger = logging.getLogger("vsr")
    if not any(getattr(h, "_vsr_cli", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("vsr: note: %(message)s"))
        handler._vsr_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(bool(getattr(args, "quiet", False)))
    previous = None
    if threading_is_main():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args._main(args) or 0)
    except _Terminated:
        print("vsr: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("vsr: interrupted", file=sys.stderr)
        return 130
    except VsrError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"vsr: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"vsr: internal error: {type(exc).__name__}: {first} (rerun with --debug "
              "and report it)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
