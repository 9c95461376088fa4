"""Content safety: every output says that it is AI-generated, and jobs can be moderated.

* :mod:`.labels` — the machine-readable label in the container's tags, and an optional visible
  caption (``label``, ``label_corner``, ``label_opacity``);
* :mod:`.watermark` — an invisible watermark in the frames (on by default; ``watermark=False``
  turns it off), robust to re-encoding and to scaling down to half size;
* :mod:`.verify` — ``echomimic verify VIDEO``: reads both marks back;
* :mod:`.moderation` — checks run before a job is accepted (plugins of the
  ``echomimic.moderation`` entry-point group; the built-in one refuses an operator's word list).

See docs/safety.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ContentRefused
from .labels import CORNERS, VisibleLabel, check_label, content_label, read_label
from .moderation import ModerationRequest, WordListModerator, moderate, moderators
from .verify import Verification, verify
from .watermark import Watermarker, WatermarkReading, current_job_id, detect, job_scope

__all__ = ["content_label", "read_label", "VisibleLabel", "CORNERS", "check_label",
           "Watermarker", "WatermarkReading", "detect", "verify", "Verification",
           "moderate", "moderators", "ModerationRequest", "WordListModerator",
           "ContentRefused", "frame_marker", "job_scope"]


def frame_marker(height: int, width: int, *, watermark: bool = True, label: str | None = None,
                 label_corner: str = "bottom-right", label_opacity: float = 0.8,
                 job_id: str | None = None, landmarks: np.ndarray | None = None
                 ) -> Callable[[np.ndarray], np.ndarray] | None:
    """What is done to every frame before encoding: the visible caption (when ``label`` is
    given), then the invisible watermark (when ``watermark``; its payload carries ``job_id``,
    by default the one of the enclosing :func:`job_scope`; it stays off the eyes and the mouth
    of the face whose ``landmarks`` are given). ``None`` when nothing is."""
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    if label:
        steps.append(VisibleLabel(label, height, width, corner=label_corner,
                                  opacity=label_opacity))
    if watermark:
        steps.append(Watermarker(height, width, job_id=job_id or current_job_id(),
                                 landmarks=landmarks))
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    return _Steps(steps)


class _Steps:
    """Several frame filters applied in turn; like each of them, it can mark frames over a
    still background (``set_background`` / ``apply_region``, see :class:`Watermarker`)."""

    def __init__(self, steps: list):
        self.steps = steps

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        for step in self.steps:
            frame = step(frame)
        return frame

    def set_background(self, still: np.ndarray,
                       moving: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Returns the box outside which every filtered frame equals the filtered ``still``."""
        for step in self.steps:
            moving = step.set_background(still, moving)
            still = step(still)
        return moving

    def apply_region(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        for step in self.steps[:-1]:
            frame = step(frame)
        return self.steps[-1].apply_region(frame, box)
