"""A persona's motion style applied to a motion track: their articulation and head motion.

* **Articulation.** When the lips come from speech and the persona's speech fit is reliable
  (``r`` of at least :data:`MIN_FIT_R`), ``jawOpen`` becomes ``gain * jawOpen + offset`` (the
  person's own opening for the same speech), eased towards the unfitted value by the fit's
  ``r`` and kept in [0, 1]. Closed frames stay closed.
* **Head motion.** When the head comes from idle life (not from a video or a motion file), each
  of yaw, pitch and roll is scaled so that its spread matches the person's (within 0.5x-2x).
* **Blinks** are the pipeline's: it passes the persona's blink rate to idle life when the user
  gave none.
"""

from __future__ import annotations

import numpy as np

from ..types import MotionTrack, Persona

__all__ = ["adapt_track", "MIN_FIT_R"]

#: least correlation of a speech fit that is used
MIN_FIT_R = 0.3


def adapt_track(track: MotionTrack, persona: Persona, *, lips_from_speech: bool,
                head_from_idle: bool) -> MotionTrack:
    """A copy of ``track`` with the persona's articulation and head-motion spread."""
    values = track.values.astype(np.float32).copy()
    ch = list(track.channels)
    applied: dict[str, float] = {}
    fit = persona.speech_fit
    if lips_from_speech and fit and "jawOpen" in ch and float(fit.get("r", 0.0)) >= MIN_FIT_R:
        j = ch.index("jawOpen")
        w = float(np.clip(fit["r"], 0.0, 1.0))
        gain = 1.0 + w * (float(np.clip(fit["gain"], 0.4, 2.5)) - 1.0)
        offset = w * float(np.clip(fit["offset"], -0.2, 0.2))
        x = values[:, j]
        # the offset fades in over the first 0.1 of opening: closed stays closed, no step
        ramp = np.clip(x / 0.1, 0.0, 1.0)
        y = np.clip(gain * x + offset * ramp * ramp * (3 - 2 * ramp), 0.0, 1.0)
        values[:, j] = y
        applied.update({"jaw_gain": gain, "jaw_offset": offset})
    if head_from_idle:
        for k in ("yaw", "pitch", "roll"):
            want = float(persona.head_motion.get(f"{k}_std", 0.0))
            if k not in ch or want <= 0:
                continue
            i = ch.index(k)
            have = float(np.std(values[:, i]))
            if have < 1e-3:
                continue
            f = float(np.clip(want / have, 0.5, 2.0))
            mean = float(np.mean(values[:, i]))
            values[:, i] = mean + (values[:, i] - mean) * f
            applied[f"{k}_scale"] = f
    meta = dict(track.meta)
    meta["persona"] = {"source": persona.source.get("name", ""), **applied}
    return MotionTrack(fps=track.fps, channels=list(ch), values=values, meta=meta)
