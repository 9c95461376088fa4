"""Video driving, measured: self-reenactment, mixed driving and cross-identity contact sheets.

**Self-reenactment** (``--self``, default): the first frame of a driving video is the portrait and
the whole video drives it (``video_track`` -> the pipeline's ``drive`` -> the warp renderer). The
output frames are measured with the same face mesh as the driver's, and the script reports:

* ``r mouth``: Pearson r of the inner-lip gap (over eye distance), output vs driver;
* ``r eyes``: r of the eye opening (mean of both eyes);
* ``r yaw``, ``r pitch``, ``r roll``: r of the head angles;
* ``gain yaw`` / ``gain pitch``: slope of output vs driver angle (1 = the same amplitude);
* ``NME``: mean landmark error after aligning each output frame's 478 points to the driver's
  (similarity transform, least squares), in % of the outer eye-corner distance; ``NME mouth``
  the same over the lip points only.

Head pose is absolute (``relative=False``) so the portrait, which is the driver's first frame,
should reproduce the driver's pose; the relative mode gives the same correlations.

**Mixed driving** (``--mixed``): a video drives the head, eyes and brows and an audio file the
lips. Reported: r of the output's lip gap with the audio's loudness envelope (best lag within
+-2 frames) and with the driver's own lip gap; the margin between the two (>= 0.3 wanted); and r
of yaw, pitch and eye opening with the driver's (>= 0.8 wanted).

**Cross-identity** (``--cross DIR``): the video drives every portrait of ``portraits/`` and a
contact sheet of each result is written to DIR.

Frames are measured as rendered (before H.264), so encoding does not blur the figures.
Inputs come from a media folder (``--media``, default ``$ECHOMIMIC_MEDIA`` or ``../shared/media``
next to the repository) with ``video/`` (and ``audio/``, ``portraits/``). When it is absent the
script says so and exits.

    python benchmarks/reenact.py                       # self-reenactment of every video
    python benchmarks/reenact.py --mixed --audio echomimic_en.wav
    python benchmarks/reenact.py --cross out/sheets
    python benchmarks/reenact.py --json reenact.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from echomimic.errors import EchomimicError  # noqa: E402


def _media_dir(arg: str | None) -> Path | None:
    for cand in (arg, os.environ.get("ECHOMIMIC_MEDIA"), str(REPO.parent / "shared" / "media")):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def _r(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _gain(out: np.ndarray, drv: np.ndarray) -> float:
    ok = np.isfinite(out) & np.isfinite(drv)
    if ok.sum() < 3 or np.std(drv[ok]) < 1e-9:
        return float("nan")
    return float(np.polyfit(drv[ok], out[ok], 1)[0])


def _nme(out_lm: np.ndarray, drv_lm: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Mean point error after a least-squares similarity alignment, in % of the eye distance."""
    errs = []
    for o, d in zip(out_lm, drv_lm):
        if not (np.isfinite(o).all() and np.isfinite(d).all()):
            continue
        import cv2

        m, _ = cv2.estimateAffinePartial2D(o[:, :2].astype(np.float32), d[:, :2].astype(np.float32),
                                           method=cv2.LMEDS)
        if m is None:
            continue
        al = o[:, :2] @ m[:, :2].T + m[:, 2]
        e = float(np.linalg.norm(d[263, :2] - d[33, :2]))
        sel = slice(None) if idx is None else idx
        errs.append(np.linalg.norm(al[sel] - d[sel, :2], axis=1).mean() / e)
    return 100.0 * float(np.mean(errs)) if errs else float("nan")


def _portrait_from_frame(frame: np.ndarray):
    from echomimic.pipeline import AnimateOptions, load_portrait

    opts = AnimateOptions()
    return load_portrait((frame, hashlib.sha256(frame.tobytes()).hexdigest()), opts), opts


def _render(portrait, track) -> list[np.ndarray]:
    from echomimic.render import get_renderer

    if not portrait.image.flags.writeable:       # a cached photo is read-only
        import dataclasses

        portrait = dataclasses.replace(portrait, image=portrait.image.copy())
    r = get_renderer("warp")(portrait)
    chans = track.channels
    return [r.render(dict(zip(chans, row.tolist()))) for row in track.values]


def _eyes(t) -> np.ndarray:
    return 0.5 * (t.eye_open_left + t.eye_open_right)


