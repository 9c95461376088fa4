"""Idle life: blinks, head sway, prosodic nods and brow raises, breathing, gaze shifts.

Everything random comes from ``numpy.random.Generator(PCG64(...))`` seeded from ``seed``, with one
independent stream per component (blinks, head, gaze, breathing), so the same seed gives the same
values and changing one option (say ``blink_rate``) leaves the other components unchanged.

Components:

* **Blinks** – a renewal process: inter-blink intervals are a refractory minimum plus a gamma
  variate (mean set by the rate, default 17 per minute), with occasional double blinks. With
  speech, most blinks move to the nearest phrase end (speakers blink at pauses). Each blink
  closes both eyes fully (1.0) in ~90 ms, holds ~40 ms and opens in ~150 ms.
* **Head** – band-limited Gaussian noise (a slow drift plus a faster sway) on yaw, pitch, roll,
  tx, ty and scale, a few degrees and about 1% of the face width at most, with more energy while
  speaking. Loudness accents add small nods (``pitch``), pitch accents raise the brows.
* **Breathing** – ``breath`` in [-1, 1] (-1 exhaled, 1 inhaled) at 0.2–0.3 breaths per second
  with jitter; while speaking the exhalation stretches over the phrase and the inhalation falls in
  the pauses.
* **Gaze** – occasional small saccades to a nearby point and back (``eyeLook*`` channels).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import find_peaks

from echomimic.errors import InvalidOption
from echomimic.motion.smoothing import attack_release, gaussian_smooth
from echomimic.types import HEAD_CHANNELS, MotionTrack, Speech

__all__ = ["idle_track", "IDLE_CHANNELS", "DEFAULT_BLINK_RATE"]

#: Channels produced by :func:`idle_track`, in this order.
IDLE_CHANNELS: tuple[str, ...] = (
    "yaw", "pitch", "roll", "tx", "ty", "scale",
    "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "breath",
)

#: Blinks per minute when ``blink_rate`` is not given (adults at rest: about 15-20).
DEFAULT_BLINK_RATE = 17.0
MAX_BLINK_RATE = 60.0

# Internal rate for the continuous signals (resampled to the video frame rate at the end).
_RATE = 100.0

# Random streams (one per component).
_STREAM_BLINK, _STREAM_HEAD, _STREAM_GAZE, _STREAM_BREATH = 1, 2, 3, 4

# Blink shape (seconds).
_BLINK_CLOSE, _BLINK_HOLD, _BLINK_OPEN = 0.090, 0.040, 0.150
_BLINK_REFRACTORY = 0.6           # s, no blink starts sooner than this after the previous one
_BLINK_GAMMA_SHAPE = 2.0          # shape of the gamma part of the interval (CV of real blinks)
_DOUBLE_BLINK_P = 0.08            # share of blinks followed by a second one
_DOUBLE_BLINK_GAP = (0.33, 0.45)  # s between the two starts
_PAUSE_SNAP = 1.2                 # s, a blink this close to a phrase end moves there...
_PAUSE_SNAP_P = 0.7               # ... with this probability

# Head noise: (std in silence) per channel; speaking multiplies by (1 + _SPEAK_GAIN).
_HEAD_STD = {"yaw": 1.1, "pitch": 0.7, "roll": 0.5, "tx": 0.004, "ty": 0.003, "scale": 0.003}
_HEAD_LIMIT = {"yaw": 4.0, "pitch": 4.0, "roll": 3.0, "tx": 0.02, "ty": 0.02, "scale": 0.015}
_DRIFT_SIGMA, _SWAY_SIGMA = 1.2, 0.35  # s, Gaussian smoothing widths of the two noise bands
_DRIFT_SHARE = 0.8                     # share of the variance in the slow drift
_SPEAK_GAIN = 0.7

# Prosody.
_NOD_DEG = 1.6          # degrees of a full-strength nod (chin down)
_NOD_LEN = 0.45         # s
_NOD_PROMINENCE = 0.12  # loudness prominence of a stressed syllable
_NOD_SPACING = 0.6      # s, at most one nod per this interval
_BROW_MAX = 0.35        # browInnerUp of a strong pitch accent (outer brows take 70% of it)

# Breathing.
_BREATH_HZ = (0.2, 0.3)
_BREATH_AMP = 0.9

# Gaze.
_GAZE_INTERVAL = (1.5, 3.0)  # s, minimum + gamma mean of the fixation time
_GAZE_H, _GAZE_V = 0.18, 0.10  # largest excursion (eyeLook* units)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), stream])))


def _validate(n_frames, fps, seed, head_motion_scale, blink_rate, expression_scale):
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
        raise InvalidOption(f"n_frames must be a non-negative integer, got {n_frames!r}")
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidOption(f"fps must be a positive number, got {fps!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidOption(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("head_motion_scale", head_motion_scale),
                        ("expression_scale", expression_scale)):
        if not math.isfinite(float(value)) or float(value) < 0:
            raise InvalidOption(f"{name} must be a non-negative number, got {value!r}")
    if blink_rate is None:
        blink_rate = DEFAULT_BLINK_RATE
    blink_rate = float(blink_rate)
    if not math.isfinite(blink_rate) or not 0 <= blink_rate <= MAX_BLINK_RATE:
        raise InvalidOption(f"blink_rate must be between 0 and {MAX_BLINK_RATE:g} blinks per "
                            f"minute, got {blink_rate!r}")
    return int(n_frames), fps, int(seed), float(head_motion_scale), blink_rate, float(expression_scale)


# ------------------------------------------------------------------------------------------------
# Speech-derived curves on the internal grid
# ------------------------------------------------------------------------------------------------


def _on_grid(curve: np.ndarray, hop: float, m: int, fill: float = 0.0,
             nearest: bool = False) -> np.ndarray:
    """Resample a hop-rate curve to the internal ``_RATE`` grid of ``m`` samples (linear, or
    the hop that holds each instant when ``nearest``); past the end reads ``fill``."""
    curve = np.nan_to_num(np.asarray(curve, np.float64).reshape(-1), nan=fill)
    if curve.size == 0:
        return np.full(m, fill)
    t = np.arange(m) / _RATE
    if nearest:
        idx = np.floor(t / hop).astype(np.int64)
        return np.where(idx < curve.size, curve[np.minimum(idx, curve.size - 1)], fill)
    src = (np.arange(curve.size) + 0.5) * hop
    return np.interp(t, src, curve, left=curve[0], right=fill)


def _phrase_ends(activity: np.ndarray, min_pause: float = 0.25) -> np.ndarray:
    """Times (s) where speech stops for at least ``min_pause`` (internal grid)."""
    quiet = activity < 0.5
    if not quiet.any() or quiet.all():
        return np.zeros(0)
    padded = np.concatenate([[False], quiet, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[0::2], edges[1::2]
    # A pause that runs to the end of the clip counts whatever its length.
    long_enough = ((ends - starts) / _RATE >= min_pause) | (ends >= quiet.size)
    keep = (starts > 0) & long_enough
    return starts[keep] / _RATE


# ------------------------------------------------------------------------------------------------
# Blinks
# ------------------------------------------------------------------------------------------------


def _blink_times(rng: np.random.Generator, duration: float, rate: float,
                 phrase_ends: np.ndarray) -> list[float]:
    """Start times (s) of blinks over ``duration`` seconds at ``rate`` blinks per minute."""
    if rate <= 0 or duration <= 0:
        return []
    mean_interval = 60.0 / rate
    # Double blinks add blinks: lengthen the mean interval between blink events to compensate.
    event_mean = mean_interval * (1.0 + _DOUBLE_BLINK_P)
    refractory = min(_BLINK_REFRACTORY, 0.35 * event_mean)
    gamma_scale = (event_mean - refractory) / _BLINK_GAMMA_SHAPE
    times: list[float] = []
    # The first blink comes after a uniform share of one interval (no blink at the very start).
    t = 0.3 + rng.uniform(0.0, 1.0) * (refractory + rng.gamma(_BLINK_GAMMA_SHAPE, gamma_scale))
    while t < duration:
        # The same draws every step keep the stream aligned whatever the branches do.
        u_snap, snap_delay = rng.uniform(), rng.uniform(0.05, 0.25)
        u_double, gap = rng.uniform(), rng.uniform(*_DOUBLE_BLINK_GAP)
        start = t
        if phrase_ends.size and u_snap < _PAUSE_SNAP_P:
            end = float(phrase_ends[np.argmin(np.abs(phrase_ends - t))])
            if abs(end - t) <= _PAUSE_SNAP:
                start = end + snap_delay
        if not times or start - times[-1] >= refractory:
            times.append(start)
            if u_double < _DOUBLE_BLINK_P:
                times.append(start + gap)
        t = max(t, times[-1] if times else t) + refractory + rng.gamma(_BLINK_GAMMA_SHAPE, gamma_scale)
    return [s for s in times if s < duration]


def _blink_curve(starts: list[float], n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame: each blink reaches exactly 1.0 on at least one frame."""
    out = np.zeros(n_frames)
    t = np.arange(n_frames) / fps
    for start in starts:
        jitter = rng.uniform(0.9, 1.1, size=3)
        close, hold, opening = _BLINK_CLOSE * jitter[0], _BLINK_HOLD * jitter[1], _BLINK_OPEN * jitter[2]
        # The closed phase begins on a frame, so the frame samples the fully closed lid.
        k = int(math.ceil((start + close) * fps - 1e-9))
        top0 = k / fps
        top1 = top0 + hold
        lo, hi = top0 - close, top1 + opening
        i0, i1 = max(0, int(math.floor(lo * fps))), min(n_frames, int(math.ceil(hi * fps)) + 1)
        if i0 >= i1:
            continue
        tt = t[i0:i1]
        v = np.zeros_like(tt)
        closing = (tt > lo) & (tt < top0)
        x = (tt[closing] - lo) / close
        v[closing] = x * x * (3 - 2 * x)                 # smoothstep: eyelid accelerates down
        v[(tt >= top0) & (tt <= top1)] = 1.0
        opening_m = (tt > top1) & (tt < hi)
        x = (tt[opening_m] - top1) / opening
        v[opening_m] = (1 - x) ** 2                       # fast start, slow end of the opening
        out[i0:i1] = np.maximum(out[i0:i1], v)
    return out


