"""Run the synthesized lip-sync evaluation set and print a table per language and speech path.

    python benchmarks/evalset.py                       # held-out split, every path (minutes)
    python benchmarks/evalset.py --split tune --paths acoustic --json rows.json

The same as ``echomimic bench --quality``; see docs/quality.md for the set, the truth curve and
the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from echomimic.quality.evalset import LANGS, build_items, format_summary, run_items, summarize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("tune", "heldout"), default="heldout")
    ap.add_argument("--paths", default="acoustic,recognizer,auto",
                    help="comma-separated: acoustic, recognizer (English only), auto")
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--size", type=int, default=384, help="side of the face-cropped video")
    ap.add_argument("--json", help="write every item's figures to this file")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    items = build_items(a.split, langs=a.langs.split(","))
    log = None if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    rows = run_items(items, a.paths.split(","), log=log, size=a.size)
    summary = summarize(rows)
    print(format_summary(summary))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "items": rows}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
