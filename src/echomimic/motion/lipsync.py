"""Lip-sync: speech articulation targets (10 ms hop) -> mouth and jaw blendshapes per video frame.

The speech stage gives, per hop, targets for how open, rounded, spread, bilabially closed and
labiodental the mouth is *when the sound is heard*. This module turns them into motion:

1. **Lead.** Real mouths move before the sound they make (the lips close before a /p/ is heard,
   the jaw opens before the vowel). Targets are read ``lead`` seconds early (40 ms by default),
   plus the delay of the dynamics below, so each shape is reached ``lead`` before its sound.
2. **Coarticulation.** The continuous targets (open, round, spread, labiodental) drive a
   critically damped second-order system (two identical one-pole stages) with separate rise and
   fall time constants: the mouth moves smoothly between shapes, never jumps, and neighbouring
   sounds blend into each other.
3. **Closures.** Bilabial closures (p, b, m) are short and would be smoothed away by (2), so they
   are drawn separately as a closure gate: a smooth trapezoid per closure that reaches full
   closure over at least one whole video frame, and that multiplies the opening away.
4. **Rest.** Outside speech the mouth is firmly closed: the closure gate covers silence, and in
   pauses longer than 300 ms every mouth channel is exactly at rest.
5. **Resampling.** Each video frame averages the hop values over its own time window (a box
   filter, anti-aliased), instead of sampling one instant.

Channels (all ARKit blendshapes in [0, 1]): ``jawOpen``, ``mouthClose``, ``mouthFunnel``,
``mouthPucker``, ``mouthStretchLeft/Right``, ``mouthSmileLeft/Right``, ``mouthPressLeft/Right``,
``mouthRollLower``, ``mouthUpperUpLeft/Right``, ``mouthLowerDownLeft/Right``.
"""

from __future__ import annotations

import math

import numpy as np

from echomimic.errors import InvalidOption
from echomimic.motion.smoothing import attack_release, gaussian_smooth
from echomimic.types import ARTICULATION_KEYS, MotionTrack, Speech

__all__ = ["lipsync_track", "LIPSYNC_CHANNELS"]

#: Channels produced by :func:`lipsync_track`, in this order.
LIPSYNC_CHANNELS: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthStretchLeft", "mouthStretchRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthPressLeft", "mouthPressRight", "mouthRollLower",
    "mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight",
)

#: Value of each channel with the mouth at rest (closed, relaxed).
_REST: dict[str, float] = {c: 0.0 for c in LIPSYNC_CHANNELS}
_REST["mouthClose"] = 1.0

# Dynamics of the continuous targets: each of the two cascaded stages has these time constants.
_ATTACK = 0.014   # s, moving towards a larger value (opening, rounding, spreading)
_RELEASE = 0.024  # s, relaxing back
#: The two stages delay a rising target by about 2 * _ATTACK; the targets are read that much
#: earlier on top of ``lead`` so the shape is reached ``lead`` before the sound.
_DYNAMICS_DELAY = 2 * _ATTACK
#: With exact phone timing (spoken text, an aligned transcript) there is no recognition noise to
#: smooth away: faster dynamics keep short syllables (Japanese morae, Cantonese) distinct.
_ATTACK_EXACT = 0.008
_RELEASE_EXACT = 0.012
_EXACT_METHODS = ("tts-events", "transcript")

# Closure gate.
_CLOSE_THRESHOLD = 0.5   # a "close" target at or above this is a closure
_CLOSE_RAMP = 0.030      # s, duration of the smooth closing / opening ramps of the lips
_SILENCE_CLOSE_DELAY = 0.040  # s after the sound ends, the lips are sealed
_SILENCE_RAMP = 0.060    # s, duration of the relaxed closing ramp into silence
_BILABIAL_MAX = 0.25     # s, closures shorter than this are consonants (pressed lips)

