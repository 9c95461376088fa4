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
    "frame_average",
    "truth_open",
    "pauses_from_phones",
    "shape_measures",
    "normalized_mouth",
    "reference_comparison",
    "render_fidelity",
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


def _frames_in_pauses(quiet: np.ndarray, hop: float, fps: float, n_frames: int,
                      min_pause: float) -> np.ndarray:
    """(n_frames,) bool: frames all of whose time lies in a run of quiet hops (of ``hop``
    seconds) lasting at least ``min_pause`` seconds."""
    n_hops = len(quiet)
    labels, n_runs = ndimage.label(quiet)
    if n_runs:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.concatenate([[False], sizes * hop >= min_pause - 1e-9])
        quiet = keep[labels]
    # A frame is in a pause when every hop overlapping its time is.
    loud_cum = np.concatenate([[0], np.cumsum(~quiet)])
    t0 = np.arange(n_frames) / float(fps)
    h0 = np.clip(np.floor(t0 / hop + 1e-9).astype(np.int64), 0, n_hops - 1)
    h1 = np.clip(np.ceil((t0 + 1.0 / fps) / hop - 1e-9).astype(np.int64), h0 + 1, n_hops)
    return (loud_cum[h1] - loud_cum[h0]) == 0


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
    pause = _frames_in_pauses(quiet, PAUSE_HOP, fps, n_frames, min_pause)
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


# ------------------------------------------------------------------------------------------
# Phone timelines, truth curves and mouth shapes
# ------------------------------------------------------------------------------------------

#: Landmarks of the lips (outer and inner contours) used for the landmark distance (LMD).
LIP_CONTOUR = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269,
               270, 409, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13,
               312, 311, 310, 415)
#: Landmarks that should not move relative to the skull (cheekbones, nose wings, temples, upper
#: eyelid creases are excluded because blinks move them); their unexplained motion is jitter.
STILL_POINTS = (50, 280, 117, 346, 123, 352, 203, 423, 129, 358, 98, 327, 68, 298, 104, 333)
#: A lip gap at or below this (over the eye distance) counts as closed lips.
CLOSED_GAP = 0.02
#: A bilabial counts as closed when the smallest lip gap around it is at or below this.
BILABIAL_GAP = 0.03


def frame_average(curve: np.ndarray, hop: float, fps: float, n_frames: int) -> np.ndarray:
    """Average a curve sampled every ``hop`` seconds (value ``j`` holds over
    ``[j*hop, (j+1)*hop)``) over each video frame window ``[i/fps, (i+1)/fps)``.

    Time past the end of the curve holds its last value (0 for an empty curve).
    """
    c = np.asarray(curve, dtype=np.float64).ravel()
    if n_frames <= 0:
        return np.zeros(0)
    if c.size == 0:
        return np.zeros(n_frames)
    edges = np.arange(n_frames + 1) / float(fps)
    # integral of the step curve up to time t
    cum = np.concatenate([[0.0], np.cumsum(c) * hop])
    t_end = c.size * hop

    def integral(t: np.ndarray) -> np.ndarray:
        tt = np.minimum(t, t_end)
        j = np.minimum(np.floor(tt / hop).astype(np.int64), c.size - 1)
        base = cum[j] + c[j] * (tt - j * hop)
        return base + np.maximum(t - t_end, 0.0) * c[-1]

    ints = integral(edges)
    return np.diff(ints) * float(fps)


def _phone_list(phones) -> list:
    """Phones as objects with ``start``, ``end`` and ``label`` (accepts dicts too)."""
    from ..types import Phone

    out = []
    for p in phones or ():
        if isinstance(p, dict):
            out.append(Phone(float(p["start"]), float(p["end"]), str(p["label"])))
        else:
            out.append(p)
    return out


def truth_open(phones, fps: float, n_frames: int, *, hop: float = 0.01) -> np.ndarray:
    """The openness a phone timeline implies, per video frame (phonetic table, frame-averaged)."""
    from ..speech.phonetics import truth_curves

    ph = _phone_list(phones)
    curves = truth_curves(ph, n_frames / float(fps) + hop, hop)
    return frame_average(curves["open"], hop, fps, n_frames)


def pauses_from_phones(phones, fps: float, n_frames: int, *, min_pause: float = 0.3,
                       margin: int = 2) -> np.ndarray:
    """(n_frames,) bool: frames wholly inside pauses of at least ``min_pause`` seconds of a
    phone timeline (time outside every speech phone). ``margin`` frames at each edge that
    borders speech are left out, as in :func:`speech_pauses`."""
    from ..speech.phonetics import is_pause

    ph = _phone_list(phones)
    hop = 0.005
    n_hops = int(np.ceil(n_frames / float(fps) / hop)) + 1
    t = (np.arange(n_hops) + 0.5) * hop
    speech = np.zeros(n_hops, bool)
    for p in ph:
        if not is_pause(p.label) and not (p.label.startswith("(") and p.label.endswith(")")):
            speech[(t >= p.start) & (t < p.end)] = True
    pause = _frames_in_pauses(~speech, hop, fps, n_frames, min_pause)
    if margin > 0 and (~pause).any():
        pause &= ~ndimage.binary_dilation(~pause, iterations=int(margin))
    return pause


