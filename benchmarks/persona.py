"""Persona, measured: enroll from the first half of a real video, re-enact the second half.

For every video (``--videos``, default the two development videos and the three phone clips):

1. ``enroll`` a persona from the first half (``start=0``, ``end=half``);
2. the second half is written to an mp4 and its first frame to a PNG: the portrait;
3. the second half drives that portrait (video-driven self-reenactment) twice: with the
   photo-only mouth interior and with the persona;
4. both outputs are compared with the real second half by the mouth-crop figures of
   ``echomimic evaluate --reference``: ``mouth_ssim`` (mean SSIM of 96x96 grey crops around the
   real mouth over the frames where the real inner-lip gap exceeds 0.06 of the eye distance),
   ``mouth_ssim_still`` (the same crops of the real first frame: the "nothing moves" baseline),
   ``mouth_dark_share`` (share of grey < 30 pixels inside the inner lips). When the installed
   ``echomimic.quality`` does not have them yet, the same definitions are computed here.
5. a contact sheet of six open-mouth frames: real / photo-only / persona mouth crops.

``--speed`` times the warp renderer at 512x512 with and without a persona (ms per frame, the
mouth opening and closing), on the astronaut photo.

    python benchmarks/persona.py --out /tmp/persona            # every video
    python benchmarks/persona.py --videos a,b --out /tmp/p --json persona.json
    python benchmarks/persona.py --speed

Inputs come from a media folder (``--media``, default ``$ECHOMIMIC_MEDIA`` or ``../shared/media``
next to the repository) with ``video/``. When it is absent the script says so and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_VIDEOS = ("a", "b", "phone_1", "phone_2", "phone_3")
CROP = 96
GAP_MIN = 0.06
INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]


def _media(arg: str | None) -> Path | None:
    for p in (arg, os.environ.get("ECHOMIMIC_MEDIA"), HERE.parent.parent / "shared" / "media",
              HERE.parent / ".." / "shared" / "media"):
        if p and (Path(p) / "video").is_dir():
            return Path(p)
    return None


def _split(path: Path, out: Path, reverse: bool = False) -> tuple[Path, Path, tuple[float, float],
                                                                   float]:
    """The re-enacted half as an mp4 (near-lossless) and its first frame as a PNG; (mp4, png,
    (start, end) seconds of the enrollment half, fps). ``reverse``: enroll from the second half,
    re-enact the first."""
    from echomimic.media import Mp4Writer, save_png
    from echomimic.media.video import iter_video_frames, probe_video

    info = probe_video(path)
    fps = float(info["fps"])
    frames = list(iter_video_frames(path))
    k = len(frames) // 2
    part = frames[:k] if reverse else frames[k:]
    tag = "first" if reverse else "second"
    second = out / f"{path.stem}_{tag}.mp4"
    first = out / f"{path.stem}_{tag}_first.png"
    h, w = frames[0].shape[:2]
    with Mp4Writer(second, w, h, fps, crf=10, preset="veryfast") as wr:
        for f in part:
            wr.write(f)
    save_png(first, part[0])
    span = (k / fps, len(frames) / fps) if reverse else (0.0, k / fps)
    return second, first, span, fps


def _crop(grey: np.ndarray, lm: np.ndarray) -> np.ndarray:
    c = 0.5 * (lm[61, :2] + lm[291, :2])
    side = 1.6 * float(np.linalg.norm(lm[61, :2] - lm[291, :2]))
    half = side / 2
    M = np.array([[CROP / side, 0, -(c[0] - half) * CROP / side],
                  [0, CROP / side, -(c[1] - half) * CROP / side]], np.float32)
    return cv2.warpAffine(grey, M, (CROP, CROP), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _rgb_crop(rgb: np.ndarray, lm: np.ndarray, size: int = 160) -> np.ndarray:
    c = 0.5 * (lm[61, :2] + lm[291, :2])
    side = 1.6 * float(np.linalg.norm(lm[61, :2] - lm[291, :2]))
    half = side / 2
    M = np.array([[size / side, 0, -(c[0] - half) * size / side],
                  [0, size / side, -(c[1] - half) * size / side]], np.float32)
    return cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _dark(grey: np.ndarray, lm: np.ndarray) -> float:
    m = np.zeros(grey.shape, np.uint8)
    cv2.fillPoly(m, [np.round(lm[INNER, :2]).astype(np.int32)], 1)
    if m.sum() == 0:
        return float("nan")
    return float((grey[m > 0] < 30).mean())


def mouth_figures(generated: dict[str, Path], reference: Path) -> tuple[dict, dict]:
    """Mouth-crop figures of each generated video against ``reference`` (same frames), and
    six open-mouth frames of each for a contact sheet."""
    from skimage.metrics import structural_similarity as ssim

    from echomimic.media.video import iter_video_frames
    from echomimic.quality.measure import FaceMeasurer

    gens = {k: iter_video_frames(p) for k, p in generated.items()}
    first_grey = None
    ss = {k: [] for k in generated}
    still, dark_real = [], []
    dark_gen = {k: [] for k in generated}
    crops: list[tuple[float, dict]] = []
    with FaceMeasurer() as meter:
        for i, real in enumerate(iter_video_frames(reference)):
            outs = {k: next(g, None) for k, g in gens.items()}
            grey = cv2.cvtColor(real, cv2.COLOR_RGB2GRAY)
            if first_grey is None:
                first_grey = grey
            lm = meter.landmarks(real)
            if lm is None or any(o is None for o in outs.values()):
                continue
            e = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
            gap = float(np.linalg.norm(lm[13, :2] - lm[14, :2])) / e
            if gap <= GAP_MIN:
                continue
            rc = _crop(grey, lm)
            still.append(ssim(rc, _crop(first_grey, lm), data_range=255))
            dark_real.append(_dark(grey, lm))
            row = {"real": _rgb_crop(real, lm)}
            for k, o in outs.items():
                og = cv2.cvtColor(o, cv2.COLOR_RGB2GRAY)
                ss[k].append(ssim(rc, _crop(og, lm), data_range=255))
                dark_gen[k].append(_dark(og, lm))
                row[k] = _rgb_crop(o, lm)
            crops.append((gap, row))
    res = {"frames": len(still), "mouth_ssim_still": float(np.mean(still)) if still else None,
           "mouth_dark_share_real": float(np.nanmean(dark_real)) if dark_real else None}
    for k in generated:
        res[f"mouth_ssim_{k}"] = float(np.mean(ss[k])) if ss[k] else None
        res[f"mouth_dark_share_{k}"] = float(np.nanmean(dark_gen[k])) if dark_gen[k] else None
    # six open frames spread over the clip, the widest of each sixth
    sheet = {}
    if crops:
        parts = np.array_split(np.arange(len(crops)), 6)
        picks = [int(p[np.argmax([crops[j][0] for j in p])]) for p in parts if len(p)]
        sheet = {k: [crops[j][1][k] for j in picks] for k in crops[0][1]}
    return res, sheet


def _sheet(sheet: dict, path: Path, labels: list[str]) -> None:
    from echomimic.media import save_png

    rows = []
    for k in labels:
        row = np.concatenate(sheet[k], axis=1)
        cv2.putText(row, k, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        rows.append(row)
    save_png(path, np.concatenate(rows, axis=0))


def run_video(name: str, media: Path, out: Path, reverse: bool = False) -> dict:
    import echomimic
    from echomimic.persona import enroll, save_persona

    src = media / "video" / f"{name}.mp4"
    second, first, (start, end), fps = _split(src, out, reverse)
    t = time.perf_counter()
    persona = enroll(src, start=start, end=end)
    t_enroll = time.perf_counter() - t
    tag = f"{name}_rev" if reverse else name
    pfile = save_persona(persona, out / f"{tag}.persona")
    outs = {}
    timings = {}
    for label, per in (("plain", None), ("persona", pfile)):
        o = out / f"{tag}_{label}.mp4"
        r = echomimic.animate(first, o, video=second, persona=per, crf=12, fps=fps)
        outs[label] = o
        timings[label] = r.timings["render"] / max(1, r.n_frames) * 1000
    res, sheet = mouth_figures(outs, second)
    if sheet:
        _sheet(sheet, out / f"{tag}_mouths.png", ["real", "plain", "persona"])
    res.update({"video": tag, "enroll_s": t_enroll, "atlas_entries": persona.n_entries,
                "persona_bytes": pfile.stat().st_size, "enrolled_s": [start, end],
                "render_ms_per_frame_plain": timings["plain"],
                "render_ms_per_frame_persona": timings["persona"]})
    return res


def speed(n: int = 200, size: int = 512) -> dict:
    """ms per frame of the warp renderer at ``size``², with and without a persona."""
    from skimage import data

    from echomimic.analysis import analyze_face, prepare_portrait
    from echomimic.persona.atlas import ATLAS_SIZE
    from echomimic.render.warp import WarpRenderer
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
    jaw = 0.5 * (1 - np.cos(np.linspace(0, 12 * np.pi, n)))
    out = {}
    for label, per in (("plain", None), ("persona", persona)):
        r = WarpRenderer(portrait, persona=per)
        frame = portrait.image.copy()
        for j in jaw[:10]:
            r.render_into({"jawOpen": float(j)}, frame)
        best = []
        for rep in range(3):
            t = time.perf_counter()
            for j in jaw:
                r.render_into({"jawOpen": float(j)}, frame)
            best.append((time.perf_counter() - t) / n * 1000)
        out[f"ms_per_frame_{label}"] = min(best)
    out["persona_cost_ms"] = out["ms_per_frame_persona"] - out["ms_per_frame_plain"]
    out["size"] = size
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media")
    ap.add_argument("--videos", default=",".join(DEFAULT_VIDEOS))
    ap.add_argument("--out", default="persona_bench")
    ap.add_argument("--json")
    ap.add_argument("--speed", action="store_true", help="only time the renderer")
    ap.add_argument("--reverse", action="store_true",
                    help="enroll from the second half and re-enact the first")
    a = ap.parse_args(argv)
    if a.speed:
        res = speed()
        print(json.dumps(res, indent=1))
        return 0
    media = _media(a.media)
    if media is None:
        print("no media folder (--media or $ECHOMIMIC_MEDIA with video/): nothing to measure")
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"{'video':10} {'frames':>6} {'still':>6} {'plain':>6} {'persona':>7} {'gain':>6} "
          f"{'dark real':>9} {'plain':>6} {'persona':>7} {'entries':>7} {'enroll s':>8}")
    for name in [v.strip() for v in a.videos.split(",") if v.strip()]:
        if not (media / "video" / f"{name}.mp4").exists():
            print(f"{name}: not in {media / 'video'}, skipped")
            continue
        r = run_video(name, media, out, reverse=a.reverse)
        results.append(r)
        f = lambda x: "   -  " if x is None else f"{x:6.3f}"  # noqa: E731
        gain = (None if r["mouth_ssim_persona"] is None or r["mouth_ssim_still"] is None
                else r["mouth_ssim_persona"] - r["mouth_ssim_still"])
        print(f"{r['video']:10} {r['frames']:6d} {f(r['mouth_ssim_still'])} {f(r['mouth_ssim_plain'])} "
              f"{f(r['mouth_ssim_persona']):>7} {f(gain)} {f(r['mouth_dark_share_real']):>9} "
              f"{f(r['mouth_dark_share_plain'])} {f(r['mouth_dark_share_persona']):>7} "
              f"{r['atlas_entries']:7d} {r['enroll_s']:8.1f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