# Rest in pauses.
_PAUSE_MIN = 0.30        # s, pauses at least this long hold the mouth exactly at rest
_PAUSE_SETTLE = 0.070    # s, time to settle at rest after a pause begins / before it ends

# Mapping gains (targets in [0, 1] -> blendshapes).
_JAW_MAX = 0.72          # jawOpen ceiling at ordinary loudness (the renderer's 1 is wide open)
_JAW_KNEE = 0.8          # soft knee: open target 1 -> 0.92, 0.6 -> 0.63, 0.3 -> 0.33 (x _JAW_MAX)
_LOUD_BASE = 0.9         # jaw scale at the quietest speech ...
_LOUD_GAIN = 0.15        # ... plus this much at the loudest
_LABIO_SHUT = 0.7        # share of the jaw opening a full labiodental (f, v) takes away
_LOWER_DOWN = 0.35
_FUNNEL = 0.60
_PUCKER = 0.70
_STRETCH = 0.50
_SMILE = 0.18
_PRESS = 0.45
_ROLL_LOWER = 0.55
_UPPER_UP = 0.30

_MAX_LEAD = 0.5


def _validate(n_frames: int, fps: float, expression_scale: float, lead: float) -> tuple[int, float, float, float]:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
        raise InvalidOption(f"n_frames must be a non-negative integer, got {n_frames!r}")
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidOption(f"fps must be a positive number, got {fps!r}")
    expression_scale = float(expression_scale)
    if not math.isfinite(expression_scale) or expression_scale < 0:
        raise InvalidOption(f"expression_scale must be a non-negative number, got {expression_scale!r}")
    lead = float(lead)
    if not math.isfinite(lead) or abs(lead) > _MAX_LEAD:
        raise InvalidOption(f"lead must be a number of seconds within ±{_MAX_LEAD}, got {lead!r}")
    return int(n_frames), fps, expression_scale, lead


def _speech_arrays(speech: Speech) -> tuple[float, dict[str, np.ndarray]]:
    """The per-hop curves of ``speech`` as float64 arrays of one common length (NaN -> rest)."""
    hop = float(speech.hop)
    if not math.isfinite(hop) or hop <= 0:
        raise ValueError(f"speech.hop must be positive, got {speech.hop!r}")
    act = np.asarray(speech.activity, np.float64).reshape(-1)
    n = act.shape[0]
    curves: dict[str, np.ndarray] = {"activity": act}
    loud = np.asarray(speech.loudness, np.float64).reshape(-1) if speech.loudness is not None else None
    curves["loudness"] = loud if loud is not None and loud.shape[0] == n else np.zeros(n)
    art = speech.articulation or {}
    for key in ARTICULATION_KEYS:
        if key in art:
            arr = np.asarray(art[key], np.float64).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"speech.articulation[{key!r}] has {arr.shape[0]} values, "
                                 f"activity has {n}")
        elif key == "close":
            arr = (act < 0.5).astype(np.float64)   # closed outside speech
        else:
            arr = np.zeros(n)
        curves[key] = arr
    rest = {"activity": 0.0, "loudness": 0.0, "close": 1.0}
    for key, arr in curves.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            arr = arr.copy()
            arr[bad] = rest.get(key, 0.0)
        curves[key] = np.clip(arr, 0.0, 1.0)
    return hop, curves


