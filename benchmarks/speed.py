#!/usr/bin/env python3
"""Speed benchmark: ms/frame per pipeline stage and the real-time factor.

Usage: python benchmarks/speed.py [--seconds 10] [--sizes 512,1080p] [--json] [--out FILE.json]

The same figures as ``echomimic bench``; ``--out`` also saves them as JSON (with the machine's
description) so runs on different machines or versions can be compared.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from echomimic.bench import format_table, parse_sizes, run_bench
    from echomimic.cli import native_stderr_silenced
    from echomimic.errors import EchomimicError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the timed speech")
    ap.add_argument("--sizes", default="512,1080p", help="N (face crop) or Np (16:9 frame)")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--out", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    try:
        with native_stderr_silenced():
            report = run_bench(seconds=args.seconds, sizes=parse_sizes(args.sizes),
                               fps=args.fps, log=lambda msg: print(msg, file=sys.stderr))
    except EchomimicError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    data = report.to_dict()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        Console().print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
