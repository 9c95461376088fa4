"""Speech activity per hop: WebRTC VAD gated by energy against an adaptive noise floor.

A hop is speech when webrtcvad calls it speech *and* its level clears both the noise floor
(by ``margin_db``) and a floor relative to the loud part of the file (so breaths and room noise
between phrases stay out). Short gaps inside words are bridged (hangover) and isolated blips
removed; the result is softened into a probability with a short ramp.
"""

from __future__ import annotations

import numpy as np
import webrtcvad
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from .features import ANALYSIS_RATE, frame_db, n_hops

__all__ = ["speech_activity", "noise_floor_db", "ActivityParams"]


class ActivityParams:
    """Tuning of :func:`speech_activity` (seconds and dB)."""

    vad_mode = 2            # webrtcvad aggressiveness 0..3
    margin_db = 9.0         # above the noise floor
    below_peak_db = 38.0    # at most this far below the 95th percentile of loud frames
    abs_floor_db = -62.0    # nothing quieter than this (dBFS) is speech
    bridge_s = 0.18         # gaps shorter than this inside speech are not pauses
    min_run_s = 0.05        # speech bursts shorter than this are dropped
    ramp_s = 0.02           # soft edge of the probability


def noise_floor_db(db: np.ndarray, hop: float) -> float:
    """Adaptive noise floor: the 10th percentile of the 0.3 s running minimum of frame levels."""
    if db.size == 0:
        return -120.0
    k = max(1, int(round(0.3 / hop)))
    mins = minimum_filter1d(uniform_filter1d(db.astype(np.float64), 3), size=k, mode="nearest")
    return float(np.percentile(mins, 10))


def _vad_flags(x: np.ndarray, hop_samples: int, n: int, mode: int) -> np.ndarray:
    """webrtcvad decision per hop on 10 ms frames (the hop is resampled by majority/any)."""
    vad = webrtcvad.Vad(mode)
    flen = ANALYSIS_RATE // 100  # 10 ms frames
    m = len(x) // flen
    pcm = (np.clip(x[: m * flen], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    step = 2 * flen
    flags = np.fromiter(
        (vad.is_speech(pcm[i * step:(i + 1) * step], ANALYSIS_RATE) for i in range(m)),
        dtype=bool, count=m,
    )
    if m == 0:
        return np.zeros(n, bool)
    centres = ((np.arange(n) + 0.5) * hop_samples / flen).astype(int)
    return flags[np.clip(centres, 0, m - 1)]


def _runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, value) runs of a boolean array."""
    if mask.size == 0:
        return []
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [mask.size]])
    return [(int(s), int(e), bool(mask[s])) for s, e in zip(starts, ends)]


def speech_activity(x: np.ndarray, hop_samples: int, *, db: np.ndarray | None = None,
                    params: type[ActivityParams] | ActivityParams = ActivityParams,
                    ) -> tuple[np.ndarray, dict]:
    """Speech probability per hop for 16 kHz mono ``x``.

    Returns ``(activity, info)`` where ``activity`` is float32 in [0, 1] and ``info`` holds the
    noise floor and speech level in dBFS.
    """
    p = params
    hop = hop_samples / float(ANALYSIS_RATE)
    n = n_hops(len(x), hop_samples)
    if n == 0:
        return np.zeros(0, np.float32), {"noise_floor_db": -120.0, "speech_db": -120.0}
    if db is None:
        db = frame_db(x, hop_samples)
    floor = noise_floor_db(db, hop)
    vad = _vad_flags(x, hop_samples, n, p.vad_mode)
    loud = db > max(floor + p.margin_db, p.abs_floor_db)
    peak = float(np.percentile(db[loud], 95)) if loud.any() else float(db.max())
    raw = vad & loud & (db > peak - p.below_peak_db)
    act, _ = smooth_activity(raw, hop, p)
    return act, {"noise_floor_db": floor, "speech_db": peak}


def smooth_activity(raw: np.ndarray, hop: float,
                    p: type[ActivityParams] | ActivityParams = ActivityParams
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(activity (n,) float32 in [0, 1], speech mask) from raw per-hop speech flags: gaps
    shorter than ``p.bridge_s`` between speech are bridged, runs shorter than ``p.min_run_s``
    dropped, and the edges ramped over ``p.ramp_s`` (>= 0.5 exactly where the mask is set)."""
    bridge = max(1, int(round(p.bridge_s / hop)))
    min_run = max(1, int(round(p.min_run_s / hop)))
    runs = _runs(raw)
    mask = raw.copy()
    for i, (s, e, v) in enumerate(runs):
        if not v and 0 < i < len(runs) - 1 and e - s < bridge:
            mask[s:e] = True
    for s, e, v in _runs(mask):
        if v and e - s < min_run:
            mask[s:e] = False
    ramp = max(1, int(round(p.ramp_s / hop)))
    act = uniform_filter1d(mask.astype(np.float32), 2 * ramp + 1, mode="constant") if ramp > 1 \
        else mask.astype(np.float32)
    act = np.where(mask, np.maximum(act, 0.5), np.minimum(act, 0.49)).astype(np.float32)
    return act, mask