# ------------------------------------------------------------------------------------------------
# Head, brows, breathing, gaze on the internal grid
# ------------------------------------------------------------------------------------------------


def _band_noise(rng: np.random.Generator, m: int, sigma_s: float) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed by a Gaussian kernel of ``sigma_s`` seconds."""
    sigma = sigma_s * _RATE
    pad = int(4 * sigma) + 1
    white = rng.standard_normal(m + 2 * pad)
    smooth = gaussian_smooth(white, sigma)[pad:pad + m]
    # Variance of white noise through a normalised Gaussian kernel: 1 / (2 sigma sqrt(pi)).
    return smooth * math.sqrt(2.0 * sigma * math.sqrt(math.pi))


def _soft_limit(x: np.ndarray, limit: float) -> np.ndarray:
    """Smoothly bound ``x`` to (-limit, limit) (identity for small values)."""
    return limit * np.tanh(x / limit)


def _prosody(loud: np.ndarray, pitch_hz: np.ndarray, act: np.ndarray,
             ref: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nod (degrees, chin down) and brow raise ([0, 1]) curves from loudness and pitch accents;
    ``ref`` is the speaker's reference pitch (Hz; by default the median voiced pitch, 0 = no
    brow raises)."""
    m = loud.shape[0]
    nod = np.zeros(m)
    # Phrase-level stresses, not every syllable: smooth over ~syllable length, space the nods.
    loud_s = gaussian_smooth(loud * (act > 0.5), 0.08 * _RATE)
    peaks, props = find_peaks(loud_s, prominence=_NOD_PROMINENCE, distance=int(_NOD_SPACING * _RATE))
    kernel_len = int(_NOD_LEN * _RATE)
    kernel = np.hanning(kernel_len + 2)[1:-1]
    onset = int(0.12 * _RATE)          # the nod starts a little before the accent's peak
    for p, prom in zip(peaks, props["prominences"]):
        strength = min(1.0, prom / 0.4)
        a = p - onset
        lo, hi = max(0, a), min(m, a + kernel_len)
        if lo < hi:
            nod[lo:hi] += _NOD_DEG * strength * kernel[lo - a:hi - a]
    # Pitch accents: semitones above the speaker's median voiced pitch raise the brows.
    voiced = (pitch_hz > 40) & (act > 0.5)
    brow = np.zeros(m)
    if ref is None and voiced.sum() >= 10:
        ref = float(np.median(pitch_hz[voiced]))
    if ref:
        brow = brow_raise(pitch_hz, act, ref)
    return nod, np.clip(brow, 0.0, 1.0)


