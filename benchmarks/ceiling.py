#!/usr/bin/env python3
"""The pipeline's speed ceiling: whole jobs with the rendering taken out.

    python benchmarks/ceiling.py                       # 512, 1080p and half-body 768, 60 s each
    python benchmarks/ceiling.py --sizes 512 --runs 3

Each case runs the same job twice, alternating, ``--runs`` times: once as it is (``real``), once
with the warp renderer replaced by a replay of 100 frames it rendered before the timed job
(``replay``: the frames cycle, so the encoder sees real, moving frames; rendering costs a copy).
Everything else — loading, speech analysis in blocks, watermark, colour conversion, x264, AAC,
muxing — is unchanged. The replay's wall time is what the rest of the pipeline allows on this
machine however fast the renderer became, and its CPU time per frame what that rest costs.

The recording is that of ``echomimic bench --real`` (the media folder's recordings joined to
``--seconds``, synthesized speech without it). The half-body case uses
``../shared/media/portraits/halfbody_0014.png`` and is skipped without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEDIA = Path(os.environ.get("ECHOMIMIC_MEDIA") or
             Path(__file__).resolve().parents[1].parent / "shared" / "media")
HALFBODY = MEDIA / "portraits" / "halfbody_0014.png"
REPLAYED = 100


def _cases(sizes: list[str]):
    from echomimic.bench import make_frame, make_halfbody_frame

    for size in sizes:
        if size == "halfbody768":
            if not HALFBODY.is_file():
                print(f"halfbody768: skipped ({HALFBODY} not found)", file=sys.stderr)
                continue
            yield size, make_halfbody_frame(HALFBODY)
        else:
            yield size, make_frame(size)


class _Replay:
    """Patches the warp renderer: ``record`` keeps the first frames it renders, ``replay``
    copies them in turn instead of rendering."""

    def __init__(self) -> None:
        from echomimic.render.warp.renderer import WarpRenderer

        self.cls = WarpRenderer
        self.original = WarpRenderer.render_into
        self.frames: list[np.ndarray] = []
        self.i = 0

    def record(self) -> None:
        self.frames, original = [], self.original

        def render_into(renderer, m, frame):
            original(renderer, m, frame)
            if len(self.frames) < REPLAYED:
                self.frames.append(frame.copy())
            return frame
        self.cls.render_into = render_into

    def replay(self) -> None:
        self.i = 0

        def render_into(renderer, m, frame):
            np.copyto(frame, self.frames[self.i % len(self.frames)])
            self.i += 1
            return frame
        self.cls.render_into = render_into

    def restore(self) -> None:
        self.cls.render_into = self.original


def main(argv: list[str] | None = None) -> int:
    from echomimic import animate
    from echomimic.bench import make_recording, make_speech
    from echomimic.cli import native_stderr_silenced

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1080p,halfbody768",
                    help="N (face crop), Np (16:9 frame) or halfbody768")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=2, help="timed pairs per case")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="echomimic-ceiling-") as tmp, native_stderr_silenced():
        work = Path(tmp)
        recording, source = make_recording(args.seconds, work / "recording.wav",
                                           MEDIA if MEDIA.is_dir() else None)
        print(f"recording: {source}", file=sys.stderr)
        warm = make_speech(REPLAYED / args.fps + 0.5, work / "warm.wav")
        patch = _Replay()
        try:
            for size, (frame, opts) in _cases([s for s in args.sizes.split(",") if s]):
                from PIL import Image

                photo = work / f"{size}.png"
                Image.fromarray(frame).save(photo)
                patch.record()                 # warms up, and keeps frames to replay
                animate(photo, work / "warm.mp4", audio=warm, fps=args.fps, **opts)
                patch.restore()
                got: dict[str, list[dict]] = {"real": [], "replay": []}
                for _ in range(int(args.runs)):
                    for mode in ("real", "replay"):
                        if mode == "replay":
                            patch.replay()
                        t, c = time.perf_counter(), time.process_time()
                        res = animate(photo, work / "out.mp4", audio=recording, fps=args.fps,
                                      **opts)
                        wall, cpu = time.perf_counter() - t, time.process_time() - c
                        patch.restore()
                        got[mode].append({"wall_s": wall, "rtf": res.duration / wall,
                                          "cpu_ms_per_frame": 1e3 * cpu / res.n_frames,
                                          "render_s": res.timings["render"]})
                        print(f"{size} {mode}: {wall:.2f} s wall ({res.duration / wall:.2f}x), "
                              f"{1e3 * cpu / res.n_frames:.1f} ms CPU per frame", file=sys.stderr)
                rows[size] = got
        finally:
            patch.restore()
    print(f"{'case':<12} {'real-time factor, real':>24} {'replay':>14} "
          f"{'CPU ms/frame, real':>20} {'replay':>8}")
    for size, got in rows.items():
        def med(mode: str, key: str) -> float:
            return statistics.median(r[key] for r in got[mode])

        def span(mode: str) -> str:
            v = sorted(r["rtf"] for r in got[mode])
            return f"{v[0]:.2f}-{v[-1]:.2f}" if len(v) > 1 else f"{v[0]:.2f}"
        print(f"{size:<12} {span('real'):>24} {span('replay'):>14} "
              f"{med('real', 'cpu_ms_per_frame'):>20.1f} {med('replay', 'cpu_ms_per_frame'):>8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": args.seconds, "fps": args.fps,
                                         "recording": source, "cases": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
