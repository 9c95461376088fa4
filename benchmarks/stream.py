"""Live sessions: first-frame latency, audio-to-mouth offset, A/V drift, dropped frames,
concurrent sessions, mouth-closed delay and interrupt latency (``echomimic.stream.bench``).

    python benchmarks/stream.py [--minutes 10] [--size 512] [--json]

The same as ``echomimic bench --stream``. Everything runs in this process on synthesized speech
and scikit-image's astronaut photo; nothing touches the network. See docs/streaming.md for the
method of each figure, and record the machine's load with any figure you compare (the report
includes the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import sys

from echomimic.stream.bench import format_stream_report, run_stream_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="length of the drift session")
    ap.add_argument("--size", type=int, default=512, help="side of the face crop")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    report = run_stream_bench(minutes=args.minutes, size=args.size, fps=args.fps,
                              max_sessions=args.max_sessions,
                              log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(report, indent=2) if args.json else format_stream_report(report))


if __name__ == "__main__":
    main()