def brow_raise(pitch_hz: np.ndarray, act: np.ndarray, ref: float) -> np.ndarray:
    """Brow raise on the internal grid from pitch accents (semitones above ``ref`` Hz while
    voiced): :func:`brow_follow` of :func:`brow_target`."""
    return brow_follow(brow_target(pitch_hz, act, ref))


def brow_target(pitch_hz: np.ndarray, act: np.ndarray, ref: float) -> np.ndarray:
    """How far the brows want to rise, per grid sample. A stretch of the grid computed with
    :data:`BROW_MARGIN` samples of context on both sides equals the whole curve's."""
    voiced = (pitch_hz > 40) & (act > 0.5)
    st = np.zeros(pitch_hz.shape[0])
    st[voiced] = 12.0 * np.log2(pitch_hz[voiced] / ref)
    st = gaussian_smooth(st, 0.05 * _RATE)
    return np.clip((st - 1.5) / 4.0, 0.0, 1.0) * voiced


def brow_follow(target: np.ndarray, initial: float = 0.0) -> np.ndarray:
    """The brows' rise and fall towards ``target`` (``initial``: the value before it, so a
    curve can be made stretch by stretch)."""
    return attack_release(target, _RATE, 0.08, 0.35, initial=initial)


#: Grid samples of context :func:`brow_raise` needs on each side (its smoothing's reach).
BROW_MARGIN = int(4 * 0.05 * _RATE + 0.5) + 1


