"""Arm and hand gestures: beat gestures from the speech, and the body actions of a prompt.

**Speech gestures** (:func:`speech_gestures`). Speakers move their hands in *phrases*: the
hands rise into the gesture space when a phrase starts, make short down-strokes (*beats*) on
stressed syllables, and sink back to rest in pauses. From the :class:`~echomimic.types.Speech`:

* phrases are the runs of speech activity; pauses of 0.3 s or more end them;
* beats are the phrase starts and the loudness peaks (stressed syllables: loud, voiced, rising
  pitch ranks a peak higher) at least a random 0.3–0.8 s apart, so the rhythm is never
  periodic; each beat's stroke grows with the loudness at its time;
* each phrase picks its hands (right, left or both), its height and its spread at random,
  from ``seed``; in pauses longer than about half a second the hands settle at rest;
* ``scale`` multiplies everything (0 gives exactly zero: still arms).

**Body actions** (:data:`BODY_ACTIONS`, :func:`body_action`): wave, raise a hand, open palms,
point left/right/forward, shrug, hands together, thumbs up. Each is a target pose of the arm
relative to its shoulder, in shoulder widths, turned into displacements from the photo's own
skeleton (or, without one, from a standard half-body rest pose). Left and right are the
viewer's, as everywhere in prompts: "waves with the right hand" moves the hand on the image's
right (the person's left hand).

All channels are :data:`~echomimic.types.BODY_CHANNELS` (displacements in shoulder widths).
"""

from __future__ import annotations

import numpy as np

from ..types import MotionTrack, Speech

__all__ = ["speech_gestures", "body_action", "BODY_ACTIONS", "REST_SKELETON"]

#: A standard half-body rest pose (arms hanging), in shoulder widths from the neck, image
#: coordinates (x right, y down); "r_" is the person's right (image left).
REST_SKELETON: dict[str, tuple[float, float]] = {
    "r_shoulder": (-0.5, 0.05), "r_elbow": (-0.62, 0.85), "r_wrist": (-0.6, 1.55),
    "l_shoulder": (0.5, 0.05), "l_elbow": (0.62, 0.85), "l_wrist": (0.6, 1.55),
}

_ARM_JOINTS = ("shoulder", "elbow", "wrist")
#: farthest a body action moves a joint from the photo's pose (shoulder widths)
MAX_ACTION_REACH = 0.6


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma, mode="nearest") if sigma > 0 else x


