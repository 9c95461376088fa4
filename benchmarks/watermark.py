#!/usr/bin/env python3
"""Cost of content safety per frame: the invisible watermark, the visible caption, and reading
the watermark back, in ms/frame at 512x512 and 1920x1080 (and any other size asked for).

Usage: python benchmarks/watermark.py [--sizes 512,1080p] [--frames 50] [--json]

Frames are the astronaut photo (scikit-image) at the size, with a moving patch so that
consecutive frames differ as a talking head's do. Each figure is measured over ``--frames``
calls after two warm-up calls: the median wall time (``*_ms``) and the CPU time of the process,
OpenCV's threads included (``*_cpu_ms``, the steadier figure on a busy machine). In the
pipeline the watermark runs on the encoder thread while the next frame is rendered. Robustness figures (the
detection score after H.264 at CRF 20, after a re-encode at CRF 28, and at half size) are
printed too, from a 2-second clip of these frames.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time


def _size(text: str) -> tuple[int, int]:
    text = text.strip().lower()
    if text.endswith("p"):
        h = int(text[:-1])
        return h, int(round(h * 16 / 9)) // 2 * 2
    n = int(text)
    return n, n


def _frames(h: int, w: int, n: int):
    import cv2
    import numpy as np
    import skimage.data

    base = cv2.resize(np.ascontiguousarray(skimage.data.astronaut()), (w, h),
                      interpolation=cv2.INTER_AREA if w <= 512 else cv2.INTER_CUBIC)
    out = []
    for i in range(n):
        f = base.copy()
        y0, x0 = h // 4, w // 3
        f[y0:y0 + h // 6, x0:x0 + w // 6] = np.roll(base[y0:y0 + h // 6, x0:x0 + w // 6],
                                                    2 * i, axis=1)
        out.append(f)
    return out


def _median_ms(fn, items) -> tuple[float, float]:
    """Median wall time and mean CPU time of this process (all threads) per call, in ms."""
    for x in items[:2]:
        fn(x)
    times = []
    cpu = time.process_time()
    for x in items:
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), (time.process_time() - cpu) * 1000 / len(items)


def _robustness(frames, folder: str) -> dict[str, float]:
    import av
    import cv2

    from echomimic.media import VideoWriter
    from echomimic.safety import detect

    def enc(fr, name, crf):
        h, w = fr[0].shape[:2]
        path = os.path.join(folder, name)
        with VideoWriter(path, w, h, 25, crf=crf) as wr:
            for f in fr:
                wr.write(f)
        with av.open(path) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    crf20 = enc(frames, "a.mp4", 20)
    crf28 = enc(crf20, "b.mp4", 28)
    half = enc([cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA)
                for f in crf20], "c.mp4", 28)
    return {"z_crf20": detect(crf20).score, "z_crf28": detect(crf28).score,
            "z_half_crf28": detect(half).score}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1080p", help="N (N x N) or Np (16:9, N high)")
    ap.add_argument("--frames", type=int, default=50, help="frames timed per figure")
    ap.add_argument("--no-robustness", action="store_true", help="skip the encode round trips")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import cv2
    import numpy as np

    from echomimic.safety import VisibleLabel, Watermarker, detect

    rows = []
    for text in args.sizes.split(","):
        h, w = _size(text)
        frames = _frames(h, w, args.frames)
        mark = Watermarker(h, w)
        label = VisibleLabel("AI-generated", h, w)
        row = {"size": f"{w}x{h}", "working_square": mark.side}
        for name, fn, items in (("watermark", mark, frames), ("label", label, frames),
                                ("detect", lambda f: detect([f]),
                                 frames[: max(3, args.frames // 5)])):
            row[f"{name}_ms"], row[f"{name}_cpu_ms"] = _median_ms(fn, items)
        marked = [mark(f) for f in frames]
        d = np.stack(marked[:5]).astype(np.float64) - np.stack(frames[:5])
        row["psnr_db"] = float(10 * np.log10(255.0 ** 2 / np.mean(d ** 2)))
        row["max_abs_change"] = int(np.abs(d).max())
        if not args.no_robustness:
            with tempfile.TemporaryDirectory() as folder:
                row.update(_robustness(marked, folder))
        rows.append(row)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "opencv_threads": cv2.getNumThreads(), "python": platform.python_version()}
    if args.json:
        print(json.dumps({"machine": machine, "sizes": rows}, indent=2))
        return 0
    keys = ["size", "working_square", "watermark_ms", "watermark_cpu_ms", "label_ms",
            "label_cpu_ms", "detect_ms", "detect_cpu_ms", "psnr_db", "max_abs_change",
            "z_crf20", "z_crf28", "z_half_crf28"]
    for row in rows:
        print("  ".join(f"{k}={row[k]:.2f}" if isinstance(row.get(k), float)
                        else f"{k}={row.get(k, '-')}" for k in keys))
    print(f"machine: {machine}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