def self_reenact(video: Path, *, relative: bool = False, sheet: Path | None = None) -> dict:
    """Drive the video's first frame with the video itself; correlations and landmark error."""
    from echomimic.media import iter_video_frames
    from echomimic.motion.video import video_track
    from echomimic.pipeline import drive
    from echomimic.quality import measure_frames

    frames = list(iter_video_frames(str(video)))
    t0 = time.perf_counter()
    portrait, opts = _portrait_from_frame(frames[0])
    from echomimic.media.video import probe_video

    fps = float(probe_video(str(video))["fps"]) or 25.0
    opts.fps = fps
    t1 = time.perf_counter()
    vt = video_track(frames, fps=fps, source_fps=fps, relative=relative, portrait=portrait)
    t_motion = time.perf_counter() - t1
    track = drive(speech=None, motion=vt, n_frames=len(frames), opts=opts)
    t2 = time.perf_counter()
    out = _render(portrait, track)
    t_render = time.perf_counter() - t2
    drv = measure_frames(frames, fps=fps)
    res = measure_frames(out, fps=fps)
    if sheet is not None:
        _sheet(sheet, frames, out)
    from echomimic.render.warp.rig import LOWER_INNER, LOWER_OUTER, UPPER_INNER, UPPER_OUTER

    lips = np.array(sorted(set(UPPER_INNER + LOWER_INNER + UPPER_OUTER + LOWER_OUTER)))
    return {
        "video": video.name, "frames": len(frames), "fps": fps,
        "r_mouth": _r(res.lip_gap, drv.lip_gap), "r_eyes": _r(_eyes(res), _eyes(drv)),
        "r_yaw": _r(res.yaw, drv.yaw), "r_pitch": _r(res.pitch, drv.pitch),
        "r_roll": _r(res.roll, drv.roll),
        "gain_mouth": _gain(res.lip_gap, drv.lip_gap), "gain_yaw": _gain(res.yaw, drv.yaw),
        "gain_pitch": _gain(res.pitch, drv.pitch), "gain_roll": _gain(res.roll, drv.roll),
        "nme": _nme(res.landmarks, drv.landmarks),
        "nme_mouth": _nme(res.landmarks, drv.landmarks, lips),
        "driver_yaw_range": [float(np.nanmin(drv.yaw)), float(np.nanmax(drv.yaw))],
        "motion_ms_per_frame": 1000 * t_motion / len(frames),
        "render_ms_per_frame": 1000 * t_render / len(frames),
        "setup_s": t1 - t0,
    }


def mixed(video: Path, audio: Path, *, sheet: Path | None = None) -> dict:
    """Lips from ``audio``, the rest from ``video``; how each output track follows its source."""
    from echomimic.media import iter_video_frames, probe_video
    from echomimic.motion.video import loop_positions, video_track
    from echomimic.pipeline import AnimateOptions, drive, load_speech
    from echomimic.quality import measure_frames
    from echomimic.quality.evaluate import ANALYSIS_RATE, load_audio
    from echomimic.quality.metrics import best_lag_correlation, loudness_envelope

    frames = list(iter_video_frames(str(video)))
    src_fps = float(probe_video(str(video))["fps"]) or 25.0
    portrait, opts = _portrait_from_frame(frames[0])
    opts = AnimateOptions(fps=25.0)
    speech, _ = load_speech(audio=str(audio), opts=opts)
    n = max(1, int(round(speech.duration * opts.fps)))
    vt = video_track(frames, fps=opts.fps, n_frames=n, source_fps=src_fps, portrait=portrait)
    track = drive(speech=speech, motion=vt, n_frames=n, opts=opts)
    out = _render(portrait, track)
    res = measure_frames(out, fps=opts.fps)
    drv_all = measure_frames(frames, fps=src_fps)
    # the driver's figures on the output's timeline (same positions the track used)
    pos = np.round(loop_positions(n, opts.fps, len(frames), src_fps, "pingpong")).astype(int)
    pos = np.minimum(pos, len(frames) - 1)
    drv = {k: v[pos] for k, v in drv_all.as_dict().items()}
    drv_eyes = 0.5 * (drv["eye_open_left"] + drv["eye_open_right"])
    samples, _ = load_audio(str(audio))
    env = loudness_envelope(samples, ANALYSIS_RATE, opts.fps, n)
    r_audio, lag = best_lag_correlation(res.lip_gap, env, 2)
    r_video, _ = best_lag_correlation(res.lip_gap, drv["lip_gap"], 2)
    if sheet is not None:
        _sheet(sheet, [frames[p] for p in pos], out)
    return {
        "video": video.name, "audio": audio.name, "frames": n,
        "r_mouth_audio": float(r_audio), "lag": int(lag), "r_mouth_video": float(r_video),
        "margin": float(r_audio - r_video),
        "r_yaw": _r(res.yaw, drv["yaw"]), "r_pitch": _r(res.pitch, drv["pitch"]),
        "r_eyes": _r(_eyes(res), drv_eyes),
    }