def _resample(values: np.ndarray, hop: float, n_frames: int, fps: float) -> np.ndarray:
    t = np.arange(n_frames) / fps
    src_t = (np.arange(len(values)) + 0.5) * hop
    if len(values) == 0:
        return np.zeros(n_frames)
    return np.interp(t, src_t, values)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    out, i, n = [], 0, len(mask)
    while i < n:
        if mask[i]:
            j = i
            while j < n and mask[j]:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def speech_gestures(speech: Speech, n_frames: int, fps: float, *, seed: int = 0,
                    scale: float = 1.0) -> MotionTrack:
    """Beat gestures of both arms for ``speech`` (see the module's description).

    Returns a track of the arm channels (shoulders, elbows, wrists, hands' middle knuckle) at
    ``fps``; with ``scale`` 0 every value is exactly 0.
    """
    fps = float(fps)
    n_frames = int(n_frames)
    chans = [f"body.{s}_{j}.{a}" for s in ("r", "l") for j in _ARM_JOINTS for a in ("x", "y")]
    vals = np.zeros((n_frames, len(chans)), np.float64)
    meta = {"generator": "speech-gestures", "seed": int(seed), "scale": float(scale)}
    if scale == 0 or n_frames == 0 or speech is None or speech.n == 0:
        return MotionTrack(fps=fps, channels=chans, values=vals.astype(np.float32), meta=meta)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x6E57])
    hop = float(speech.hop)
    act = np.asarray(speech.activity, np.float64)
    loud = np.asarray(speech.loudness, np.float64)
    pitch = np.asarray(speech.pitch, np.float64)
    # phrases: activity runs, pauses shorter than 0.8 s bridged (the hands stay up through them)
    on = _smooth(act, 0.03 / hop) >= 0.5
    gap = int(round(0.8 / hop))
    runs = _runs(on)
    phrases: list[list[int]] = []
    for a, b in runs:
        if phrases and a - phrases[-1][1] < gap:
            phrases[-1][1] = b
        else:
            phrases.append([a, b])
    phrases = [p for p in phrases if (p[1] - p[0]) * hop >= 0.2]
    # stress: smoothed loudness, boosted where voiced with rising pitch
    ls = _smooth(loud, 0.03 / hop)
    lp = np.log(np.maximum(pitch, 1.0))
    rise = np.clip(np.gradient(_smooth(np.where(pitch > 0, lp, 0.0), 0.04 / hop)) / hop, 0, 3)
    stress = ls * (1.0 + 0.15 * rise) * (pitch > 0).astype(np.float64) + 0.3 * ls
    peak_level = float(np.percentile(ls[on], 90)) if on.any() else 1.0
    peak_level = max(peak_level, 1e-3)

    t = np.arange(n_frames) / fps
    # per arm: lift (phrase level) and strokes (beats), in the arm's own outward/up frame
    lift = np.zeros((2, n_frames))
    spread = np.zeros((2, n_frames))
    stroke = np.zeros((2, n_frames))
    sway = np.zeros((2, n_frames))
    for a, b in phrases:
        t0, t1 = a * hop, b * hop
        hands = rng.choice(3, p=[0.35, 0.3, 0.35])          # 0 right, 1 left, 2 both
        use = [hands in (0, 2), hands in (1, 2)]
        seg = stress[a:b]
        level = float(np.clip(np.percentile(seg, 80) / peak_level, 0.3, 1.3))
        height = rng.uniform(0.18, 0.32) * (0.7 + 0.3 * level)
        out = rng.uniform(-0.1, 0.15)
        # phrase envelope: the hands rise with the first syllables and, once the phrase is
        # over, stay a moment and then settle slowly (a settling hand is calm, not a gesture)
        att, hold, rel = 0.35, 0.15, 1.0
        env = np.clip(np.minimum((t - (t0 + 0.05)) / att, ((t1 + hold + rel) - t) / rel), 0, 1)
        env = env * env * (3 - 2 * env)
        # beats: the phrase start, then stress peaks a random 0.3-0.8 s apart
        beats = [(t0 + 0.35, max(level, 0.6))] if t1 - t0 > 0.6 else []
        i = a
        nxt = t0 + rng.uniform(0.3, 0.8)
        while True:
            i = int(round(nxt / hop))
            if i >= b - int(round(0.25 / hop)):
                break
            w = int(round(0.25 / hop))
            lo, hi = i, min(b, i + w)
            j = lo + int(np.argmax(stress[lo:hi]))
            strength = float(stress[j] / peak_level)
            if strength > 0.35:
                beats.append((j * hop, min(strength, 1.5)))
            nxt = j * hop + rng.uniform(0.3, 0.8)
        for k in range(2):
            if not use[k]:
                continue
            lift[k] = np.maximum(lift[k], env * height)
            spread[k] += env * out
            for tb, s in beats:
                amp = s * rng.uniform(0.16, 0.26)
                width = rng.uniform(0.13, 0.2)
                # a down-stroke that lands on the beat and recovers: a smooth bump, only while
                # the hands are up (never in a pause)
                u = (t - tb) / width
                stroke[k] += env * amp * np.exp(-0.5 * (u + 0.4) ** 2) * (1.0 + 0.4 * np.tanh(u))
                sway[k] += env * amp * rng.uniform(-0.6, 0.6) * np.exp(-0.5 * ((t - tb) / (1.5 * width)) ** 2)
    # strokes only while a syllable is heard (a bridged pause keeps the hands up, still)
    sp_s = _smooth(on.astype(np.float64), 0.03 / hop)
    sh = int(round(0.08 / hop))
    inner = np.minimum(np.concatenate([np.zeros(sh), sp_s[:-sh]]), np.concatenate([sp_s[sh:], np.zeros(sh)]))
    speaking = _resample(inner, hop, n_frames, fps)
    stroke *= speaking
    sway *= speaking
    for k, side in enumerate(("r", "l")):
        outward = -1.0 if side == "r" else 1.0
        wx = outward * spread[k] + sway[k]
        wy = -lift[k] + stroke[k]
        ex = outward * 0.5 * np.maximum(spread[k], 0) + 0.25 * sway[k]
        ey = -0.25 * lift[k] + 0.3 * stroke[k]
        sy = -0.03 * lift[k]
        cols = {f"body.{side}_wrist.x": wx, f"body.{side}_wrist.y": wy,
                f"body.{side}_elbow.x": ex, f"body.{side}_elbow.y": ey,
                f"body.{side}_shoulder.y": sy}
        for c, v in cols.items():
            vals[:, chans.index(c)] = v
    vals *= float(scale)
    return MotionTrack(fps=fps, channels=chans, values=vals.astype(np.float32), meta=meta)


# ------------------------------------------------------------------------------------------
# prompt body actions
# ------------------------------------------------------------------------------------------

#: Body actions for prompts: name -> (kind, seconds per repetition or hold, {}), the layout of
#: :data:`echomimic.motion.prompt.ACTIONS` (kind "body": the motion comes from :func:`body_action`).
BODY_ACTIONS: dict[str, tuple[str, float, dict[str, float]]] = {
    "wave": ("body", 2.4, {}),
    "raise_hand": ("body", 2.0, {}),
    "open_palms": ("body", 2.0, {}),
    "point": ("body", 1.8, {}),
    "shrug": ("body", 1.4, {}),
    "hands_together": ("body", 2.2, {}),
    "thumbs_up": ("body", 2.0, {}),
}

