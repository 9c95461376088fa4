"""The portrait preview: the photo as the pipeline will use it, with the detected face marked.

:func:`portrait_preview` runs the pipeline's own :func:`~echomimic.pipeline.load_portrait` (decode,
analysis with its cache, crop and resize), so what the page shows is exactly the frame that will
be animated. When no face is found it returns the pipeline's one-line message instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EchomimicError

__all__ = ["PortraitPreview", "portrait_preview", "mark_faces"]

#: Colours (RGB) of the chosen face, the other faces and the face-mesh points.
CHOSEN = (40, 220, 90)
OTHER = (250, 190, 40)
POINTS = (60, 200, 255)

#: Largest side of the preview image, in pixels (a preview, not the output).
PREVIEW_SIDE = 640


@dataclass
class PortraitPreview:
    """What the page shows under the photo: an image and one line of text."""

    image: np.ndarray | None          # RGB uint8, the frame with the faces marked; None on error
    message: str                      # what was found, or why nothing was
    ok: bool                          # a face was found: the photo can be animated
    faces: int = 0
    size: tuple[int, int] = (0, 0)    # (width, height) of the output frame
    code: str = ""                    # the error's code when not ok


def mark_faces(image: np.ndarray, boxes: list[tuple[int, int, int, int]], chosen: int,
               landmarks: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``image`` with every face box drawn (the chosen one in green) and the mesh."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thick = max(2, round(max(h, w) / 300))
    if landmarks is not None:
        r = max(1, thick // 2)
        for x, y in np.asarray(landmarks)[::3, :2]:
            cv2.circle(out, (int(round(x)), int(round(y))), r, POINTS, -1, cv2.LINE_AA)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        colour = CHOSEN if k == chosen else OTHER
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), colour, thick, cv2.LINE_AA)
        label = f"face {k}"
        scale = max(0.5, min(h, w) / 700)
        ty = int(y0) - 2 * thick if int(y0) > 30 * scale else int(y1) + int(28 * scale)
        cv2.putText(out, label, (int(x0), ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                    max(1, thick), cv2.LINE_AA)
    return out


def _shrink(image: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA)


def portrait_preview(image: Any, **options: Any) -> PortraitPreview:
    """Analyze ``image`` (a path or bytes) as :func:`animate` would, with ``options``.

    Only the options that shape the frame matter (``crop``, ``size``, ``max_side``,
    ``face_index``, ``max_pixels``); the others are accepted and ignored. Never raises for a
    bad photo or option: the problem is the returned message.
    """
    from ..pipeline import AnimateOptions, load_portrait

    keep = ("crop", "size", "max_side", "face_index", "max_pixels")
    try:
        opts = AnimateOptions.from_kwargs(**{k: v for k, v in options.items() if k in keep})
        portrait = load_portrait(image, opts)
    except EchomimicError as exc:
        return PortraitPreview(image=None, message=exc.message, ok=False, code=exc.code)
    boxes = list(portrait.face_boxes) or [portrait.face_box]
    marked = mark_faces(portrait.image, boxes, portrait.face_index, portrait.landmarks)
    w, h = portrait.size
    n = len(boxes)
    which = f"; animating face {portrait.face_index} (green)" if n > 1 else " (green)"
    msg = (f"{n} face{'s' if n != 1 else ''} found{which}. "
           f"The video will be {w}x{h} pixels.")
    return PortraitPreview(image=_shrink(marked), message=msg, ok=True, faces=n, size=(w, h))