def _breathing(rng: np.random.Generator, m: int, act: np.ndarray | None) -> np.ndarray:
    """``breath`` in [-1, 1] on the internal grid (-cos of a phase that advances at the rate)."""
    f0 = rng.uniform(*_BREATH_HZ)
    jitter = 1.0 + 0.08 * _band_noise(rng, m, 2.0)
    amp = _BREATH_AMP * (1.0 + 0.08 * _band_noise(rng, m, 3.0))
    phase0 = rng.uniform(0.0, 2 * math.pi)
    speaking = (act > 0.5).tolist() if act is not None else [False] * m
    rates = (f0 * np.clip(jitter, 0.5, 1.5) * 2 * math.pi / _RATE).tolist()
    out = [0.0] * m
    phase = phase0
    two_pi = 2 * math.pi
    for i in range(m):
        inhaling = (phase % two_pi) < math.pi
        if speaking[i]:
            # Speech is exhaled: the exhalation slows over the phrase; an inhalation in progress
            # when speech starts finishes quickly.
            step = rates[i] * (1.6 if inhaling else 0.35)
        elif act is not None:
            # In pauses a breath is taken: a normal inhalation, a brisk end of the exhalation.
            step = rates[i] * (1.0 if inhaling else 1.4)
        else:
            step = rates[i]
        phase += step
        out[i] = -math.cos(phase)
    return np.clip(np.asarray(out) * amp, -1.0, 1.0)


