"""echomimic: talking portraits on an ordinary CPU."""

from __future__ import annotations

from .errors import EchomimicError
from .types import MotionTrack, Portrait, Speech

__version__ = "0.1.0"

__all__ = ["EchomimicError", "MotionTrack", "Portrait", "Speech", "__version__"]
