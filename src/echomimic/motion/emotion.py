"""Emotion: a bias of the whole clip's expression and of its head-motion energy.

``emotion_overlay`` gives an overlay track (added on top of the other sources by
:func:`echomimic.motion.mix_tracks`) that holds the emotion's expression offsets, scaled by the
intensity, on every frame; ``emotion_head_scale`` gives the factor by which the head motion of
idle life is multiplied (a happy or angry speaker moves more, a sad one less).

At intensity 1 (the offsets are linear in the intensity; the default option is 0.5):

| emotion | expression | head |
|---|---|---|
| neutral | none | x1 |
| happy | smile 0.5, cheeks raised 0.35, eyes narrowed 0.15, chin up 1.5° | x1.3 |
| sad | inner brows up 0.6, mouth corners down 0.45, lids lowered 0.2, head down 4° | x0.55 |
| angry | brows down 0.75, nose sneer 0.3, eyes narrowed 0.35, corners down 0.2, chin down 2° | x1.4 |
| surprised | brows up 0.75, eyes wide 0.6, jaw dropped 0.08, chin up 2.5° | x1.25 |

The mouth offsets add to the lip-sync (a happy speaker's corners stay up while the jaw moves).
"""

from __future__ import annotations

import math

import numpy as np

from echomimic.errors import InvalidOption
from echomimic.types import NEUTRAL, MotionTrack

__all__ = ["EMOTIONS", "EMOTION_BIAS", "EMOTION_HEAD_ENERGY", "check_emotion", "emotion_overlay",
           "emotion_head_scale"]

#: The emotions the ``emotion`` option accepts.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "surprised")

#: Offsets from neutral at intensity 1, per emotion (channels of :data:`echomimic.types.ALL_CHANNELS`).
EMOTION_BIAS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {
        "mouthSmileLeft": 0.5, "mouthSmileRight": 0.5, "cheekSquintLeft": 0.35,
        "cheekSquintRight": 0.35, "eyeSquintLeft": 0.15, "eyeSquintRight": 0.15,
        "browInnerUp": 0.05, "pitch": -1.5,
    },
    "sad": {
        "browInnerUp": 0.6, "mouthFrownLeft": 0.45, "mouthFrownRight": 0.45,
        "eyeBlinkLeft": 0.2, "eyeBlinkRight": 0.2, "pitch": 4.0,
    },
    "angry": {
        "browDownLeft": 0.75, "browDownRight": 0.75, "noseSneerLeft": 0.3, "noseSneerRight": 0.3,
        "eyeSquintLeft": 0.35, "eyeSquintRight": 0.35, "mouthFrownLeft": 0.2,
        "mouthFrownRight": 0.2, "pitch": 2.0,
    },
    "surprised": {
        "browInnerUp": 0.75, "browOuterUpLeft": 0.75, "browOuterUpRight": 0.75,
        "eyeWideLeft": 0.6, "eyeWideRight": 0.6, "jawOpen": 0.08, "pitch": -2.5,
    },
}

#: Head-motion energy factor at intensity 1 (see :func:`emotion_head_scale`).
EMOTION_HEAD_ENERGY: dict[str, float] = {
    "neutral": 1.0, "happy": 1.3, "sad": 0.55, "angry": 1.4, "surprised": 1.25,
}

_ALIASES = {"happiness": "happy", "joy": "happy", "cheerful": "happy", "sadness": "sad",
            "anger": "angry", "surprise": "surprised", "calm": "neutral", "none": "neutral"}


def check_emotion(emotion: str | None, intensity: float = 0.5) -> tuple[str, float]:
    """Validated ``(emotion, intensity)``: a name of :data:`EMOTIONS` (a few synonyms such as
    ``"joy"`` or ``"surprise"`` accepted, any case; ``None`` is neutral) and an intensity in
    [0, 1]. Raises :class:`InvalidOption` otherwise."""
    name = "neutral" if emotion is None else str(emotion).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in EMOTIONS:
        raise InvalidOption(f"unknown emotion {emotion!r}; use one of: {', '.join(EMOTIONS)}")
    try:
        value = float(intensity)
    except (TypeError, ValueError):
        raise InvalidOption(f"emotion_intensity must be a number, got {intensity!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidOption(f"emotion_intensity must be between 0 and 1, got {intensity!r}")
    return name, value


def emotion_overlay(n_frames: int, fps: float, emotion: str | None = "neutral",
                    intensity: float = 0.5) -> MotionTrack:
    """Overlay track that biases every frame towards ``emotion`` (offsets of
    :data:`EMOTION_BIAS` times ``intensity``). ``neutral`` (or intensity 0) gives a track without
    channels, which adds nothing. ``meta["generator"]`` is ``"emotion"``."""
    name, value = check_emotion(emotion, intensity)
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
        raise InvalidOption(f"n_frames must be a non-negative integer, got {n_frames!r}")
    if not math.isfinite(float(fps)) or float(fps) <= 0:
        raise InvalidOption(f"fps must be a positive number, got {fps!r}")
    bias = EMOTION_BIAS[name] if value > 0 else {}
    chans = list(bias)
    row = np.array([NEUTRAL[c] + value * bias[c] for c in chans], np.float32)
    values = np.tile(row, (int(n_frames), 1)).reshape(int(n_frames), len(chans))
    return MotionTrack(fps=float(fps), channels=chans, values=values,
                       meta={"generator": "emotion", "emotion": name, "intensity": value})


def emotion_head_scale(emotion: str | None = "neutral", intensity: float = 0.5) -> float:
    """Factor for the head motion of idle life: ``1 + (energy - 1) * intensity`` with the
    emotion's energy from :data:`EMOTION_HEAD_ENERGY` (multiply ``head_motion_scale`` by it)."""
    name, value = check_emotion(emotion, intensity)
    return 1.0 + (EMOTION_HEAD_ENERGY[name] - 1.0) * value
