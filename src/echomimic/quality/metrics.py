"""Quality figures from per-frame measurements and audio (pure NumPy/SciPy, deterministic).

Conventions: per-frame arrays have one value per video frame, NaN where nothing was measured;
frame ``i`` covers the audio from ``i / fps`` to ``(i + 1) / fps``. Functions return NaN (not an
error) when there is nothing to compute a figure from.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "loudness_envelope",
    "speech_pauses",
    "best_lag_correlation",
    "lipsync_loudness_r",
    "silence_closure",
    "opening_percentiles",
    "background_diff",
    "jitter",
]

#: Level of digital silence in dBFS (RMS of exactly zero samples is mapped here).
SILENCE_DB = -120.0
#: Audio whose speech level (90th percentile of 10 ms levels) is below this is all pause.
MIN_SPEECH_DB = -55.0
#: Hop of the energy analysis behind :func:`speech_pauses`, seconds.
PAUSE_HOP = 0.01


def _mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:  # (n, channels) or (channels, n): average the shorter axis
        x = x.mean(axis=1 if x.shape[0] >= x.shape[1] else 0)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D (mono) or 2-D, got shape {x.shape}")
    return np.nan_to_num(x)


def _window_db(x: np.ndarray, sample_rate: int, starts: np.ndarray, length: float) -> np.ndarray:
    """RMS level in dBFS of windows ``[start, start + length)`` (seconds); zero-padded."""
    sr = float(sample_rate)
    s0 = np.floor(starts * sr).astype(np.int64)
    s1 = np.maximum(np.floor((starts + length) * sr).astype(np.int64), s0 + 1)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    n = x.shape[0]
    a, b = np.clip(s0, 0, n), np.clip(s1, 0, n)
    energy = (csum[b] - csum[a]) / (s1 - s0)       # samples past the end count as zeros
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(np.maximum(energy, 0.0))
    return np.maximum(db, SILENCE_DB)


def _check_rate(sample_rate: int, fps: float, n_frames: int) -> None:
    if sample_rate <= 0 or fps <= 0 or n_frames < 0:
        raise ValueError(f"need sample_rate > 0, fps > 0, n_frames >= 0 "
                         f"(got {sample_rate}, {fps}, {n_frames})")


def loudness_envelope(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int
                      ) -> np.ndarray:
    """Loudness per video frame in [0, 1]: RMS over the frame's window, in dB, normalized.

    The level is floored at the noise level (the 10th percentile of the frame levels, or 50 dB
    under the loudest frames, whichever is higher) and scaled so that the floor is 0 and the
    95th percentile is 1 (values above are clipped). All-silent audio gives zeros.
    """
    _check_rate(sample_rate, fps, n_frames)
    x = _mono(samples)
    if n_frames == 0:
        return np.zeros(0)
    db = _window_db(x, sample_rate, np.arange(n_frames) / float(fps), 1.0 / float(fps))
    top = float(np.percentile(db, 95))
    floor = max(float(np.percentile(db, 10)), top - 50.0)
    if top <= SILENCE_DB or top - floor < 1e-6:
        return np.zeros(n_frames) if top < MIN_SPEECH_DB else np.ones(n_frames)
    return np.clip((db - floor) / (top - floor), 0.0, 1.0)


def speech_pauses(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int, *,
                  min_pause: float = 0.3, margin: int = 2) -> np.ndarray:
    """(n_frames,) bool: frames inside pauses of speech longer than ``min_pause`` seconds.

    Energy on a 10 ms hop (20 ms windows) against a threshold relative to the speech level:
    the speech level is the 90th percentile of the levels, the noise level the 10th, and a
    hop is quiet below ``max(speech − 25 dB, noise + 0.4 · (speech − noise))``, so digital
    silence and quiet background noise are pauses while speech (and its short gaps between
    syllables) is not. A frame is in a pause when all of its time is. ``margin`` frames at each
    pause edge that borders speech are left out (the mouth may still be opening or closing);
    edges at the start and end of the clip keep their frames. Audio shorter than the video
    counts as silence past its end; audio that is silent throughout is all pause.
    """
    _check_rate(sample_rate, fps, n_frames)
    x = _mono(samples)
    if n_frames == 0:
        return np.zeros(0, bool)
    duration = n_frames / float(fps)
    n_hops = int(np.ceil(duration / PAUSE_HOP))
    centres = (np.arange(n_hops) + 0.5) * PAUSE_HOP
    db = _window_db(x, sample_rate, centres - PAUSE_HOP, 2 * PAUSE_HOP)
    speech = float(np.percentile(db, 90))
    if speech < MIN_SPEECH_DB:
        quiet = np.ones(n_hops, bool)
    else:
        noise = float(np.percentile(db, 10))
        thr = max(speech - 25.0, noise + 0.4 * (speech - noise))
        quiet = db < thr
    # Keep runs of quiet hops that last at least min_pause.
    labels, n_runs = ndimage.label(quiet)
    if n_runs:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.concatenate([[False], sizes * PAUSE_HOP >= min_pause - 1e-9])
        quiet = keep[labels]
    # A frame is in a pause when every hop overlapping its time is.
    loud_cum = np.concatenate([[0], np.cumsum(~quiet)])
    t0 = np.arange(n_frames) / float(fps)
    h0 = np.clip(np.floor(t0 / PAUSE_HOP + 1e-9).astype(np.int64), 0, n_hops - 1)
    h1 = np.clip(np.ceil((t0 + 1.0 / fps) / PAUSE_HOP - 1e-9).astype(np.int64), h0 + 1, n_hops)
    pause = (loud_cum[h1] - loud_cum[h0]) == 0
    if margin > 0:
        speech_frames = ~pause
        near = ndimage.binary_dilation(speech_frames, iterations=int(margin)) \
            if speech_frames.any() else np.zeros_like(pause)
        pause &= ~near
    return pause


def best_lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Highest Pearson r between ``a`` and ``b`` shifted by a whole number of samples.

    Tries every ``lag`` in ``[-max_lag, max_lag]`` and correlates ``a[t]`` with
    ``b[t - lag]`` over the pairs where both are finite (at least 3, with variance in both).
    So ``lag > 0`` means ``a`` lags ``b`` (what happens in ``b`` shows up in ``a`` ``lag``
    samples later). Ties go to the smallest ``|lag|``; the longer input is cut to the shorter
    one. Returns ``(nan, 0)`` when no lag can be scored.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    n = min(x.shape[0], y.shape[0])
    x, y = x[:n], y[:n]
    best_r, best_lag = np.nan, 0
    lags = sorted(range(-int(max_lag), int(max_lag) + 1), key=lambda k: (abs(k), k))
    for lag in lags:
        if lag >= 0:
            xa, yb = x[lag:], y[: n - lag]
        else:
            xa, yb = x[: n + lag], y[-lag:]
        ok = np.isfinite(xa) & np.isfinite(yb)
        if ok.sum() < 3:
            continue
        u, v = xa[ok] - xa[ok].mean(), yb[ok] - yb[ok].mean()
        den = np.sqrt((u * u).sum() * (v * v).sum())
        if den <= 1e-12:
            continue
        r = float((u * v).sum() / den)
        if not np.isfinite(best_r) or r > best_r + 1e-12:
            best_r, best_lag = r, lag
    return best_r, best_lag


def lipsync_loudness_r(lip_gap: np.ndarray, envelope: np.ndarray, max_lag: int = 3) -> float:
    """Pearson r between mouth opening and loudness at their best lag within ±``max_lag`` frames.

    Use :func:`best_lag_correlation` (``a = lip_gap``, ``b = envelope``) for the lag itself.
    """
    return best_lag_correlation(lip_gap, envelope, max_lag)[0]


def silence_closure(lip_gap: np.ndarray, pause_mask: np.ndarray, threshold: float = 0.02
                    ) -> float:
    """Share of pause frames (with a measured face) whose lip gap is at most ``threshold``."""
    gap = np.asarray(lip_gap, dtype=np.float64)
    mask = np.asarray(pause_mask, dtype=bool)
    n = min(gap.shape[0], mask.shape[0])
    sel = mask[:n] & np.isfinite(gap[:n])
    if not sel.any():
        return float("nan")
    return float((gap[:n][sel] <= threshold).mean())


def opening_percentiles(lip_gap: np.ndarray, speech_mask: np.ndarray
                        ) -> tuple[float, float, float]:
    """5th, 50th and 95th percentiles of the lip gap over speech frames (NaN when none)."""
    gap = np.asarray(lip_gap, dtype=np.float64)
    mask = np.asarray(speech_mask, dtype=bool)
    n = min(gap.shape[0], mask.shape[0])
    vals = gap[:n][mask[:n] & np.isfinite(gap[:n])]
    if vals.size == 0:
        return float("nan"), float("nan"), float("nan")
    p5, p50, p95 = np.percentile(vals, [5, 50, 95])
    return float(p5), float(p50), float(p95)


def background_diff(frame: np.ndarray, photo: np.ndarray, mask_outside: np.ndarray) -> dict:
    """How much ``frame`` differs from ``photo`` where ``mask_outside`` is True.

    Returns ``{"max_abs": int, "n_diff": int, "share": float}``: the largest absolute channel
    difference, the number of masked pixels where any channel differs, and that number over the
    masked pixel count (0.0 for an empty mask).
    """
    f = np.asarray(frame)
    p = np.asarray(photo)
    m = np.asarray(mask_outside, dtype=bool)
    if f.shape != p.shape or f.shape[:2] != m.shape:
        raise ValueError(f"frame {f.shape}, photo {p.shape} and mask {m.shape} do not match")
    n_out = int(m.sum())
    if n_out == 0:
        return {"max_abs": 0, "n_diff": 0, "share": 0.0}
    d = np.abs(f[m].astype(np.int32) - p[m].astype(np.int32))
    if d.ndim == 2:
        d = d.max(axis=1)
    n_diff = int(np.count_nonzero(d))
    return {"max_abs": int(d.max()), "n_diff": n_diff, "share": n_diff / n_out}


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama): ``dst ≈ s · R @ src + t`` for (k, d) point sets."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / src.shape[0]
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(src.shape[1])
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var = (a * a).sum() / src.shape[0]
    s = float((sig * sign).sum() / var) if var > 0 else 1.0
    return s, rot, mu_d - s * rot @ mu_s


def jitter(landmarks: np.ndarray, idx: Sequence[int], *,
           rigid: Sequence[int] | None = None) -> float:
    """Mean frame-to-frame motion of landmarks ``idx`` that the head's motion does not explain.

    For each pair of consecutive frames with a face, a 3D similarity transform fitted on rigid
    landmarks (forehead, nose, eye corners, temples; ``rigid`` to choose others) carries the
    previous frame's points onto the current frame; the image-plane (x, y) distance between the
    carried and the measured ``idx`` points, averaged, is divided by the current eye distance.
    Returns the mean over frame pairs (NaN with fewer than two consecutive faces).
    """
    from .measure import EYE_OUTER, RIGID_POINTS

    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[2] != 3:
        raise ValueError(f"landmarks must be (n, 478, 3), got {lm.shape}")
    sel = np.asarray(list(idx), dtype=np.int64)
    rig = np.asarray(list(RIGID_POINTS if rigid is None else rigid), dtype=np.int64)
    vals = []
    for t in range(1, lm.shape[0]):
        prev, cur = lm[t - 1], lm[t]
        if not (np.isfinite(prev[rig]).all() and np.isfinite(cur[rig]).all()
                and np.isfinite(prev[sel]).all() and np.isfinite(cur[sel]).all()):
            continue
        eye = np.linalg.norm(cur[EYE_OUTER[0], :2] - cur[EYE_OUTER[1], :2])
        if eye <= 0:
            continue
        s, rot, tr = _similarity(prev[rig], cur[rig])
        moved = (s * (rot @ prev[sel].T)).T + tr
        vals.append(np.linalg.norm(moved[:, :2] - cur[sel, :2], axis=1).mean() / eye)
    return float(np.mean(vals)) if vals else float("nan")