# Target poses relative to the shoulder, in shoulder widths, for the person's RIGHT arm (on the
# image's left: outward is -x); the left arm mirrors x. (elbow, wrist)
_POSES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "wave": ((-0.42, 0.62), (-0.78, -0.05)),
    "raise_hand": ((-0.35, 0.62), (-0.55, -0.12)),
    "open_palms": ((-0.28, 0.8), (-0.82, 1.0)),
    "point_out": ((-0.55, 0.5), (-1.1, 0.55)),
    "point_forward": ((-0.2, 0.78), (0.2, 0.95)),
    "shrug": ((-0.14, 0.82), (-0.62, 1.05)),
    "hands_together": ((-0.12, 0.85), (0.45, 1.05)),
    "thumbs_up": ((-0.1, 0.85), (0.25, 0.5)),
}


def _hold(t: np.ndarray, start: float, end: float, ramp: float = 0.4) -> np.ndarray:
    ramp = min(ramp, 0.35 * max(end - start, 1e-3))
    e = np.clip(np.minimum((t - start) / ramp, (end - t) / ramp), 0, 1)
    return e * e * (3 - 2 * e)


def _rest_of(rest: dict[str, np.ndarray] | None, side: str) -> dict[str, np.ndarray]:
    """Rest positions of one arm's joints relative to its shoulder (shoulder widths)."""
    src = rest if rest is not None else {k: np.array(v) for k, v in REST_SKELETON.items()}
    s = np.asarray(src[f"{side}_shoulder"], np.float64)
    return {j: np.asarray(src[f"{side}_{j}"], np.float64) - s for j in _ARM_JOINTS}


def body_action(name: str, side: str | None, t: np.ndarray, start: float, end: float,
                count: int = 1, strength: float = 1.0,
                rest: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Channel offsets (body channels -> arrays over ``t``) of one body action.

    ``side`` is the viewer's ``"left"`` / ``"right"`` (for ``point`` also ``"forward"``), or
    None for the action's usual hand(s). ``rest`` maps ``r_shoulder`` … ``l_wrist`` to the
    photo's rest positions in shoulder widths (any common origin); without it a standard
    hanging-arms pose is assumed.
    """
    env = _hold(t, start, end)
    s = float(np.clip(strength, 0.3, 1.5))
    # which arms: the viewer's right is the person's left ("l")
    person = {"left": "r", "right": "l"}
    if name in ("open_palms", "shrug", "hands_together"):
        arms = ["r", "l"]
    elif name == "point":
        if side in ("left", "right"):
            arms = [person[side]]
        else:
            arms = ["l"]
    else:
        arms = [person.get(side or "right", "l")]
    key = name
    if name == "point":
        key = "point_forward" if side not in ("left", "right") else "point_out"
    out: dict[str, np.ndarray] = {}
    for arm in arms:
        r = _rest_of(rest, arm)
        mirror = 1.0 if arm == "r" else -1.0
        elbow, wrist = _POSES[key]
        targets = {"elbow": np.array([elbow[0] * mirror, elbow[1]]),
                   "wrist": np.array([wrist[0] * mirror, wrist[1]])}
        if key == "point_out" and side is not None:
            # point towards the named side of the image whichever arm does it
            d = -1.0 if side == "left" else 1.0
            targets = {"elbow": np.array([0.55 * d, 0.5]), "wrist": np.array([1.1 * d, 0.55])}
        for j, tgt in targets.items():
            disp = (tgt - r[j]) * s if s < 1 else (tgt - r[j])
            # the photo's pixels can only go so far: a pose far from the photo's is approached
            # (at most MAX_ACTION_REACH shoulder widths), not reached
            norm = float(np.hypot(*disp))
            if norm > MAX_ACTION_REACH:
                disp = disp * (MAX_ACTION_REACH / norm)
            out[f"body.{arm}_{j}.x"] = out.get(f"body.{arm}_{j}.x", 0.0) + disp[0] * env
            out[f"body.{arm}_{j}.y"] = out.get(f"body.{arm}_{j}.y", 0.0) + disp[1] * env
        if name == "wave":
            # the hand swings side to side about the raised pose: count waves of ~0.55 s
            n = max(2, 3 * int(count))
            span = max(end - start - 0.6, 0.3)
            u = np.clip((t - start - 0.3) / span, 0, 1)
            swing = 0.2 * s * np.sin(2 * np.pi * n * u) * env
            out[f"body.{arm}_wrist.x"] = out[f"body.{arm}_wrist.x"] + swing
            out[f"body.{arm}_wrist.y"] = out[f"body.{arm}_wrist.y"] - 0.03 * np.abs(swing)
    if name == "shrug":
        for arm in ("r", "l"):
            out[f"body.{arm}_shoulder.y"] = -0.12 * s * env
    return {k: np.asarray(v, np.float64) * np.ones_like(t) for k, v in out.items()}
