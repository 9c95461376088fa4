"""Enrollment: a :class:`~echomimic.types.Persona` from a short video of the person talking.

1. **Measure.** Every frame goes through the project's face measurement
   (:class:`echomimic.quality.measure.FaceMeasurer`, the face mesh used by video driving and
   evaluation); the figures of :func:`echomimic.motion.video.measure_landmarks` give head pose,
   eye opening and the good frames.
2. **Mouth atlas.** In each good, roughly frontal frame the interior between the inner lips is
   resampled into the canonical mouth frame (:mod:`echomimic.persona.atlas`) and indexed by its
   opening (inner gap / inner width) and shape (inner width / the person's rest width). The
   frames are binned on a grid of openings x shapes and each bin keeps its sharpest frame
   (variance of the Laplacian, less for a turned head). Each entry keeps the colour of the lips
   around it so it can be re-coloured for another photo.
3. **Articulation and style.** Opening percentiles; blinks per minute (eye opening under half of
   the open level); the spread of yaw, pitch and roll.
4. **Speech fit.** When the video has sound, the lip-sync track that the speech alone would give
   is compared with the video's own mouth (both as ``jawOpen``): a least-squares gain and offset,
   and their correlation ``r`` (near 0 when the sound is not the speaker's voice: then the fit
   is not used).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import cv2
import numpy as np

from ..errors import EchomimicError, NoFaceFound, PersonaError
from ..types import Persona
from .atlas import (ATLAS_SIZE, inner_contours, lip_colour, mouth_figures, to_canonical,
                    trim_lip_band)

__all__ = ["enroll", "MIN_SECONDS", "OPENING_BINS", "SHAPE_BINS"]

ProgressFn = Callable[[str, float], None]

#: shortest video (seconds of the part used) that enrollment accepts
MIN_SECONDS = 5.0
#: bin edges of the atlas: opening (inner gap / inner width) and shape (width / rest width)
OPENING_BINS = (0.03, 0.06, 0.10, 0.15, 0.21, 0.28, 0.36, 0.46, 0.60, 1.5)
SHAPE_BINS = (0.0, 0.92, 1.04, 3.0)
#: frames turned further than this (degrees) do not go into the atlas
MAX_YAW, MAX_PITCH = 25.0, 20.0
#: blink-rate prior: a typical rate (per minute), weighted as this many seconds of video
PRIOR_BLINKS_PER_MIN, PRIOR_SECONDS = 17.0, 20.0
#: most frames measured (a minute at 25 fps); longer videos are cut
MAX_FRAMES = 1500


def _sharpness(rgb: np.ndarray) -> float:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


def _blink_rate(open_: np.ndarray, good: np.ndarray, fps: float) -> float | None:
    """Blinks per minute from the per-frame eye opening (NaN where no face)."""
    ok = good & np.isfinite(open_)
    if ok.sum() < fps * 2:
        return None
    level = float(np.percentile(open_[ok], 90))
    if level <= 0:
        return None
    shut = ok & (open_ < 0.5 * level)
    starts = np.flatnonzero(shut[1:] & ~shut[:-1]) + 1
    if shut[0]:
        starts = np.concatenate([[0], starts])
    count, last = 0, -1e9
    for s in starts:
        if s - last >= 0.25 * fps:
            count += 1
            last = s
    # a short clip says little: the count is pooled with PRIOR_SECONDS of a typical rate
    seconds = ok.sum() / fps
    rate = (count + PRIOR_BLINKS_PER_MIN * PRIOR_SECONDS / 60.0) / ((seconds + PRIOR_SECONDS) / 60.0)
    return float(np.clip(rate, 0.0, 60.0))


def _speech_fit(video: Any, start: float, end: float, real_jaw: np.ndarray, good: np.ndarray,
                fps: float) -> dict[str, float] | None:
    """Gain/offset of the video's own jawOpen against the lip-sync jawOpen of its sound."""
    from ..media import load_audio
    from ..motion import lipsync_track
    from ..speech import analyze_speech
    from ..types import Audio

    try:
        audio = load_audio(video, sample_rate=16000, max_duration=None)
    except EchomimicError:
        return None
    a0 = int(round(start * audio.sample_rate))
    a1 = int(round(end * audio.sample_rate))
    part = Audio(samples=audio.samples[a0:a1], sample_rate=audio.sample_rate, source=audio.source)
    n = len(real_jaw)
    if part.duration < 1.0 or n < 10:
        return None
    speech = analyze_speech(part)
    ours = lipsync_track(speech, n, fps)
    ch = list(ours.channels)
    if "jawOpen" not in ch:
        return None
    jo = ours.values[:, ch.index("jawOpen")].astype(np.float64)
    ok = good & np.isfinite(real_jaw)
    if ok.sum() < 10 or float(np.std(jo[ok])) < 1e-4:
        return None
    x, y = jo[ok], real_jaw[ok]
    gain, offset = np.polyfit(x, y, 1)
    r = float(np.corrcoef(x, y)[0, 1]) if float(np.std(y)) > 1e-6 else 0.0
    return {"gain": float(gain), "offset": float(offset), "r": r if math.isfinite(r) else 0.0,
            "frames": float(ok.sum())}


