"""echomimic: talking portraits on an ordinary CPU.

>>> import echomimic
>>> result = echomimic.animate("face.png", "out.mp4", audio="speech.wav")
>>> result.duration, result.n_frames, result.timings
"""

from __future__ import annotations

from .errors import EchomimicError
from .types import MotionTrack, Portrait, Speech

__version__ = "0.1.0"


def animate(image, output, **kwargs):
    """Make a talking-portrait video; see :func:`echomimic.pipeline.animate`."""
    from .pipeline import animate as _animate

    return _animate(image, output, **kwargs)


def __getattr__(name):
    if name == "Stream":              # a live session; imported on first use
        from .stream import Stream

        return Stream
    raise AttributeError(f"module 'echomimic' has no attribute {name!r}")


def load_motion(path):
    """Read a motion file; see :func:`echomimic.motion.load_motion`."""
    from .motion import load_motion as _load

    return _load(path)


def save_motion(track, path):
    """Write a motion file; see :func:`echomimic.motion.save_motion`."""
    from .motion import save_motion as _save

    return _save(track, path)


__all__ = ["EchomimicError", "MotionTrack", "Portrait", "Speech", "Stream", "animate",
           "load_motion", "save_motion", "__version__"]
