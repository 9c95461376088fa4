"""Persona, measured: enroll from the first half of a real video, re-enact the second half.

For every video (``--videos``, default the two development videos and the three phone clips):

1. ``enroll`` a persona from the first half of the video (``start=0``, ``end=half``), timed;
2. the second half is re-enacted from its own first frame (video-driven self-reenactment, as
   ``benchmarks/mouth.py --half second``), once with the photo-only mouth and once with the
   persona, and compared with the real second half by :func:`echomimic.quality.mouth_figures`:
   ``mouth_ssim``, ``mouth_ssim_still`` (the "nothing moves" baseline), ``margin`` (the
   difference: the issue asks +0.08 with a persona), the dark shares;
3. contact sheets (real / generated / still, six open-mouth frames) of both renders go to
   ``--out``.

``--reverse`` enrolls from the second half and re-enacts the first instead (a.mp4's second half
barely opens its mouth, so it has few frames to measure).

``--speed`` times the warp renderer at 512x512 with no interior, the photo-only interior and a
persona (ms per frame, the mouth opening and closing, CPU time of one thread, best of three), on
the astronaut photo.

    python benchmarks/persona.py --out /tmp/persona              # every video
    python benchmarks/persona.py --videos a.mp4,b.mp4 --json persona.json
    python benchmarks/persona.py --speed

Inputs come from a media folder (``--media``, default ``$ECHOMIMIC_MEDIA`` or ``../shared/media``
next to the repository) with ``video/``. When it is absent the script says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import mouth  # noqa: E402  (benchmarks/mouth.py: the mouth-crop measurement)

DEFAULT_VIDEOS = mouth.VIDEOS


def run_video(name: str, media: Path, out: Path, reverse: bool = False) -> list[dict]:
    """Enroll from one half, re-enact the other with and without the persona."""
    from echomimic.media.video import probe_video
    from echomimic.persona import enroll, save_persona

    src = media / "video" / name
    info = probe_video(src)
    fps = float(info["fps"]) or 25.0
    n = int(info["n_frames"])
    half = (n // 2) / fps
    span = (half, n / fps) if reverse else (0.0, half)
    t = time.perf_counter()
    persona = enroll(src, start=span[0], end=span[1])
    t_enroll = time.perf_counter() - t
    tag = Path(name).stem + ("_rev" if reverse else "")
    pfile = save_persona(persona, out / f"{tag}.persona")
    rows = []
    for label, kw in (("plain", {}), ("persona", {"persona": persona})):
        r = mouth.run_video(src, half=None if reverse else "second",
                            seconds=half if reverse else None, render_kw=kw, sheets=out,
                            tag=("_half1" if reverse else "_half2") + ("_persona" if kw else ""))
        r.update({"video": tag, "with": label, "margin": r["mouth_ssim"] - r["mouth_ssim_still"],
                  "enroll_s": t_enroll, "atlas_entries": persona.n_entries,
                  "persona_bytes": pfile.stat().st_size, "enrolled_s": list(span)})
        rows.append(r)
    return rows


def speed(n: int = 100, size: int = 512, persona_file: str | None = None) -> dict:
    """ms per frame of the warp renderer at ``size``², with and without a persona (a persona
    file, or a made-up one of 18 entries), and with no interior at all (the mouth left as the
    warp leaves it: what the interior costs). CPU time of this thread with one OpenCV thread,
    interleaved, best of three: the machine this runs on is usually shared, and wall time there
    measures the neighbours."""
    import cv2
    from skimage import data

    from echomimic.analysis import analyze_face, prepare_portrait
    from echomimic.persona.atlas import ATLAS_SIZE
    from echomimic.render.warp import WarpRenderer
    from echomimic.render.warp.features import MouthInterior
    from echomimic.render.warp.rig import LOWER_INNER, UPPER_INNER
    from echomimic.types import Persona

    rgb = data.astronaut()
    fa = analyze_face(rgb)
    portrait = prepare_portrait(rgb, fa, crop="face", size=size)
    rng = np.random.default_rng(0)
    W, H = ATLAS_SIZE
    k = 18
    persona = Persona(
        atlas=rng.integers(0, 255, (k, H, W, 3), dtype=np.uint8),
        atlas_opening=np.linspace(0.03, 0.5, k).astype(np.float32),
        atlas_shape=np.tile([0.95, 1.1], k // 2).astype(np.float32),
        atlas_lip=np.full((k, 3), 150, np.float32), atlas_sharpness=np.ones(k, np.float32),
        opening={"p5": 0.0, "p50": 0.1, "p95": 0.3, "max": 0.4}, blink_rate=17.0,
        head_motion={"yaw_std": 2.0, "pitch_std": 2.0, "roll_std": 1.0})
    if persona_file:
        from echomimic.persona import load_persona

        persona = load_persona(persona_file)

    class NoInterior:
        def paint(self, *args, **kwargs) -> None:
            pass

    none = WarpRenderer(portrait)
    none.mouth = NoInterior()
    jaw = 0.5 * (1 - np.cos(np.linspace(0, 12 * np.pi, n)))
    renderers = {"none": none, "plain": WarpRenderer(portrait),
                 "persona": WarpRenderer(portrait, persona=persona)}
    frame = portrait.image.copy()
    best = {k: float("inf") for k in renderers}
    paint = {k: float("inf") for k in renderers}
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for rep in range(3):
            for label, r in renderers.items():
                t = time.thread_time()
                for j in jaw:
                    r.render_into({"jawOpen": float(j)}, frame)
                best[label] = min(best[label], (time.thread_time() - t) / n * 1000)
                # the mouth painting alone, on the frames' own lip contours
                roi = r.render_roi({"jawOpen": 0.0})
                d = r._positions({"jawOpen": 0.6})
                up, lo = d[UPPER_INNER], d[LOWER_INNER]
                kw = {}
                if isinstance(r.mouth, MouthInterior):
                    kw = {"teeth_line": r._teeth_line({"jawOpen": 0.6}), "motion": {"jawOpen": 0.6}}
                t = time.thread_time()
                for _ in range(n):
                    r.mouth.paint(roi, up, lo, **kw)
                paint[label] = min(paint[label], (time.thread_time() - t) / n * 1000)
    finally:
        cv2.setNumThreads(threads)
    out = {f"ms_per_frame_{k}": v for k, v in best.items()}
    out.update({f"ms_paint_{k}": v for k, v in paint.items()})
    out["interior_cost_ms"] = out["ms_per_frame_plain"] - out["ms_per_frame_none"]
    out["persona_cost_ms"] = out["ms_per_frame_persona"] - out["ms_per_frame_none"]
    out["size"] = size
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media")
    ap.add_argument("--videos", default=",".join(DEFAULT_VIDEOS))
    ap.add_argument("--out", default="persona_bench", help="folder of personas and sheets")
    ap.add_argument("--json")
    ap.add_argument("--speed", action="store_true", help="only time the renderer")
    ap.add_argument("--persona", help="with --speed: time this persona file")
    ap.add_argument("--reverse", action="store_true",
                    help="enroll from the second half and re-enact the first")
    a = ap.parse_args(argv)
    if a.speed:
        print(json.dumps(speed(persona_file=a.persona), indent=1))
        return 0
    media = mouth._media_dir(a.media)
    if media is None:
        print("no media folder (--media or $ECHOMIMIC_MEDIA with video/): nothing to measure")
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["video", "with", "mouth_frames", "mouth_ssim", "mouth_ssim_still", "margin",
            "mouth_dark_share", "mouth_dark_share_reference", "atlas_entries", "enroll_s",
            "render_ms"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    results = []
    for name in [v.strip() for v in a.videos.split(",") if v.strip()]:
        if not name.endswith(".mp4"):
            name += ".mp4"
        if not (media / "video" / name).exists():
            print(f"{name}: not in {media / 'video'}, skipped")
            continue
        for r in run_video(name, media, out, reverse=a.reverse):
            results.append(r)
            print("| " + " | ".join(mouth._fmt(r[k]) for k in keys) + " |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