def enroll(video: Any, *, start: float = 0.0, end: float | None = None,
           speech_fit: bool = True, progress: ProgressFn | None = None) -> Persona:
    """Learn a persona from a video of the person talking (at least :data:`MIN_SECONDS`).

    Args:
        video: a video path or bytes (any format FFmpeg reads; phone clips are typical).
        start, end: the part of the video to use, in seconds (default: all of it, at most
            :data:`MAX_FRAMES` frames).
        speech_fit: fit the speech-to-mouth mapping when the video has sound.
        progress: ``progress("enroll", fraction)``.

    Raises:
        PersonaError: the video (part) is shorter than 5 s, or the mouth never opens.
        NoFaceFound: no usable face in the video.
        VideoError: the video cannot be read.
    """
    from ..media.video import iter_video_frames, probe_video
    from ..motion.video import measure_landmarks, retarget
    from ..quality.measure import N_LANDMARKS, FaceMeasurer

    info = probe_video(video)
    fps = float(info["fps"]) or 25.0
    if start < 0 or (end is not None and end <= start):
        raise PersonaError(f"enrollment needs 0 <= start < end, got start={start:g}, end={end}")
    first = int(round(start * fps))
    last = int(round(end * fps)) if end is not None else None
    total = info.get("n_frames") or 0
    want = (last if last is not None else total) - first if (last or total) else None
    if want is not None and want > 0:
        dur = want / fps
        if dur < MIN_SECONDS - 0.5 / fps:
            raise PersonaError(f"the video is {dur:.1f} s long (from {start:g} s); enrollment "
                               f"needs at least {MIN_SECONDS:g} s of the person talking")
    stop = first + MAX_FRAMES if last is None else min(last, first + MAX_FRAMES)
    nan = np.full((N_LANDMARKS, 3), np.nan, np.float32)
    rows: list[np.ndarray] = []
    crops: list[np.ndarray | None] = []
    opening, width, sharp, lips = [], [], [], []
    size = None
    report = progress or (lambda s, f: None)
    with FaceMeasurer() as meter:
        for i, frame in enumerate(iter_video_frames(video, max_frames=stop)):
            if i < first:
                continue
            size = (int(frame.shape[1]), int(frame.shape[0]))
            lm = meter.landmarks(frame)
            rows.append(nan if lm is None else lm)
            crop, o, w, sh, lc = None, np.nan, np.nan, 0.0, np.full(3, np.nan, np.float32)
            if lm is not None:
                up, lo = inner_contours(lm)
                o, w = mouth_figures(up, lo)
                lc = lip_colour(frame, lm)
                if w >= 8 and o >= OPENING_BINS[0]:
                    crop = trim_lip_band(to_canonical(frame, up, lo), lc)
                    sh = _sharpness(crop)
            crops.append(crop)
            opening.append(o)
            width.append(w)
            sharp.append(sh)
            lips.append(lc)
            if len(rows) % 25 == 0 and want:
                report("enroll", min(0.9, 0.9 * len(rows) / want))
    n = len(rows)
    if n == 0:
        raise PersonaError("the video has no frames in the part given for enrollment")
    duration = n / fps
    if duration < MIN_SECONDS - 0.5 / fps:
        raise PersonaError(f"the video is {duration:.1f} s long (from {start:g} s); enrollment "
                           f"needs at least {MIN_SECONDS:g} s of the person talking")
    lm_all = np.stack(rows)
    try:
        meas = measure_landmarks(lm_all, fps=fps, size=size, source=str(getattr(video, "name", "")))
    except NoFaceFound:
        raise NoFaceFound("no usable face in the enrollment video") from None
    figs, good = meas.figures, meas.good
    if good.sum() < 0.5 * n or good.sum() / fps < MIN_SECONDS * 0.8:
        raise NoFaceFound(f"a face was usable in only {int(good.sum())} of {n} frames of the "
                          f"enrollment video; it needs the face in view for at least "
                          f"{MIN_SECONDS * 0.8:g} s")
    opening_a = np.asarray(opening, np.float64)
    width_a = np.asarray(width, np.float64)
    sharp_a = np.asarray(sharp, np.float64)
    lips_a = np.asarray(lips, np.float64)
    usable = good & np.isfinite(opening_a)
    # rest width: the inner mouth width of the nearly closed frames
    closed = usable & (opening_a <= np.nanpercentile(opening_a[usable], 25))
    rest_w = float(np.median(width_a[closed])) if closed.any() else float(np.nanmedian(width_a))
    shape_a = width_a / max(rest_w, 1e-6)
    frontal = usable & (np.abs(figs["yaw"]) < MAX_YAW) & (np.abs(figs["pitch"]) < MAX_PITCH)
    score = sharp_a * np.exp(-(np.nan_to_num(figs["yaw"]) / 18.0) ** 2)
    chosen: list[int] = []
    for oi in range(len(OPENING_BINS) - 1):
        for si in range(len(SHAPE_BINS) - 1):
            sel = (frontal & (opening_a >= OPENING_BINS[oi]) & (opening_a < OPENING_BINS[oi + 1])
                   & (shape_a >= SHAPE_BINS[si]) & (shape_a < SHAPE_BINS[si + 1]))
            sel &= np.array([c is not None for c in crops])
            if sel.any():
                idx = np.flatnonzero(sel)
                chosen.append(int(idx[np.argmax(score[idx])]))
    if len(chosen) < 2:
        raise PersonaError("the person's mouth hardly opens in the enrollment video (fewer "
                           "than two distinct open-mouth frames): use a clip of them talking")
    report("enroll", 0.92)
    fit = None
    if speech_fit and info.get("has_audio"):
        rt = retarget(meas)
        jaw = rt.values[:, list(rt.channels).index("jawOpen")]
        try:
            fit = _speech_fit(video, first / fps, (first + n) / fps, jaw.astype(np.float64),
                              good, fps)
        except EchomimicError:          # sound that cannot be analysed: no fit, still a persona
            fit = None
    op_good = opening_a[usable]
    eye_open = np.nanmean(np.stack([figs["open_il"], figs["open_ir"]]), axis=0)
    head = {f"{k}_std": float(np.nanstd(figs[k][good])) for k in ("yaw", "pitch", "roll")}
    name = ""
    if isinstance(video, (str, os.PathLike)):
        name = os.path.basename(os.fspath(video))
    persona = Persona(
        atlas=np.stack([crops[i] for i in chosen]).astype(np.uint8),
        atlas_opening=opening_a[chosen].astype(np.float32),
        atlas_shape=shape_a[chosen].astype(np.float32),
        atlas_lip=np.nan_to_num(lips_a[chosen]).astype(np.float32),
        atlas_sharpness=sharp_a[chosen].astype(np.float32),
        opening={"p5": float(np.percentile(op_good, 5)), "p50": float(np.percentile(op_good, 50)),
                 "p95": float(np.percentile(op_good, 95)), "max": float(op_good.max())},
        blink_rate=_blink_rate(eye_open, good, fps),
        head_motion=head,
        speech_fit=fit,
        lip_rgb=tuple(float(x) for x in np.nanmedian(lips_a[usable], axis=0)),  # type: ignore[arg-type]
        source={"name": name, "fps": fps, "frames": n, "good_frames": int(good.sum()),
                "start": first / fps, "duration": duration,
                "width": size[0] if size else 0, "height": size[1] if size else 0,
                "rest_width_px": rest_w, "atlas_size": list(ATLAS_SIZE)},
    )
    report("enroll", 1.0)
    return persona