def _shifted(curve: np.ndarray, hop: float, m: int, shift: float, rest: float) -> np.ndarray:
    """Sample ``curve`` (hop centres) at the centres of ``m`` hops, ``shift`` seconds later.

    Times past the end of the speech read ``rest``; times before its start read the first value.
    """
    n = curve.shape[0]
    t = (np.arange(m) + 0.5) * hop + shift
    if n == 0:
        return np.full(m, rest)
    src_t = (np.arange(n) + 0.5) * hop
    # One extra rest sample half a hop past the end makes the last hop's value hold over its span
    # and then fall to rest.
    src_t = np.append(src_t, (n + 0.5) * hop)
    src_v = np.append(curve, rest)
    return np.interp(t, src_t, src_v, left=curve[0], right=rest)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges [start, end) where ``mask`` is True."""
    if mask.size == 0:
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _trapezoid(t: np.ndarray, a: float, b: float, ramp: float) -> np.ndarray:
    """1 on [a, b], 0 outside [a - ramp, b + ramp], raised-cosine ramps in between."""
    out = np.zeros_like(t)
    inside = (t >= a) & (t <= b)
    out[inside] = 1.0
    if ramp > 0:
        up = (t > a - ramp) & (t < a)
        out[up] = 0.5 - 0.5 * np.cos(np.pi * (t[up] - (a - ramp)) / ramp)
        dn = (t > b) & (t < b + ramp)
        out[dn] = 0.5 + 0.5 * np.cos(np.pi * (t[dn] - b) / ramp)
    return out


def _apply_max(target: np.ndarray, hop: float, a: float, b: float, ramp_in: float,
               ramp_out: float, peak: float) -> None:
    """``target = max(target, peak * shape)`` for a trapezoid that is 1 on [a, b], rises over
    ``ramp_in`` before ``a`` and falls over ``ramp_out`` after ``b``; only the hops it touches
    are computed."""
    m = target.shape[0]
    lo = 0 if not math.isfinite(a) else max(0, int(math.floor((a - ramp_in) / hop - 1)))
    hi = m if not math.isfinite(b) else min(m, int(math.ceil((b + ramp_out) / hop + 1)))
    if lo >= hi:
        return
    t = (np.arange(lo, hi) + 0.5) * hop
    shape = np.minimum(_trapezoid(t, a, math.inf, ramp_in), _trapezoid(t, -math.inf, b, ramp_out))
    np.maximum(target[lo:hi], peak * shape, out=target[lo:hi])


def _closure_gates(close: np.ndarray, hop: float, fps: float, lead: float) -> tuple[np.ndarray, np.ndarray]:
    """Closure gate (all closures) and bilabial gate (short closures inside speech), per hop.

    ``close`` is the lead-shifted closure target. Each run of ``close >= threshold`` becomes a
    smooth trapezoid whose flat top (value = the run's peak target) spans the run's core and, at
    least, one whole video frame window near the run's centre, so a short closure survives the
    per-frame averaging. Long runs (silence) close after the sound has ended rather than before
    it (a mouth relaxes once the sound is over) and open again ``lead`` before the next sound.
    """
    m = close.shape[0]
    gate = np.zeros(m)
    bilabial = np.zeros(m)
    frame = 1.0 / fps
    for s, e in _runs(close >= _CLOSE_THRESHOLD):
        a, b = s * hop, e * hop            # time span of the run (lead-shifted timeline)
        peak = float(close[s:e].max())
        if b - a > _BILABIAL_MAX or s == 0 or e >= m:
            # Silence: closed from _SILENCE_CLOSE_DELAY after the sound ends.
            core0 = -math.inf if s == 0 else a + lead + _SILENCE_CLOSE_DELAY
            core1 = math.inf if e >= m else b - _CLOSE_RAMP / 2
            core1 = max(core1, core0)
            _apply_max(gate, hop, core0, core1, _SILENCE_RAMP, _CLOSE_RAMP, peak)
            continue
        core0, core1 = a + _CLOSE_RAMP / 2, b - _CLOSE_RAMP / 2
        centre = 0.5 * (a + b)
        k = math.floor(centre / frame)
        # Hops are constant over their span: widen by half a hop so every hop that overlaps the
        # frame window has its centre on the flat top.
        f0, f1 = k * frame - 0.5 * hop - 1e-9, (k + 1) * frame + 0.5 * hop + 1e-9
        core0, core1 = min(core0, f0), max(core1, f1)
        _apply_max(gate, hop, core0, core1, _CLOSE_RAMP, _CLOSE_RAMP, peak)
        _apply_max(bilabial, hop, core0, core1, _CLOSE_RAMP, _CLOSE_RAMP, peak)
    # Partial closures (below the threshold) still narrow the lips, with fast dynamics.
    partial = attack_release(np.where(close < _CLOSE_THRESHOLD, close, 0.0), 1.0 / hop, 0.012, 0.025)
    np.maximum(gate, partial, out=gate)
    return gate, bilabial


def _pause_envelope(activity: np.ndarray, hop: float, m: int, lead: float) -> np.ndarray:
    """Per hop: 1 in speech, exactly 0 inside pauses of at least ``_PAUSE_MIN`` seconds.

    ``activity`` is on the sound's timeline (not shifted): the mouth is at rest from
    ``_PAUSE_SETTLE`` after a pause begins until ``lead + _PAUSE_SETTLE`` before it ends.
    """
    n = activity.shape[0]
    rest = np.zeros(m)
    quiet = np.concatenate([activity < 0.5, np.ones(max(0, m - n), bool)])
    for s, e in _runs(quiet):
        a, b = s * hop, e * hop
        if e >= m:
            b = math.inf                      # the pause runs past the end
        if b - a < _PAUSE_MIN:
            continue
        lo = -math.inf if s == 0 else a + _PAUSE_SETTLE
        hi = math.inf if e >= m else max(lo, b - lead - _PAUSE_SETTLE)
        _apply_max(rest, hop, lo, hi, _PAUSE_SETTLE, _PAUSE_SETTLE, 1.0)
    return 1.0 - rest


def _box_average(values: np.ndarray, hop: float, n_frames: int, fps: float,
                 rest: np.ndarray) -> np.ndarray:
    """Average hop-rate rows over each frame window [i/fps, (i+1)/fps) (hops are constant over
    [j*hop, (j+1)*hop)); hops past the end hold ``rest``."""
    m, k = values.shape
    if n_frames == 0:
        return np.zeros((0, k))
    t0 = np.arange(n_frames) / fps
    t1 = (np.arange(n_frames) + 1) / fps
    j0 = np.floor(t0 / hop).astype(np.int64)
    width = int(math.ceil((1.0 / fps) / hop)) + 2
    idx = j0[:, None] + np.arange(width)[None, :]                  # (n_frames, width)
    lo = np.maximum(idx * hop, t0[:, None])
    hi = np.minimum((idx + 1) * hop, t1[:, None])
    w = np.clip(hi - lo, 0.0, None)
    padded = np.vstack([values, rest[None, :]])
    src = padded[np.minimum(idx, m)]                                # (n_frames, width, k)
    return np.einsum("fw,fwk->fk", w, src) / w.sum(axis=1)[:, None]


def lipsync_track(speech: Speech, n_frames: int, fps: float, *, expression_scale: float = 1.0,
                  lead: float = 0.04) -> MotionTrack:
    """Mouth and jaw motion for ``speech``, ``n_frames`` frames at ``fps``.

    Args:
        speech: the analysed speech (articulation targets on a fixed hop, time 0 = frame 0).
        n_frames: number of video frames to produce; frames past the end of the speech are at rest.
        fps: video frame rate.
        expression_scale: multiplies the mouth motion around rest (0 = still, closed mouth;
            values above 1 exaggerate). Results are clamped to [0, 1].
        lead: seconds by which the mouth shapes precede the sound (0.04 = 40 ms).

    Returns:
        A :class:`MotionTrack` with the channels of :data:`LIPSYNC_CHANNELS`, float32.

    Raises:
        InvalidOption: for a negative scale, a non-positive fps or an out-of-range lead.
    """
    n_frames, fps, scale, lead = _validate(n_frames, fps, expression_scale, lead)
    hop, cur = _speech_arrays(speech)
    n = cur["activity"].shape[0]
    m = max(n, int(math.ceil(n_frames / fps / hop))) + 2

    # (1) Lead: targets read early. The closure gate and the pause envelope are symmetric shapes
    # without delay; the continuous targets also compensate the dynamics' delay.
    exact = speech.method in _EXACT_METHODS
    attack, release = (_ATTACK_EXACT, _RELEASE_EXACT) if exact else (_ATTACK, _RELEASE)
    early = lead + 2 * attack
    open_t = _shifted(cur["open"], hop, m, early, 0.0)
    round_t = _shifted(cur["round"], hop, m, early, 0.0)
    spread_t = _shifted(cur["spread"], hop, m, early, 0.0)
    labio_t = _shifted(cur["labiodental"], hop, m, early, 0.0)
    loud_t = _shifted(cur["loudness"], hop, m, early, 0.0)
    close_t = _shifted(cur["close"], hop, m, lead, 1.0)

    # (2) Coarticulation: critically damped (two equal one-pole stages), asymmetric.
    targets = np.stack([open_t, round_t, spread_t, labio_t], axis=1)
    rate = 1.0 / hop
    dyn = attack_release(targets, rate, attack, release, initial=0.0)
    dyn = attack_release(dyn, rate, attack, release, initial=0.0)
    o, r, p, lab = (np.clip(dyn[:, i], 0.0, 1.0) for i in range(4))
    loud = np.clip(gaussian_smooth(loud_t, 0.03 / hop), 0.0, 1.0)

    # (3) Closures and (4) rest.
    gate, bilabial = _closure_gates(close_t, hop, fps, lead)
    env = _pause_envelope(cur["activity"], hop, m, lead)
    opening = (1.0 - gate) * env            # how much the lips may part, 0 = sealed

    # Soft knee: small openings pass almost linearly, wide vowels approach _JAW_MAX.
    jaw = (_JAW_MAX * np.tanh(_JAW_KNEE * o) / math.tanh(_JAW_KNEE) * math.tanh(1.6)
           * (_LOUD_BASE + _LOUD_GAIN * loud) * (1.0 - _LABIO_SHUT * lab) * opening)
    spread_eff = p * (1.0 - r)
    deltas = {
        "jawOpen": jaw,
        "mouthClose": -(1.0 - gate) * env,   # relative to rest (1 = lips sealed)
        "mouthFunnel": _FUNNEL * r * (0.3 + 0.7 * np.minimum(1.0, o / 0.6)) * opening,
        "mouthPucker": _PUCKER * r * (1.0 - 0.6 * o) * env,
        "mouthStretchLeft": _STRETCH * spread_eff * env,
        "mouthSmileLeft": _SMILE * spread_eff * env,
        "mouthPressLeft": _PRESS * bilabial * env,
        "mouthRollLower": _ROLL_LOWER * lab * env,
        "mouthUpperUpLeft": _UPPER_UP * lab * env,
        "mouthLowerDownLeft": _LOWER_DOWN * o * (1.0 - lab) * opening,
    }
    for left in ("mouthStretch", "mouthSmile", "mouthPress", "mouthUpperUp", "mouthLowerDown"):
        deltas[left + "Right"] = deltas[left + "Left"]

    rest = np.array([_REST[c] for c in LIPSYNC_CHANNELS])
    hop_values = np.stack([_REST[c] + scale * deltas[c] for c in LIPSYNC_CHANNELS], axis=1)
    hop_values = np.clip(hop_values, 0.0, 1.0)

    # (5) Anti-aliased resampling to the video frame rate.
    frames = _box_average(hop_values, hop, n_frames, fps, rest)
    frames = np.clip(frames, 0.0, 1.0)
    meta = {"generator": "lipsync", "lead": lead, "expression_scale": scale,
            "speech_method": speech.method or ""}
    return MotionTrack(fps=fps, channels=list(LIPSYNC_CHANNELS), values=frames.astype(np.float32),
                       meta=meta)
