"""Measure talking-portrait clips made from real portraits and speech, and print a table.

For each portrait x audio pair the script runs :func:`echomimic.animate` (face crop, 512 px by
default), renders the same motion again before encoding, and measures what the acceptance tests
measure:

* ``r`` / ``lag``: Pearson r between the inner-lip gap (over eye-corner distance, face mesh on
  the decoded frames) and the loudness envelope, at the best lag within +-2 frames (>= 0.5);
* ``p95``: 95th percentile of the lip gap while speaking (0.12 .. 0.45);
* ``closed``: share of frames inside pauses longer than 300 ms with a gap <= 0.02 (>= 95 %),
  with the number of such frames;
* ``id mean/max``: dlib descriptor distance between the photo and sampled frames (<= 0.4);
* ``bg``: largest difference from the photo outside the renderer's dilated mask, before
  encoding (must be 0), and ``out%`` the share of the frame outside that mask;
* ``blinks``: separate dips of the eye openness under 40 % of its median;
* ``x rt``: how many times faster than real time the whole ``animate`` call ran.

Inputs come from a media folder (``--media``, default ``$ECHOMIMIC_MEDIA`` or
``../shared/media`` next to the repository) with ``portraits/`` and ``audio/`` in it. When it is
absent, the astronaut photo from scikit-image and speech synthesized offline are used instead.

    python benchmarks/quality_check.py
    python benchmarks/quality_check.py --portrait c.png --portrait real_man.jpg --audio walden.wav
    python benchmarks/quality_check.py --json results.json --keep out/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MEDIA = Path(os.environ.get("ECHOMIMIC_MEDIA", REPO.parent / "shared" / "media"))
DEFAULT_AUDIO = ("echomimic_en.wav", "echomimic.wav")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

MIN_R, P95_RANGE, CLOSED_GAP, MIN_CLOSURE, MAX_ID = 0.5, (0.12, 0.45), 0.02, 0.95, 0.4
MAX_LAG, BLINK_DIP, SR, ID_SAMPLES = 2, 0.4, 16000, 8


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------


def media_inputs(media: Path, portraits: list[str], audio: list[str]) -> tuple[list[Path], list[Path]]:
    """Portrait and audio paths from the media folder (all portraits when none are named)."""
    pdir, adir = media / "portraits", media / "audio"
    if portraits:
        ps = [pdir / p for p in portraits]
    else:
        ps = sorted(p for p in pdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    aus = [adir / a for a in (audio or DEFAULT_AUDIO)]
    missing = [str(p) for p in ps + aus if not p.is_file()]
    if missing:
        raise SystemExit(f"not found: {', '.join(missing)}")
    return ps, aus


def synthetic_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """The astronaut photo and English/Mandarin speech with 0.6 s pauses, written to ``folder``."""
    import skimage.data
    from PIL import Image

    from echomimic.speech import synthesize, write_wav
    from echomimic.types import Audio

    photo = folder / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    phrases = {"en": ("Hello there, how are you today?", "I am fine, thank you very much.",
                      "Let us talk about the weather."),
               "zh": ("你好，今天天气很好。", "我们一起去公园散步吧。", "谢谢你的帮助。")}
    audios = []
    for lang, texts in phrases.items():
        parts, rate = [], 22050
        for k, text in enumerate(texts):
            a, _ = synthesize(text, lang=lang)
            rate = a.sample_rate
            if k:
                parts.append(np.zeros(int(0.6 * rate), np.float32))
            parts.append(a.samples)
        audios.append(write_wav(folder / f"speech_{lang}.wav",
                                Audio(samples=np.concatenate(parts), sample_rate=rate)))
    return [photo], audios


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------


def measure_pair(photo: Path, audio: Path, out: Path, *, size: int, fps: float,
                 identity_model) -> dict:
    """Make one clip and measure it; returns one row of figures."""
    from echomimic import animate
    from echomimic.media import load_audio
    from echomimic.pipeline import AnimateOptions, drive, load_portrait, load_speech
    from echomimic.quality import FaceMeasurer, iter_video_frames, metrics
    from echomimic.quality.evaluate import load_image
    from echomimic.render.warp.renderer import WarpRenderer
    from scipy import ndimage

    options = {"crop": "face", "size": size, "fps": fps}
    t = time.perf_counter()
    res = animate(photo, out, audio=audio, **options)
    wall = time.perf_counter() - t

    # frames before encoding, through the pipeline's stages
    opts = AnimateOptions.from_kwargs(**options)
    portrait = load_portrait(photo, opts)
    speech, _ = load_speech(audio=audio, opts=opts)
    n = max(1, int(round(speech.duration * opts.fps)))
    track = drive(speech=speech, motion=None, n_frames=n, opts=opts)
    renderer = WarpRenderer(portrait)
    outside = ~renderer.dilated_mask
    bg = 0
    for i in range(track.n_frames):
        d = metrics.background_diff(renderer.render(track.frame(i)), portrait.image, outside)
        bg = max(bg, d["max_abs"])

    # the decoded clip
    every = max(1, res.n_frames // ID_SAMPLES)
    kept = []

    def frames():
        for i, f in enumerate(iter_video_frames(out)):
            if i % every == 0:
                kept.append(f)
            yield f

    with FaceMeasurer() as m:
        tracks = m.measure_frames(frames())
    samples = load_audio(audio, sample_rate=SR, max_duration=None).samples
    nf = tracks.n_frames
    env = metrics.loudness_envelope(samples, SR, res.fps, nf)
    pauses = metrics.speech_pauses(samples, SR, res.fps, nf, min_pause=0.3)
    speaking = ~metrics.speech_pauses(samples, SR, res.fps, nf, min_pause=0.3, margin=0)
    r, lag = metrics.best_lag_correlation(tracks.lip_gap, env, MAX_LAG)
    _, _, p95 = metrics.opening_percentiles(tracks.lip_gap, speaking)
    closure = metrics.silence_closure(tracks.lip_gap, pauses, CLOSED_GAP)
    eyes = 0.5 * (tracks.eye_open_left + tracks.eye_open_right)
    med = float(np.nanmedian(eyes)) if np.isfinite(eyes).any() else float("nan")
    blinks = int(ndimage.label(np.nan_to_num(eyes, nan=med) < BLINK_DIP * med)[1]) \
        if math.isfinite(med) else 0
    id_mean = id_max = float("nan")
    if identity_model is not None:
        dist = identity_model.distances(load_image(photo), kept)
        ok = np.isfinite(dist)
        if ok.any():
            id_mean, id_max = float(dist[ok].mean()), float(dist[ok].max())
    return {
        "portrait": photo.name, "audio": audio.name, "method": res.speech_method,
        "frames": res.n_frames, "face_found": tracks.face_found_share,
        "r": r, "lag": int(lag), "p95": p95, "closure": closure, "pause_frames": int(pauses.sum()),
        "id_mean": id_mean, "id_max": id_max, "bg_max_abs": int(bg),
        "outside_share": float(outside.mean()), "blinks": blinks,
        "realtime": res.duration / wall if wall > 0 else float("nan"),
    }


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def _ok(value: float, good: bool) -> str:
    return "" if not math.isfinite(value) else ("" if good else " !")


def print_table(rows: list[dict]) -> None:
    """A table of the figures; values that miss an acceptance threshold are marked with '!'."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="echomimic quality check (face crop)")
    cols = ("portrait", "audio", "method", "frames", "face", "r (lag)", "p95", "closed (n)",
            "id mean/max", "bg", "out%", "blinks", "x rt")
    for c in cols:
        table.add_column(c, justify="left" if c in ("portrait", "audio", "method") else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["portrait"], row["audio"], f"[red]{row['error']}[/red]",
                          *[""] * (len(cols) - 3))
            continue
        r, p95, cl, idm = row["r"], row["p95"], row["closure"], row["id_max"]
        table.add_row(
            row["portrait"], row["audio"], row["method"], str(row["frames"]),
            f"{row['face_found']:.0%}",
            f"{r:.2f} ({row['lag']:+d}){_ok(r, r >= MIN_R)}",
            f"{p95:.3f}{_ok(p95, P95_RANGE[0] <= p95 <= P95_RANGE[1])}",
            f"{cl:.0%} ({row['pause_frames']}){_ok(cl, cl >= MIN_CLOSURE)}"
            if math.isfinite(cl) else f"- ({row['pause_frames']})",
            f"{row['id_mean']:.2f}/{idm:.2f}{_ok(idm, idm <= MAX_ID)}",
            f"{row['bg_max_abs']}{'' if row['bg_max_abs'] == 0 else ' !'}",
            f"{row['outside_share']:.0%}", str(row["blinks"]), f"{row['realtime']:.1f}",
        )
    Console(width=None if sys.stdout.isatty() else 180).print(table)
    print(f"thresholds: r >= {MIN_R} (lag within +-{MAX_LAG}), p95 in {P95_RANGE}, closed >= "
          f"{MIN_CLOSURE:.0%} of pause frames at gap <= {CLOSED_GAP}, identity <= {MAX_ID}, bg = 0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", type=Path, default=DEFAULT_MEDIA,
                    help="folder with portraits/ and audio/ (default: %(default)s)")
    ap.add_argument("--portrait", action="append", default=[],
                    help="portrait file name in portraits/ (repeatable; default: all)")
    ap.add_argument("--audio", action="append", default=[],
                    help=f"audio file name in audio/ (repeatable; default: {', '.join(DEFAULT_AUDIO)})")
    ap.add_argument("--size", type=int, default=512, help="face crop side (default: 512)")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate (default: 25)")
    ap.add_argument("--no-identity", action="store_true", help="skip the dlib identity figures")
    ap.add_argument("--keep", type=Path, help="keep the clips in this folder")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    from echomimic.errors import EchomimicError

    with tempfile.TemporaryDirectory(prefix="echomimic-qc-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("ECHOMIMIC_CACHE_DIR", str(tmp / "cache"))
        if (args.media / "portraits").is_dir() and (args.media / "audio").is_dir():
            photos, audios = media_inputs(args.media, args.portrait, args.audio)
        else:
            print(f"{args.media} not found: using the astronaut photo and synthesized speech",
                  file=sys.stderr)
            photos, audios = synthetic_inputs(tmp)
        out_dir = args.keep or tmp
        out_dir.mkdir(parents=True, exist_ok=True)
        id_model = None
        if not args.no_identity:
            from echomimic.quality import IdentityModel

            id_model = IdentityModel()
        rows = []
        for photo in photos:
            for audio in audios:
                out = out_dir / f"{photo.stem}__{audio.stem}.mp4"
                print(f"{photo.name} x {audio.name} ...", file=sys.stderr, flush=True)
                try:
                    rows.append(measure_pair(photo, audio, out, size=args.size, fps=args.fps,
                                             identity_model=id_model))
                except EchomimicError as exc:
                    rows.append({"portrait": photo.name, "audio": audio.name,
                                 "error": f"{exc.code}: {exc.message}"})
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
