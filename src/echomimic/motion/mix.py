"""Mixing: several motion sources -> the one track the renderer draws.

Precedence (see ``docs/motion.md``):

1. Lips and jaw (:data:`LIP_CHANNELS`) come from the ``speech`` track when one is given; lip
   channels the speech track lacks are neutral then, so a video's mouth never fights the audio.
2. Every other channel comes from ``base`` (a driving video, a motion file or idle life); without
   ``speech``, ``base`` supplies the lips too. Channels no source provides stay neutral.
3. ``overlays`` (prompt actions, emotion) add their offset from neutral on top.
4. ``scales`` multiply each channel's offset from neutral, last.
5. Values are clamped: blendshapes to [0, 1], ``breath`` to [-1, 1], head channels to
   :data:`HEAD_LIMITS`.

Tracks at another frame rate or length are resampled linearly on time (frame ``i`` is at
``i / fps`` seconds); past a track's last frame its last value holds. A track at the output's
frame rate is taken frame for frame, so a motion file alone is reproduced exactly.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping

import numpy as np

from echomimic.errors import InvalidOption, MotionError
from echomimic.types import ALL_CHANNELS, ARKIT_BLENDSHAPES, EXTRA_CHANNELS, NEUTRAL, MotionTrack

__all__ = ["mix_tracks", "resample_track", "clamp_values", "LIP_CHANNELS", "HEAD_LIMITS",
           "CHANNEL_RANGES"]

#: Channels owned by speech: the jaw, every ``mouth*`` blendshape and ``tongueOut``.
LIP_CHANNELS: tuple[str, ...] = tuple(
    c for c in ARKIT_BLENDSHAPES if c.startswith(("jaw", "mouth")) or c == "tongueOut")

#: Valid range of each head channel (degrees; face widths; scale factor).
HEAD_LIMITS: dict[str, tuple[float, float]] = {
    "yaw": (-25.0, 25.0), "pitch": (-20.0, 20.0), "roll": (-20.0, 20.0),
    "tx": (-0.15, 0.15), "ty": (-0.15, 0.15), "scale": (0.85, 1.15),
}

#: Valid range of every channel.
CHANNEL_RANGES: dict[str, tuple[float, float]] = {
    **HEAD_LIMITS,
    **{c: (0.0, 1.0) for c in ARKIT_BLENDSHAPES},
    **{c: (-1.0, 1.0) for c in EXTRA_CHANNELS},
}

_LO = np.array([CHANNEL_RANGES[c][0] for c in ALL_CHANNELS], np.float64)
_HI = np.array([CHANNEL_RANGES[c][1] for c in ALL_CHANNELS], np.float64)
_NEUTRAL = np.array([NEUTRAL[c] for c in ALL_CHANNELS], np.float64)
_INDEX = {c: i for i, c in enumerate(ALL_CHANNELS)}
_LIP_SET = frozenset(LIP_CHANNELS)


def _check_track(track: MotionTrack, role: str) -> None:
    unknown = [c for c in track.channels if c not in _INDEX]
    if unknown:
        raise MotionError(f"{role} track has unknown channel(s): {', '.join(map(repr, unknown[:5]))}")
    fps = float(track.fps)
    if not math.isfinite(fps) or fps <= 0:
        raise MotionError(f"{role} track has an invalid frame rate {track.fps!r}")
    if not np.isfinite(track.values).all():
        col = int(np.flatnonzero(~np.isfinite(track.values).all(axis=0))[0])
        raise MotionError(f"{role} track has non-finite values in channel {track.channels[col]!r}")


def resample_track(track: MotionTrack, n_frames: int, fps: float) -> np.ndarray:
    """``track.values`` at ``n_frames`` frames of ``fps`` (float64, columns as ``track.channels``).

    Linear interpolation on time; past the last frame the last value holds, and an empty track
    gives neutral values. At the same frame rate frames are copied, not interpolated.
    """
    src = track.values.astype(np.float64)
    k = src.shape[1]
    if src.shape[0] == 0:
        return np.tile([NEUTRAL.get(c, 0.0) for c in track.channels], (n_frames, 1)).reshape(n_frames, k)
    if float(track.fps) == float(fps):
        idx = np.minimum(np.arange(n_frames), src.shape[0] - 1)
        return src[idx]
    pos = np.arange(n_frames) * (float(track.fps) / float(fps))   # position in source frames
    pos = np.clip(pos, 0.0, src.shape[0] - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, src.shape[0] - 1)
    w = (pos - i0)[:, None]
    return src[i0] * (1.0 - w) + src[i1] * w


def clamp_values(channels: Iterable[str], values: np.ndarray) -> np.ndarray:
    """Clamp each column of ``values`` to the valid range of its channel (see :data:`CHANNEL_RANGES`)."""
    chans = list(channels)
    lo = np.array([CHANNEL_RANGES[c][0] for c in chans])
    hi = np.array([CHANNEL_RANGES[c][1] for c in chans])
    return np.clip(values, lo, hi)


def _scale_vector(scales: Mapping[str, float] | None) -> np.ndarray:
    """Per-channel multipliers from ``scales`` (channel names or glob patterns like ``"mouth*"``).

    Exact names win over patterns; among patterns, later entries win.
    """
    vec = np.ones(len(ALL_CHANNELS))
    if not scales:
        return vec
    exact: dict[str, float] = {}
    for key, value in scales.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidOption(f"scale for {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidOption(f"scale for {key!r} must be a non-negative number, got {value!r}")
        if key in _INDEX:
            exact[key] = value
            continue
        matched = fnmatch.filter(ALL_CHANNELS, key)
        if not matched:
            raise InvalidOption(f"unknown channel in scales: {key!r}")
        for c in matched:
            vec[_INDEX[c]] = value
    for c, value in exact.items():
        vec[_INDEX[c]] = value
    return vec


def mix_tracks(*, speech: MotionTrack | None, base: MotionTrack | None,
               overlays: Iterable[MotionTrack] = (), n_frames: int, fps: float,
               scales: Mapping[str, float] | None = None) -> MotionTrack:
    """Combine motion sources into one track with every channel of :data:`ALL_CHANNELS`.

    Args:
        speech: lip-sync track; supplies :data:`LIP_CHANNELS` when given.
        base: video, motion-file or idle-life track; supplies every other channel (and the lips
            when ``speech`` is None).
        overlays: tracks whose offsets from neutral are added on top (prompt actions, emotion).
        n_frames: number of output frames.
        fps: output frame rate.
        scales: per-channel multipliers of the offset from neutral, applied last; keys are
            channel names or glob patterns (``"mouth*"``, ``"eyeBlink*"``).

    Returns:
        The mixed :class:`MotionTrack` (float32, clamped to :data:`CHANNEL_RANGES`).

    Raises:
        MotionError: a track with unknown channels, a bad frame rate or non-finite values.
        InvalidOption: a bad ``n_frames``, ``fps`` or scale.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
        raise InvalidOption(f"n_frames must be a non-negative integer, got {n_frames!r}")
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidOption(f"fps must be a positive number, got {fps!r}")
    n_frames = int(n_frames)
    overlays = list(overlays or ())
    scale_vec = _scale_vector(scales)

    out = np.tile(_NEUTRAL, (n_frames, 1))
    sources: dict[str, object] = {}
    if base is not None:
        _check_track(base, "base")
        vals = resample_track(base, n_frames, fps)
        for j, c in enumerate(base.channels):
            if speech is None or c not in _LIP_SET:
                out[:, _INDEX[c]] = vals[:, j]
        sources["base"] = base.meta.get("generator", base.meta.get("source", "track"))
    if speech is not None:
        _check_track(speech, "speech")
        for c in LIP_CHANNELS:
            out[:, _INDEX[c]] = NEUTRAL[c]
        vals = resample_track(speech, n_frames, fps)
        for j, c in enumerate(speech.channels):
            if c in _LIP_SET:
                out[:, _INDEX[c]] = vals[:, j]
        sources["speech"] = speech.meta.get("generator", "track")
    for i, overlay in enumerate(overlays):
        _check_track(overlay, f"overlay {i}")
        vals = resample_track(overlay, n_frames, fps)
        for j, c in enumerate(overlay.channels):
            out[:, _INDEX[c]] += vals[:, j] - NEUTRAL[c]
    if overlays:
        sources["overlays"] = [o.meta.get("generator", "track") for o in overlays]
    if scales:
        out = _NEUTRAL + (out - _NEUTRAL) * scale_vec
    out = np.clip(out, _LO, _HI)
    meta = {"generator": "mix", "sources": sources}
    if scales:
        meta["scales"] = {str(k): float(v) for k, v in scales.items()}
    return MotionTrack(fps=fps, channels=list(ALL_CHANNELS), values=out.astype(np.float32), meta=meta)