def _vowel_class(label: str) -> str | None:
    """``"rounded"`` (o, u, y ...), ``"spread"`` (i, e ...) or None, from the phonetic table."""
    from ..speech.phonetics import VOWELS, shape_sequence

    seq = shape_sequence(label)
    if len(seq) != 1 or seq[0] not in VOWELS.values():
        return None                      # consonants, pauses and diphthongs are skipped
    _, rnd, spr, _, _ = seq[0]
    if rnd >= 0.5:
        return "rounded"
    if spr >= 0.5:
        return "spread"
    return None


def _is_bilabial(label: str) -> bool:
    from ..speech.phonetics import is_pause, shape_sequence

    if is_pause(label):
        return False
    seq = shape_sequence(label)
    return len(seq) == 1 and seq[0][3] >= 1.0 and seq[0][0] == 0.0


def shape_measures(lip_gap: np.ndarray, mouth_width: np.ndarray, phones, fps: float, *,
                   offset: int = 0) -> dict[str, float]:
    """Mouth shapes on the vowels and bilabials of a phone timeline.

    For each single (non-diphthong) vowel of at least 50 ms that the table calls rounded
    (round >= 0.5: o, u, y ...) or spread (spread >= 0.5: i, e ...), the mouth width (corner
    distance over eye distance) is averaged over the frames around its middle; each bilabial
    (p, b, m) counts as closed when the smallest lip gap over its frames (one frame either
    side) is at most :data:`BILABIAL_GAP`. ``offset`` (frames, > 0: the mouth lags) shifts the
    frames looked at.

    Returns ``width_rounded``, ``width_spread``, ``width_spread_minus_rounded`` (> 0 is the
    right direction), ``n_rounded``, ``n_spread``, ``bilabial_closure`` (share closed) and
    ``n_bilabial``; NaN where a class has no phones.
    """
    gap = np.asarray(lip_gap, dtype=np.float64)
    width = np.asarray(mouth_width, dtype=np.float64)
    n = min(gap.shape[0], width.shape[0])
    rounded, spread, closed = [], [], []
    for p in _phone_list(phones):
        f0 = int(np.floor(p.start * fps)) + offset
        f1 = int(np.ceil(p.end * fps)) + offset
        if f0 >= n or f1 <= 0:
            continue
        if _is_bilabial(p.label):
            seg = gap[max(0, f0 - 1): min(n, f1 + 1)]
            seg = seg[np.isfinite(seg)]
            if seg.size:
                closed.append(float(seg.min() <= BILABIAL_GAP))
            continue
        if p.end - p.start < 0.05:
            continue
        cls = _vowel_class(p.label)
        if cls is None:
            continue
        mid = 0.5 * (p.start + p.end) * fps + offset
        a, b = int(np.floor(mid - 0.5)), int(np.floor(mid + 0.5)) + 1
        seg = width[max(0, a): min(n, b)]
        seg = seg[np.isfinite(seg)]
        if seg.size:
            (rounded if cls == "rounded" else spread).append(float(seg.mean()))
    nan = float("nan")
    wr = float(np.mean(rounded)) if rounded else nan
    ws = float(np.mean(spread)) if spread else nan
    return {"width_rounded": wr, "width_spread": ws, "width_spread_minus_rounded": ws - wr,
            "n_rounded": len(rounded), "n_spread": len(spread),
            "bilabial_closure": float(np.mean(closed)) if closed else nan,
            "n_bilabial": len(closed)}


# ------------------------------------------------------------------------------------------
# Comparison with a real video of the same speech
# ------------------------------------------------------------------------------------------


