"""Evaluate a talking-portrait video: lip-sync, mouth closure in pauses, opening range, identity.

:func:`evaluate_video` decodes the mp4 (frames, and its own audio track unless an audio file is
given), measures the face in every frame and returns a flat dict of figures. It streams the
frames: memory does not grow with the length of the clip.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

import numpy as np

from ..errors import AudioError, ImageError, InvalidOption, VideoError
from ..types import Audio
from . import metrics
from .measure import FaceMeasurer, iter_video_frames, measure_image, video_fps

__all__ = ["evaluate_video", "load_audio", "load_image"]

#: Sample rate the audio is analysed at.
ANALYSIS_RATE = 16000
#: At most this many frames (evenly spread) are compared with the photo for identity.
IDENTITY_FRAMES = 32
#: Inner-lip points whose unexplained motion is reported as ``mouth_jitter``.
LIP_POINTS = (13, 14, 82, 87, 312, 317, 78, 308)


def load_image(image: str | os.PathLike | np.ndarray) -> np.ndarray:
    """An RGB uint8 array from a path (read with Pillow) or an array (checked)."""
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
            raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {a.dtype} {a.shape}")
        return np.ascontiguousarray(a[:, :, :3])
    from PIL import Image, UnidentifiedImageError

    p = os.fspath(image)
    if not os.path.isfile(p):
        raise ImageError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"cannot read image {p}: {exc}") from None


def load_audio(path: str | os.PathLike, *, rate: int = ANALYSIS_RATE,
               missing_ok: bool = False) -> tuple[np.ndarray | None, float]:
    """Decode the first audio stream of ``path`` with PyAV to mono float32 at ``rate``.

    Returns ``(samples, start)`` where ``start`` is the stream's first timestamp in seconds
    (0 when unknown). With ``missing_ok``, a file without an audio stream gives ``(None, 0)``.
    """
    import av

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise AudioError(f"audio not found: {p}")
    try:
        container = av.open(p)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioError(f"cannot read audio {p}: {exc}") from None
    try:
        if not container.streams.audio:
            if missing_ok:
                return None, 0.0
            raise AudioError(f"no audio stream in {p}")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        start: float | None = None
        try:
            for frame in container.decode(stream):
                if start is None and frame.time is not None:
                    start = float(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            raise AudioError(f"cannot decode audio {p}: {exc}") from None
    finally:
        container.close()
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return samples, (start or 0.0)


def _video_info(path: str | os.PathLike) -> tuple[float, float, int]:
    """(fps, start time in seconds, estimated frame count) of the first video stream."""
    import av

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise VideoError(f"video not found: {p}")
    try:
        container = av.open(p)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"cannot read video {p}: {exc}") from None
    try:
        if not container.streams.video:
            raise VideoError(f"no video stream in {p}")
        s = container.streams.video[0]
        fps = video_fps(s)
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        n = int(s.frames or 0)
        if n <= 0:
            dur = (float(s.duration * s.time_base) if s.duration is not None
                   else (container.duration or 0) / 1e6)
            n = int(round(dur * fps))
    finally:
        container.close()
    return fps, start, n


def _align(samples: np.ndarray, offset: float, rate: int) -> np.ndarray:
    """Shift audio that starts ``offset`` seconds after the video so that index 0 = frame 0."""
    k = int(round(offset * rate))
    if k > 0:
        return np.concatenate([np.zeros(k, samples.dtype), samples])
    return samples[-k:] if k < 0 else samples


#: The person mask is dilated by this many eye distances (plus 4 px) before the background is
#: compared: head motion moves the silhouette a little, and that is not a background change.
BACKGROUND_MARGIN = 0.35
#: A background pixel counts as changed when a channel differs by more than this many levels
#: (H.264 noise stays well under it).
BACKGROUND_LEVELS = 12

#: What each figure of :func:`evaluate_video` means, in display order.
LABELS: dict[str, str] = {
    "n_frames": "frames",
    "fps": "frame rate",
    "duration": "duration (s)",
    "face_found_share": "frames with a face",
    "has_audio": "has audio",
    "lipsync_loudness_r": "lip-sync r (lip gap vs loudness)",
    "lipsync_offset_frames": "best audio-video offset (frames, > 0: mouth late)",
    "silence_closure": "mouth closed in pauses (share)",
    "pause_frames": "pause frames",
    "open_p5": "mouth opening p5 (speech)",
    "open_p50": "mouth opening p50 (speech)",
    "open_p95": "mouth opening p95 (speech)",
    "truth_r": "r with the phoneme truth curve",
    "truth_offset_frames": "offset to the truth curve (frames)",
    "width_rounded": "mouth width on rounded vowels (o, u)",
    "width_spread": "mouth width on spread vowels (i, e)",
    "width_spread_minus_rounded": "spread minus rounded width (> 0 right)",
    "bilabial_closure": "lips closed on p/b/m (share)",
    "n_bilabial": "p/b/m phones",
    "reference_r": "r with the real mouth track",
    "reference_lag_frames": "lag to the real mouth (frames)",
    "lmd": "mouth landmark distance (eye distances)",
    "lmd_motion": "mouth landmark distance, motion only",
    "mouth_ssim": "mouth crop SSIM vs the reference (open frames)",
    "mouth_ssim_still": "mouth crop SSIM, reference's first frame (still baseline)",
    "mouth_dark_share": "dark share inside the lips (grey < 30)",
    "mouth_dark_share_reference": "dark share inside the lips, reference",
    "mouth_frames": "open reference frames compared",
    "photo_lip_gap": "lip gap in the photo",
    "identity_mean": "identity distance, mean (< 0.6 same person)",
    "identity_max": "identity distance, max",
    "identity_frames": "identity frames compared",
    "background_change": "background change, largest mean abs (levels)",
    "background_changed_share": "background pixels changed, largest share",
    "still_jitter": "jitter of still landmarks (eye distances)",
    "mouth_jitter": "mouth jitter",
    "jaw_r": "render: commanded jawOpen vs lip gap, r",
    "jaw_gain": "render: lip gap per unit jawOpen",
    "jaw_linearity": "render: jawOpen -> lip gap linearity (R^2)",
    "blink_r": "render: commanded eyeBlink vs eye closure, r",
    "blink_depth": "render: eye closure on full blinks",
}


def _background_mask(ref: np.ndarray) -> np.ndarray | None:
    """True outside the (dilated) person in ``ref``; None when no face is found there."""
    import cv2

    from ..analysis.face import person_mask

    tr = measure_image(ref)
    if not np.isfinite(tr.eye_dist[0]):
        return None
    person = person_mask(ref, tr.landmarks[0]) >= 128
    radius = BACKGROUND_MARGIN * float(tr.eye_dist[0]) + 4.0
    dist = cv2.distanceTransform((~person).astype(np.uint8), cv2.DIST_L2, 5)
    return dist > radius


def _phones_arg(phones: Any) -> list | None:
    """A phone list from Phone objects, dicts or a JSON file (``[{start, end, label}, ...]``)."""
    if phones is None:
        return None
    if isinstance(phones, (str, os.PathLike)):
        import json

        p = os.fspath(phones)
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise InvalidOption(f"phone timeline not found: {p}") from None
        except (OSError, ValueError) as exc:
            raise InvalidOption(f"cannot read the phone timeline {p}: {exc}") from None
        if isinstance(data, dict):
            data = data.get("phones", [])
        phones = data
    try:
        return metrics._phone_list(phones)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidOption(f"a phone needs start, end and label: {exc}") from None


def _motion_arg(motion: Any):
    if motion is None:
        return None
    from ..types import MotionTrack

    if isinstance(motion, MotionTrack):
        return motion
    from ..motion import load_motion

    return load_motion(motion)


def evaluate_video(video_path: str | os.PathLike, *, image: str | os.PathLike | np.ndarray |
                   None = None, audio: str | os.PathLike | Audio | None = None,
                   reference: str | os.PathLike | None = None, phones: Any = None,
                   motion: Any = None, max_frames: int | None = None, identity: bool = True,
                   background: bool = True, outside_mask: np.ndarray | None = None,
                   max_offset: int = 10) -> dict[str, Any]:
    """Measure a generated video and return a flat dict of quality figures.

    Args:
        video_path: the mp4 (any format PyAV reads). Its own audio track is used unless
            ``audio`` is given.
        image: the source photo (path or RGB array); needed for identity.
        audio: speech to compare with (path, or an :class:`~echomimic.types.Audio`), taken
            as starting with the first video frame.
        reference: a real video of someone speaking the same audio (frame 0 = audio start);
            adds ``reference_r``, ``reference_lag_frames``, ``lmd`` and ``lmd_motion``.
        phones: the phone timeline of the speech when it is known (``Phone`` objects, dicts
            or a JSON file of ``{start, end, label}``; espeak-ng or ARPAbet labels). Adds the
            correlation with the truth curve of the phonetic table, the mouth width on rounded
            and spread vowels and the closure on p/b/m; pauses are taken from it.
        motion: the commanded motion (a ``MotionTrack`` or a motion file); adds the render
            fidelity figures (``jaw_*``, ``blink_*``).
        max_frames: measure only the first frames.
        identity: compare faces with the photo using dlib (needs the ``quality`` extra).
        background: measure how much the background (outside the dilated person mask) changes,
            against the photo when it has the frames' size, else against the first frame.
        outside_mask: (H, W) bool, True outside the person; with ``image``, reports the exact
            differences from the photo there (``background_max_abs``, ``background_share_max``,
            ``background_frames_changed``).
        max_offset: the audio-video offset is searched within ±this many frames.

    Returns a dict; floats are NaN where a figure cannot be computed (no audio, no face ...).
    See :data:`LABELS` for every key.
    """
    if max_frames is not None and max_frames < 1:
        raise InvalidOption(f"max_frames must be at least 1, got {max_frames}")
    fps, v_start, n_est = _video_info(video_path)
    if max_frames is not None:
        n_est = min(n_est, max_frames) if n_est else max_frames
    phone_list = _phones_arg(phones)
    track = _motion_arg(motion)

    photo = load_image(image) if image is not None else None
    mask = None
    if outside_mask is not None:
        if photo is None:
            raise InvalidOption("outside_mask needs the source image")
        mask = np.asarray(outside_mask, dtype=bool)
        if mask.shape != photo.shape[:2]:
            raise InvalidOption(f"outside_mask is {mask.shape[1]}x{mask.shape[0]} but the image "
                                f"is {photo.shape[1]}x{photo.shape[0]}")

    # Audio, aligned so that sample 0 is the time of the first video frame.
    if isinstance(audio, Audio):
        samples, rate = np.asarray(audio.samples, np.float32), int(audio.sample_rate)
    elif audio is not None:
        samples, _ = load_audio(audio)
        rate = ANALYSIS_RATE
    else:
        samples, a_start = load_audio(video_path, missing_ok=True)
        rate = ANALYSIS_RATE
        if samples is not None:
            samples = _align(samples, a_start - v_start, rate)
    if samples is not None and samples.size == 0:
        samples = None

    # One pass over the frames: face mesh on all, identity on a spread subset, background diff.
    every = max(1, math.ceil(n_est / IDENTITY_FRAMES)) if n_est else 1
    want_identity = identity and photo is not None
    id_model = None
    if want_identity:
        from .identity import IdentityModel

        id_model = IdentityModel()   # fails fast when the quality extra is missing
    id_frames: list[np.ndarray] = []
    bg: dict[str, float] = {"background_max_abs": 0, "background_share_max": 0.0,
                            "background_frames_changed": 0}
    auto_bg: dict[str, Any] = {"ref": None, "mask": None, "mad": [], "share": []}

    def frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(iter_video_frames(video_path, max_frames=max_frames)):
            if want_identity and i % every == 0:
                id_frames.append(frame)
            if mask is not None:
                if frame.shape != photo.shape:
                    raise InvalidOption(
                        f"video frames are {frame.shape[1]}x{frame.shape[0]} but the image is "
                        f"{photo.shape[1]}x{photo.shape[0]}: cannot compare the background")
                d = metrics.background_diff(frame, photo, mask)
                bg["background_max_abs"] = max(bg["background_max_abs"], d["max_abs"])
                bg["background_share_max"] = max(bg["background_share_max"], d["share"])
                bg["background_frames_changed"] += int(d["n_diff"] > 0)
            if background:
                if i == 0:
                    ref = photo if photo is not None and photo.shape == frame.shape else frame
                    auto_bg["ref"] = ref
                    auto_bg["mask"] = _background_mask(ref)
                m = auto_bg["mask"]
                if m is not None and m.any() and frame.shape == auto_bg["ref"].shape:
                    d = np.abs(frame[m].astype(np.int16) - auto_bg["ref"][m].astype(np.int16))
                    auto_bg["mad"].append(float(d.mean()))
                    auto_bg["share"].append(float((d.max(axis=1) > BACKGROUND_LEVELS).mean()))
            yield frame

    # Every frame is measured on its own (static mode): MediaPipe's tracking mode carries the
    # previous frame's region of interest over and reads closed lips as parted by up to 0.02
    # eye distances when the head moves slightly.
    with FaceMeasurer(static_image_mode=True) as measurer:
        tracks = measurer.measure_frames(frames(), fps=fps)
    n = tracks.n_frames
    if n == 0:
        raise VideoError(f"no frames could be decoded from {os.fspath(video_path)}")

    out: dict[str, Any] = {
        "n_frames": n,
        "fps": float(fps),
        "duration": n / float(fps),
        "face_found_share": tracks.face_found_share,
        "has_audio": samples is not None,
    }
    nan = float("nan")
    if samples is not None:
        env = metrics.loudness_envelope(samples, rate, fps, n)
        if phone_list:
            pauses = metrics.pauses_from_phones(phone_list, fps, n)
            speaking = ~metrics.pauses_from_phones(phone_list, fps, n, margin=0)
        else:
            pauses = metrics.speech_pauses(samples, rate, fps, n)
            speaking = ~metrics.speech_pauses(samples, rate, fps, n, margin=0)
        r, lag = metrics.best_lag_correlation(tracks.lip_gap, env, max_offset)
        p5, p50, p95 = metrics.opening_percentiles(tracks.lip_gap, speaking)
        out.update(lipsync_loudness_r=r, lipsync_offset_frames=int(lag),
                   silence_closure=metrics.silence_closure(tracks.lip_gap, pauses,
                                                           metrics.CLOSED_GAP),
                   pause_frames=int(pauses.sum()), open_p5=p5, open_p50=p50, open_p95=p95)
    else:
        out.update(lipsync_loudness_r=nan, lipsync_offset_frames=0, silence_closure=nan,
                   pause_frames=0, open_p5=nan, open_p50=nan, open_p95=nan)
    if phone_list:
        truth = metrics.truth_open(phone_list, fps, n)
        tr, tlag = metrics.best_lag_correlation(tracks.lip_gap, truth, max_offset)
        out.update(truth_r=tr, truth_offset_frames=int(tlag))
        if samples is None:
            pauses = metrics.pauses_from_phones(phone_list, fps, n)
            out.update(silence_closure=metrics.silence_closure(tracks.lip_gap, pauses,
                                                               metrics.CLOSED_GAP),
                       pause_frames=int(pauses.sum()))
        out.update(metrics.shape_measures(tracks.lip_gap, tracks.mouth_width, phone_list, fps,
                                          offset=int(np.clip(tlag, -2, 2))))
    if reference is not None:
        ref_tracks = measure_video_tracks(reference, max_frames=max_frames)
        out.update(metrics.reference_comparison(tracks.lip_gap, tracks.landmarks,
                                                ref_tracks.lip_gap, ref_tracks.landmarks,
                                                max_lag=max_offset))
        from .mouth import mouth_figures

        out.update(mouth_figures(iter_video_frames(video_path, max_frames=max_frames),
                                 iter_video_frames(reference, max_frames=max_frames),
                                 tracks.landmarks, ref_tracks.landmarks))
    out["still_jitter"] = metrics.jitter(tracks.landmarks, metrics.STILL_POINTS)
    out["mouth_jitter"] = metrics.jitter(tracks.landmarks, LIP_POINTS)
    if track is not None:
        m = min(n, track.n_frames)
        blink = 0.5 * (track.get("eyeBlinkLeft") + track.get("eyeBlinkRight"))
        eye_open = 0.5 * (tracks.eye_open_left + tracks.eye_open_right)
        out.update(metrics.render_fidelity(track.get("jawOpen")[:m], blink[:m],
                                           tracks.lip_gap[:m], eye_open[:m]))

    if photo is not None:
        out["photo_lip_gap"] = float(measure_image(photo).lip_gap[0])
        if id_model is not None:
            d = id_model.distances(photo, id_frames)
            ok = np.isfinite(d)
            out["identity_mean"] = float(d[ok].mean()) if ok.any() else nan
            out["identity_max"] = float(d[ok].max()) if ok.any() else nan
            out["identity_frames"] = int(ok.sum())
    if background:
        out["background_change"] = max(auto_bg["mad"]) if auto_bg["mad"] else nan
        out["background_changed_share"] = max(auto_bg["share"]) if auto_bg["share"] else nan
    if mask is not None:
        out.update(bg)
    return out


def measure_video_tracks(path: str | os.PathLike, *, max_frames: int | None = None):
    """Face measurements of every frame of a video, each frame on its own (as
    :func:`evaluate_video` measures)."""
    fps, _, _ = _video_info(path)
    with FaceMeasurer(static_image_mode=True) as measurer:
        return measurer.measure_frames(iter_video_frames(path, max_frames=max_frames), fps=fps)
