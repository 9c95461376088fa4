"""Motion: the drive and mix stages.

* :func:`lipsync_track` – speech articulation -> mouth and jaw blendshapes.
* :func:`idle_track` – blinks, head motion, brows, breathing and gaze.
* :func:`mix_tracks` – precedence of the sources -> one track with every channel.
* :func:`save_motion`, :func:`load_motion`, :func:`quantize` – the ``echomimic.motion/1`` JSON
  format (see ``docs/motion.md``).
* :func:`one_euro`, :func:`gaussian_smooth` – smoothing filters.
"""

from echomimic.motion.idle import DEFAULT_BLINK_RATE, IDLE_CHANNELS, idle_track
from echomimic.motion.io import (
    load_motion,
    motion_from_dict,
    motion_from_json,
    motion_schema,
    motion_to_dict,
    motion_to_json,
    quantize,
    save_motion,
)
from echomimic.motion.lipsync import LIPSYNC_CHANNELS, lipsync_track
from echomimic.motion.mix import CHANNEL_RANGES, HEAD_LIMITS, LIP_CHANNELS, mix_tracks
from echomimic.motion.smoothing import attack_release, gaussian_smooth, one_euro

__all__ = [
    "lipsync_track", "LIPSYNC_CHANNELS",
    "idle_track", "IDLE_CHANNELS", "DEFAULT_BLINK_RATE",
    "mix_tracks", "LIP_CHANNELS", "HEAD_LIMITS", "CHANNEL_RANGES",
    "save_motion", "load_motion", "motion_to_dict", "motion_from_dict", "motion_to_json",
    "motion_from_json", "motion_schema", "quantize",
    "one_euro", "gaussian_smooth", "attack_release",
]