def cross(video: Path, portraits: list[Path], out_dir: Path, seconds: float) -> list[dict]:
    """Drive each portrait with the video; a contact sheet per portrait."""
    from echomimic.media import contact_sheet, save_png
    from echomimic.motion.video import video_track
    from echomimic.pipeline import AnimateOptions, drive, load_portrait
    from echomimic.quality import measure_frames

    out_dir.mkdir(parents=True, exist_ok=True)
    opts = AnimateOptions(fps=25.0)
    n = int(round(seconds * opts.fps))
    vt = video_track(str(video), fps=opts.fps, n_frames=n)
    track = drive(speech=None, motion=vt, n_frames=n, opts=opts)
    rows = []
    for p in portraits:
        t = time.perf_counter()
        try:
            portrait = load_portrait(str(p), opts)
            frames = _render(portrait, track)
        except EchomimicError as exc:
            rows.append({"portrait": p.name, "error": str(exc)})
            continue
        pick = np.linspace(0, n - 1, 12).round().astype(int)
        res = measure_frames([frames[i] for i in range(0, n, 2)], fps=opts.fps / 2)
        save_png(out_dir / f"{p.stem}.png",
                 contact_sheet([frames[i] for i in pick], cols=6,
                               labels=[f"{i / opts.fps:.1f}s" for i in pick]))
        drv_gap = vt.get("jawOpen")[::2]
        rows.append({"portrait": p.name, "size": list(portrait.size),
                     "face_found": res.face_found_share,
                     "r_jaw_gap": _r(res.lip_gap, drv_gap.astype(float)),
                     "seconds": time.perf_counter() - t})
    return rows


def _join_audio(paths: list[Path], tmp: Path) -> Path:
    """One file: the audio files one after the other with 0.5 s of silence between them."""
    if len(paths) == 1:
        return paths[0]
    import wave

    from echomimic.media import load_audio

    parts = []
    for p in paths:
        parts += [load_audio(str(p), sample_rate=16000).samples, np.zeros(8000, np.float32)]
    pcm = (np.clip(np.concatenate(parts[:-1]), -1, 1) * 32767).astype("<i2")
    out = tmp / ("+".join(p.stem for p in paths) + ".wav")
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return out


def _sheet(path: Path, drv: list[np.ndarray], out: list[np.ndarray]) -> None:
    from echomimic.media import contact_sheet, save_png

    pick = np.linspace(0, len(out) - 1, 6).round().astype(int)
    tiles = [drv[i] for i in pick] + [out[i] for i in pick]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, contact_sheet(tiles, cols=6))


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", help="media folder (video/, audio/, portraits/)")
    ap.add_argument("--video", action="append", help="video name in video/ (default: all)")
    ap.add_argument("--mixed", action="store_true", help="run the mixed-driving check")
    ap.add_argument("--audio", default="echomimic_en.wav+walden.wav",
                    help="audio name(s) in audio/ for --mixed; 'a.wav+b.wav' joins them with "
                         "0.5 s of silence (the default covers most of a 12 s video)")
    ap.add_argument("--cross", metavar="DIR", help="cross-identity contact sheets into DIR")
    ap.add_argument("--seconds", type=float, default=12.0, help="length of the cross-identity clips")
    ap.add_argument("--relative", action="store_true", help="relative head pose for self-reenactment")
    ap.add_argument("--sheets", metavar="DIR", help="driver/output contact sheets into DIR")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    a = ap.parse_args(argv)
    media = _media_dir(a.media)
    if media is None:
        print("no media folder (give --media or set ECHOMIMIC_MEDIA); nothing to measure")
        return 0
    videos = [media / "video" / v for v in a.video] if a.video else sorted((media / "video").glob("*.mp4"))
    results: dict = {}
    sheets = Path(a.sheets) if a.sheets else None
    if not a.mixed and not a.cross:
        rows = [self_reenact(v, relative=a.relative,
                             sheet=sheets / f"self_{v.stem}.png" if sheets else None) for v in videos]
        results["self"] = rows
        keys = ["video", "frames", "r_mouth", "r_eyes", "r_yaw", "r_pitch", "r_roll", "gain_yaw",
                "gain_pitch", "nme", "nme_mouth"]
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for r in rows:
            print("| " + " | ".join(_fmt(r[k]) for k in keys) + " |")
    if a.mixed:
        with tempfile.TemporaryDirectory() as tmp:
            audio = _join_audio([media / "audio" / x for x in a.audio.split("+")], Path(tmp))
            rows = [mixed(v, audio, sheet=sheets / f"mixed_{v.stem}.png" if sheets else None)
                    for v in videos]
        results["mixed"] = rows
        keys = ["video", "audio", "frames", "r_mouth_audio", "lag", "r_mouth_video", "margin",
                "r_yaw", "r_pitch", "r_eyes"]
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for r in rows:
            print("| " + " | ".join(_fmt(r[k]) for k in keys) + " |")
    if a.cross:
        ports = sorted(p for p in (media / "portraits").iterdir() if p.is_file())
        rows = cross(videos[0], ports, Path(a.cross), a.seconds)
        results["cross"] = rows
        for r in rows:
            print(json.dumps(r))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
