#!/usr/bin/env python3
"""Train shipped-weight candidates: ``vsr train`` with the repo's data folders as defaults.

    python tools/train.py --model espcn --scale 3 --steps 60000 --out runs/espcn_x3

Without --data it trains on ../shared/data/train/{T91,BSD200} (the "291" set) and validates
on ../shared/data/benchmark/Set5.  All options: ``python tools/train.py --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from vsr.cli import train as train_cli  # noqa: E402
from vsr.errors import VsrError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--data" not in argv:
        argv += ["--data", str(SHARED / "train" / "T91"), "--data", str(SHARED / "train" / "BSD200")]
    if "--val" not in argv:
        argv += ["--val", str(SHARED / "benchmark" / "Set5")]
    parser = argparse.ArgumentParser(prog="tools/train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return train_cli.main(args)
    except VsrError as exc:
        print(f"tools/train.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