def normalized_mouth(landmarks: np.ndarray, idx: Sequence[int] = LIP_CONTOUR) -> np.ndarray:
    """(n, k, 2) lip landmarks in a face-centred frame: the origin at the midpoint of the outer
    eye corners, x along the eye line (so in-plane head roll is removed) and lengths over the
    eye distance (so face size and position are removed). NaN rows stay NaN."""
    from .measure import EYE_OUTER

    lm = np.asarray(landmarks, dtype=np.float64)
    a, b = lm[:, EYE_OUTER[0], :2], lm[:, EYE_OUTER[1], :2]
    mid = 0.5 * (a + b)
    d = b - a
    with np.errstate(invalid="ignore", divide="ignore"):
        eye = np.linalg.norm(d, axis=1)
        ex = d / eye[:, None]
    ey = np.stack([-ex[:, 1], ex[:, 0]], axis=1)
    pts = lm[:, list(idx), :2] - mid[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.einsum("nkd,nd->nk", pts, ex) / eye[:, None]
        y = np.einsum("nkd,nd->nk", pts, ey) / eye[:, None]
    return np.stack([x, y], axis=2)


def _lagged(a: np.ndarray, b: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """``a[t]`` and ``b[t - lag]`` over the overlapping frames."""
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n], b[:n]
    if lag >= 0:
        return a[lag:], b[: n - lag]
    return a[: n + lag], b[-lag:]


def reference_comparison(out_gap: np.ndarray, out_landmarks: np.ndarray, ref_gap: np.ndarray,
                         ref_landmarks: np.ndarray, *, max_lag: int = 10) -> dict[str, float]:
    """Compare a generated video's mouth with a real video of the same speech.

    * ``reference_r`` / ``reference_lag_frames``: Pearson r of the two lip-gap tracks at their
      best lag within ±``max_lag`` frames (> 0: the generated mouth lags the real one);
    * ``lmd``: mouth landmark distance, the mean distance between corresponding lip landmarks
      (:data:`LIP_CONTOUR`) after :func:`normalized_mouth`, in eye distances, at that lag;
    * ``lmd_motion``: the same with each video's mean mouth shape removed first, so that two
      different people's lips are compared by how they move, not by their shape.
    """
    r, lag = best_lag_correlation(out_gap, ref_gap, max_lag)
    a = normalized_mouth(out_landmarks)
    b = normalized_mouth(ref_landmarks)
    a, b = _lagged(a, b, lag)
    ok = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
    nan = float("nan")
    if not ok.any():
        return {"reference_r": r, "reference_lag_frames": int(lag), "lmd": nan,
                "lmd_motion": nan}
    a, b = a[ok], b[ok]
    lmd = float(np.linalg.norm(a - b, axis=2).mean())
    am, bm = a - a.mean(axis=0), b - b.mean(axis=0)
    lmd_motion = float(np.linalg.norm(am - bm, axis=2).mean())
    return {"reference_r": r, "reference_lag_frames": int(lag), "lmd": lmd,
            "lmd_motion": lmd_motion}


# ------------------------------------------------------------------------------------------
# Render fidelity
# ------------------------------------------------------------------------------------------


def render_fidelity(jaw_open: np.ndarray, blink: np.ndarray, lip_gap: np.ndarray,
                    eye_open: np.ndarray) -> dict[str, float]:
    """How faithfully the rendered face shows the commanded motion.

    ``jaw_open`` and ``blink`` are the commanded ``jawOpen`` and mean ``eyeBlink`` per frame;
    ``lip_gap`` and ``eye_open`` (mean of both eyes) are measured on the output. Returns
    ``jaw_r`` (Pearson r of commanded jaw and measured gap), ``jaw_gain`` and ``jaw_linearity``
    (slope of gap over jawOpen and the R² of that line, fitted where jawOpen > 0.05),
    ``blink_r`` (r of the commanded blink with the measured eye closure, 1 − openness over its
    median) and ``blink_depth`` (measured closure at the frames commanded >= 0.9; NaN without
    full blinks).
    """
    j = np.asarray(jaw_open, dtype=np.float64)
    g = np.asarray(lip_gap, dtype=np.float64)
    n = min(j.shape[0], g.shape[0])
    j, g = j[:n], g[:n]
    nan = float("nan")
    ok = np.isfinite(j) & np.isfinite(g)
    out = {"jaw_r": nan, "jaw_gain": nan, "jaw_linearity": nan, "blink_r": nan,
           "blink_depth": nan}
    if ok.sum() >= 3 and np.std(j[ok]) > 1e-6 and np.std(g[ok]) > 1e-9:
        out["jaw_r"] = float(np.corrcoef(j[ok], g[ok])[0, 1])
        sel = ok & (j > 0.05)
        if sel.sum() >= 3 and np.std(j[sel]) > 1e-6:
            slope, icpt = np.polyfit(j[sel], g[sel], 1)
            pred = slope * j[sel] + icpt
            ss = ((g[sel] - g[sel].mean()) ** 2).sum()
            out["jaw_gain"] = float(slope)
            out["jaw_linearity"] = float(1 - ((g[sel] - pred) ** 2).sum() / ss) if ss > 0 else nan
    bl = np.asarray(blink, dtype=np.float64)
    eo = np.asarray(eye_open, dtype=np.float64)
    m = min(bl.shape[0], eo.shape[0])
    bl, eo = bl[:m], eo[:m]
    ok = np.isfinite(bl) & np.isfinite(eo)
    if ok.sum() >= 3:
        med = float(np.median(eo[ok]))
        if med > 0:
            closure = 1.0 - eo / med
            if np.std(bl[ok]) > 1e-6 and np.std(closure[ok]) > 1e-9:
                out["blink_r"] = float(np.corrcoef(bl[ok], closure[ok])[0, 1])
            full = ok & (bl >= 0.9)
            if full.any():
                out["blink_depth"] = float(np.mean(closure[full]))
    return out
