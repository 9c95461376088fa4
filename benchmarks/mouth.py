"""The mouth picture, measured: mouth-crop SSIM and dark share of video-driven self-reenactment.

For each talking video of the development media, the first frame is the portrait and the whole
video drives it exactly as ``echomimic animate FRAME0 --video VIDEO`` does (head pose relative to
the video's first pose, the default; ``--absolute`` for absolute angles); the rendered frames
(before encoding) are compared with the real ones by :func:`echomimic.quality.mouth_figures`:

* ``ssim`` / ``still``: mean SSIM of 96x96 grey mouth crops on the real mouth, generated vs real
  and the real first frame vs real (the "nothing moves" baseline), over the frames where the real
  mouth is open (inner-lip gap 13-14 > 0.06 eye distances); ``margin`` = ssim - still;
* ``dark`` / ``dark real``: share of pixels with grey < 30 inside the inner lips, generated and
  real, and their ratio;
* ``lip_err``: mean distance of the generated inner-lip points from the real ones on those frames
  (no alignment: the crop is placed on the real mouth, so this is what the SSIM sees), in % of the
  eye distance; ``lip_shape_err`` the same after removing the mean offset (the shape alone);
  ``nose_err``: distance of the nose (head placement); ``gap_ratio``: median of generated over
  real inner-lip gap (13-14) on those frames.

Phone clips (1080x1920, ``phone_*.mp4``) are cropped to a fixed square around the face of their
first frame (side 5 eye distances, native resolution, the same square for every frame) before
anything else, so the face is large and the renderer works at a 1024-class face crop.

``--half second`` renders only the second half of each video, from its own first frame (the set-up
where a persona enrolled from the first half is tested). ``--persona FILE`` passes a persona to
the renderer; it needs a pipeline with a ``persona`` option and says so when there is none.

    python benchmarks/mouth.py                                 # a.mp4, b.mp4, phone_*.mp4
    python benchmarks/mouth.py --video a.mp4 --sheets out/mouth
    python benchmarks/mouth.py --half second --persona a.persona --video a.mp4
    python benchmarks/mouth.py --json mouth.json

Inputs come from a media folder (``--media``, default ``$ECHOMIMIC_MEDIA`` or ``../shared/media``
next to the repository). When it is absent the script says so and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: default videos of the development media
VIDEOS = ("a.mp4", "b.mp4", "phone_1.mp4", "phone_2.mp4", "phone_3.mp4")
#: side of the fixed face square cut from phone clips, in eye distances of their first frame
PHONE_CROP = 5.0

NOSE = [1, 4, 5, 195, 197]
INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]


def _media_dir(arg: str | None) -> Path | None:
    for cand in (arg, os.environ.get("ECHOMIMIC_MEDIA"), str(REPO.parent / "shared" / "media")):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def _read(video: Path, seconds: float | None) -> tuple[list[np.ndarray], float]:
    from echomimic.media import iter_video_frames, probe_video

    fps = float(probe_video(str(video))["fps"]) or 25.0
    n_max = int(round(seconds * fps)) if seconds else None
    frames = []
    for f in iter_video_frames(str(video)):
        frames.append(f)
        if n_max and len(frames) >= n_max:
            break
    return frames, fps


def face_square(frames: list[np.ndarray]) -> tuple[int, int, int]:
    """``(x0, y0, side)``: a square of ``PHONE_CROP`` eye distances around the first frame's face,
    inside the frame."""
    from echomimic.quality import measure_image

    tr = measure_image(frames[0])
    lm = tr.landmarks[0]
    if not np.isfinite(lm).all():
        raise SystemExit("no face in the first frame")
    h, w = frames[0].shape[:2]
    side = int(min(w, h, round(PHONE_CROP * float(tr.eye_dist[0]))))
    side -= side % 2
    c = lm[:, :2].mean(0)
    x0 = int(np.clip(round(c[0] - side / 2), 0, w - side))
    y0 = int(np.clip(round(c[1] - side / 2), 0, h - side))
    return x0, y0, side


def renderer_options(persona: str | None) -> dict:
    """Keyword arguments for the warp renderer: the persona, when one is given and this
    echomimic knows the option."""
    if persona is None:
        return {}
    from echomimic.render import get_renderer

    params = inspect.signature(get_renderer("warp").__init__).parameters
    if "persona" not in params:
        raise SystemExit("error: --persona: this echomimic has no persona option "
                         "(the warp renderer takes none)")
    if not Path(persona).is_file():
        raise SystemExit(f"error: --persona: no such file: {persona}")
    from echomimic.persona import load_persona

    return {"persona": load_persona(persona)}


def reenact(frames: list[np.ndarray], fps: float, render_kw: dict, relative: bool = True
            ) -> tuple[list[np.ndarray], float]:
    """Self-reenactment: ``frames[0]`` is the portrait, all frames drive it. Returns the frames
    as rendered (before encoding) and the render time per frame (ms)."""
    from echomimic.motion.video import video_track
    from echomimic.pipeline import AnimateOptions, drive, load_portrait
    from echomimic.render import get_renderer

    opts = AnimateOptions(fps=fps)
    portrait = load_portrait((frames[0], hashlib.sha256(frames[0].tobytes()).hexdigest()), opts)
    if not portrait.image.flags.writeable:
        portrait = dataclasses.replace(portrait, image=portrait.image.copy())
    vt = video_track(frames, fps=fps, source_fps=fps, relative=relative, portrait=portrait)
    track = drive(speech=None, motion=vt, n_frames=len(frames), opts=opts)
    r = get_renderer("warp")(portrait, **render_kw)
    chans = track.channels
    t = time.perf_counter()
    out = [r.render(dict(zip(chans, row.tolist()))) for row in track.values]
    return out, 1000 * (time.perf_counter() - t) / len(out)


def geometry(gen_lm: np.ndarray, real_lm: np.ndarray, open_: np.ndarray) -> dict:
    """How far the generated inner lips are from the real ones on the open frames."""
    err, shape_err, nose, ratio = [], [], [], []
    for i in np.flatnonzero(open_):
        g, r = gen_lm[i, :, :2], real_lm[i, :, :2]
        if not (np.isfinite(g).all() and np.isfinite(r).all()):
            continue
        e = float(np.linalg.norm(r[263] - r[33]))
        d = g[INNER] - r[INNER]
        err.append(np.linalg.norm(d, axis=1).mean() / e)
        shape_err.append(np.linalg.norm(d - d.mean(0), axis=1).mean() / e)
        nose.append(np.linalg.norm(g[NOSE].mean(0) - r[NOSE].mean(0)) / e)
        ratio.append(np.linalg.norm(g[13] - g[14]) / max(np.linalg.norm(r[13] - r[14]), 1e-6))
    nan = float("nan")
    return {"lip_err": 100 * float(np.mean(err)) if err else nan,
            "lip_shape_err": 100 * float(np.mean(shape_err)) if err else nan,
            "nose_err": 100 * float(np.mean(nose)) if nose else nan,
            "gap_ratio": float(np.median(ratio)) if ratio else nan}


def sheet(path: Path, crops: list, label: str) -> None:
    """Rows: real, generated, still; one column per open frame; crops at 2x."""
    import cv2

    from echomimic.media import save_png

    if not crops:
        return
    s = 2
    tiles = []
    for row in (1, 2, 3):
        tiles.append(np.concatenate([cv2.resize(c[row], None, fx=s, fy=s,
                                                interpolation=cv2.INTER_NEAREST) for c in crops], 1))
    img = np.concatenate(tiles, 0)
    img = np.repeat(img[..., None], 3, axis=2)
    bar = np.full((18, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, f"{label}  rows: real / generated / still", (4, 13),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, np.concatenate([bar, img], 0))


def run_video(video: Path, *, half: str | None, seconds: float | None, render_kw: dict,
              sheets: Path | None, tag: str, relative: bool = True) -> dict:
    from echomimic.quality import measure_frames, mouth_figures
    from echomimic.quality.mouth import mouth_open

    frames, fps = _read(video, seconds)
    crop = None
    if video.name.startswith("phone_"):
        x0, y0, side = crop = face_square(frames)
        frames = [np.ascontiguousarray(f[y0:y0 + side, x0:x0 + side]) for f in frames]
    if half == "second":
        frames = frames[len(frames) // 2:]
    out, ms = reenact(frames, fps, render_kw, relative)
    real = measure_frames(frames, static_image_mode=True, fps=fps)
    gen = measure_frames(out, static_image_mode=True, fps=fps)
    fig = mouth_figures(out, frames, gen.landmarks, real.landmarks, keep_crops=6)
    crops = fig.pop("crops")
    fig.update(geometry(gen.landmarks, real.landmarks, mouth_open(real.landmarks)))
    if sheets is not None:
        sheet(sheets / f"mouth_{video.stem}{tag}.png", crops,
              f"{video.name}{tag} ssim {fig['mouth_ssim']:.2f} still {fig['mouth_ssim_still']:.2f}")
    return {"video": video.name, "frames": len(frames), "size": frames[0].shape[0],
            "crop": list(crop) if crop else None, "render_ms": ms, **fig}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", help="media folder (with video/)")
    ap.add_argument("--video", action="append", help=f"video name in video/ (default: {', '.join(VIDEOS)})")
    ap.add_argument("--half", choices=["second"], help="render only the second half, from its own first frame")
    ap.add_argument("--seconds", type=float, default=None,
                    help="use only the first seconds of each video (before --half)")
    ap.add_argument("--persona", metavar="FILE", help="render with this persona (needs the persona option)")
    ap.add_argument("--sheets", metavar="DIR", help="write mouth contact sheets (real / generated / still) into DIR")
    ap.add_argument("--absolute", action="store_true",
                    help="absolute head pose (the portrait takes the driver's angles) instead of "
                         "the default relative pose (relative to the video's first pose)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    a = ap.parse_args(argv)
    render_kw = renderer_options(a.persona)
    media = _media_dir(a.media)
    if media is None:
        print("no media folder (give --media or set ECHOMIMIC_MEDIA); nothing to measure")
        return 0
    names = a.video or [v for v in VIDEOS if (media / "video" / v).is_file()]
    tag = ("_half2" if a.half else "") + ("_persona" if a.persona else "")
    rows = []
    keys = ["video", "frames", "size", "mouth_frames", "mouth_ssim", "mouth_ssim_still", "margin",
            "mouth_dark_share", "mouth_dark_share_reference", "dark_ratio", "lip_err", "lip_shape_err", "nose_err", "gap_ratio",
            "render_ms"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for name in names:
        r = run_video(media / "video" / name, half=a.half, seconds=a.seconds, render_kw=render_kw,
                      sheets=Path(a.sheets) if a.sheets else None, tag=tag,
                      relative=not a.absolute)
        r["margin"] = r["mouth_ssim"] - r["mouth_ssim_still"]
        dr = r["mouth_dark_share_reference"]
        r["dark_ratio"] = r["mouth_dark_share"] / dr if dr else float("nan")
        rows.append(r)
        print("| " + " | ".join(_fmt(r[k]) for k in keys) + " |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