def _gaze(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical gaze offsets (positive = subject's left / up) on the internal grid."""
    h = np.zeros(m)
    v = np.zeros(m)
    duration = m / _RATE
    t = rng.uniform(0.5, 2.5)
    cur_h = cur_v = 0.0
    while t < duration:
        if cur_h == 0.0 and cur_v == 0.0:
            cur_h = rng.uniform(-1, 1) * _GAZE_H
            cur_v = rng.uniform(-1, 1) * _GAZE_V
        else:
            # Mostly back to the camera, sometimes straight to another point.
            back = rng.uniform() < 0.7
            nh, nv = rng.uniform(-1, 1) * _GAZE_H, rng.uniform(-1, 1) * _GAZE_V
            cur_h, cur_v = (0.0, 0.0) if back else (nh, nv)
        i = int(t * _RATE)
        h[i:] = cur_h
        v[i:] = cur_v
        t += _GAZE_INTERVAL[0] + rng.gamma(2.0, _GAZE_INTERVAL[1] / 2.0)
    # Saccades take ~40 ms: a short smoothing keeps them quick but not instantaneous.
    return gaussian_smooth(h, 0.015 * _RATE), gaussian_smooth(v, 0.015 * _RATE)


def idle_track(n_frames: int, fps: float, *, seed: int = 0, speech: Speech | None = None,
               head_motion_scale: float = 1.0, blink_rate: float | None = None,
               expression_scale: float = 1.0) -> MotionTrack:
    """Idle life for ``n_frames`` frames at ``fps``: blinks, head motion, brows, breathing, gaze.

    Args:
        n_frames: number of frames.
        fps: frame rate.
        seed: seeds every random choice; the same seed gives identical values.
        speech: when given, blinks gather at phrase ends, the head moves more while speaking,
            loudness accents nod, pitch accents raise the brows, and breathing follows the pauses.
        head_motion_scale: multiplies the head channels (0 freezes the head).
        blink_rate: blinks per minute (default :data:`DEFAULT_BLINK_RATE`); 0 disables blinks.
        expression_scale: multiplies the brow raises.

    Returns:
        A :class:`MotionTrack` with the channels of :data:`IDLE_CHANNELS`, float32.

    Raises:
        InvalidOption: for negative scales, a blink rate outside [0, 60] or a bad fps or seed.
    """
    n_frames, fps, seed, head_scale, rate, expr_scale = _validate(
        n_frames, fps, seed, head_motion_scale, blink_rate, expression_scale)
    duration = n_frames / fps
    m = int(math.ceil(duration * _RATE)) + 2

    if speech is not None:
        hop = float(speech.hop)
        act = _on_grid(speech.activity, hop, m)
        loud = _on_grid(speech.loudness, hop, m)
        # Pitch is 0 where unvoiced: no interpolation across voicing edges.
        pitch_hz = _on_grid(speech.pitch, hop, m, nearest=True)
    else:
        act = loud = pitch_hz = None

    # Blinks.
    rng_b = _rng(seed, _STREAM_BLINK)
    ends = _phrase_ends(act) if act is not None else np.zeros(0)
    starts = _blink_times(rng_b, duration, rate, ends)
    blink = _blink_curve(starts, n_frames, fps, rng_b)

    # Head: slow drift + faster sway, more energy while speaking, then prosodic nods.
    rng_h = _rng(seed, _STREAM_HEAD)
    speaking = gaussian_smooth(act, 0.4 * _RATE) if act is not None else np.zeros(m)
    gain = 1.0 + _SPEAK_GAIN * np.clip(speaking, 0.0, 1.0)
    head: dict[str, np.ndarray] = {}
    for name in HEAD_CHANNELS:
        noise = (math.sqrt(_DRIFT_SHARE) * _band_noise(rng_h, m, _DRIFT_SIGMA)
                 + math.sqrt(1 - _DRIFT_SHARE) * _band_noise(rng_h, m, _SWAY_SIGMA))
        head[name] = noise * _HEAD_STD[name] * gain
    if act is not None:
        nod, brow = _prosody(loud, pitch_hz, act, speech.meta.get("pitch_ref_hz"))
        head["pitch"] = head["pitch"] + nod
    else:
        brow = np.zeros(m)
    for name in head:
        head[name] = _soft_limit(head[name], _HEAD_LIMIT[name]) * head_scale
    head["scale"] = head["scale"] + 1.0

    breath = _breathing(_rng(seed, _STREAM_BREATH), m, act)
    gaze_h, gaze_v = _gaze(_rng(seed, _STREAM_GAZE), m)

    # Resample the smooth internal-grid curves to the frame times.
    grid_t = np.arange(m) / _RATE
    frame_t = np.arange(n_frames) / fps

    def at_frames(x: np.ndarray) -> np.ndarray:
        return np.interp(frame_t, grid_t, x)

    cols: dict[str, np.ndarray] = {name: at_frames(head[name]) for name in HEAD_CHANNELS}
    cols["eyeBlinkLeft"] = blink
    cols["eyeBlinkRight"] = blink
    gh, gv = at_frames(gaze_h), at_frames(gaze_v)
    left, right = np.clip(gh, 0, None), np.clip(-gh, 0, None)   # subject's left / right
    up, down = np.clip(gv, 0, None), np.clip(-gv, 0, None)
    cols["eyeLookUpLeft"] = cols["eyeLookUpRight"] = up
    cols["eyeLookDownLeft"] = cols["eyeLookDownRight"] = down
    # Looking to the subject's left: the left eye turns out, the right eye turns in.
    cols["eyeLookOutLeft"], cols["eyeLookInRight"] = left, left
    cols["eyeLookInLeft"], cols["eyeLookOutRight"] = right, right
    brow_f = np.clip(at_frames(brow) * _BROW_MAX * expr_scale, 0.0, 1.0)
    cols["browInnerUp"] = brow_f
    cols["browOuterUpLeft"] = cols["browOuterUpRight"] = 0.7 * brow_f
    cols["breath"] = at_frames(breath)

    values = np.stack([cols[c] for c in IDLE_CHANNELS], axis=1) if n_frames else \
        np.zeros((0, len(IDLE_CHANNELS)))
    meta = {"generator": "idle", "seed": seed, "blink_rate": rate, "blinks": len(starts),
            "head_motion_scale": head_scale, "expression_scale": expr_scale}
    return MotionTrack(fps=fps, channels=list(IDLE_CHANNELS), values=values.astype(np.float32),
                       meta=meta)

