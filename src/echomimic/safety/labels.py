"""The "AI-generated" label: machine-readable container tags, and an optional visible caption.

:func:`content_label` gives the tags every output carries (MP4, MOV and WebM tags; a comment
extension in a GIF): a human-readable ``comment``, ``ai_generated=true``, the generator and its
version, the IPTC digital source type for media made by a trained model
(``trainedAlgorithmicMedia``), and the whole label again as one JSON value (``ai_label``).
:func:`read_label` finds it again in the tags of a file (any key case: Matroska upper-cases
them).

:class:`VisibleLabel` draws a caption such as "AI-generated" in a corner of every frame, with a
given opacity; the caption is rendered once, so a frame costs one alpha blend of a small patch.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np

from ..errors import InvalidOption

__all__ = ["content_label", "read_label", "VisibleLabel", "CORNERS", "GENERATOR",
           "DIGITAL_SOURCE_TYPE"]

GENERATOR = "echomimic"
#: IPTC NewsCodes digital source type of content made by a trained model.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
LABEL_VERSION = 1


def content_label(*, watermark: bool = True) -> dict[str, str]:
    """The container tags of an output made here."""
    from .. import __version__

    label = {"ai_generated": True, "generator": GENERATOR, "generator_version": __version__,
             "digital_source_type": DIGITAL_SOURCE_TYPE, "watermark": bool(watermark),
             "label_version": LABEL_VERSION}
    return {
        "comment": f"AI-generated: synthetic video made by {GENERATOR} {__version__}",
        "ai_generated": "true",
        "generator": GENERATOR,
        "generator_version": str(__version__),
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "ai_label": json.dumps(label, separators=(",", ":"), sort_keys=True),
    }


def read_label(tags: Mapping[str, str]) -> dict | None:
    """The label found in a file's tags (``None`` when there is none)."""
    low = {str(k).lower(): str(v) for k, v in tags.items()}
    if "ai_label" in low:
        try:
            value = json.loads(low["ai_label"])
            if isinstance(value, dict) and value.get("ai_generated") is True:
                return value
        except ValueError:
            pass
    if low.get("ai_generated", "").lower() == "true" and low.get("generator"):
        return {"ai_generated": True, "generator": low["generator"],
                "generator_version": low.get("generator_version")}
    return None


class VisibleLabel:
    """A caption blended into a corner of frames of one size.

    Args:
        text: the caption, e.g. ``"AI-generated"``.
        height, width: the frames' size; the text is about 1/22 of the shorter side high.
        corner: ``bottom-right`` (default), ``bottom-left``, ``top-right`` or ``top-left``.
        opacity: 0 (invisible) to 1 (opaque white text on a dark box).
    """

    def __init__(self, text: str, height: int, width: int, *, corner: str = "bottom-right",
                 opacity: float = 0.8):
        text = " ".join(str(text).split())
        check_label(text, corner, opacity)
        from PIL import Image, ImageDraw, ImageFont

        size = max(10, int(min(height, width) / 22))
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: the fixed bitmap font
            font = ImageFont.load_default()
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
        pad = max(2, size // 3)
        w = min(int(width), x1 - x0 + 2 * pad)
        h = min(int(height), y1 - y0 + 2 * pad)
        ink = Image.new("L", (w, h), 0)
        ImageDraw.Draw(ink).text((pad - x0, pad - y0), text, fill=255, font=font)
        text_alpha = np.asarray(ink, np.float32) / 255.0
        # white text on a translucent dark box
        self.alpha = (opacity * (0.45 + 0.55 * text_alpha))[..., None]
        self.color = (255.0 * text_alpha)[..., None]
        margin = max(2, size // 2)
        top = margin if corner.startswith("top") else int(height) - h - margin
        left = margin if corner.endswith("left") else int(width) - w - margin
        self.top, self.left = max(0, top), max(0, left)
        self.h, self.w = h, w
        self.height, self.width = int(height), int(width)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` with the caption (a new array)."""
        out = np.array(frame, copy=True)
        sl = (slice(self.top, self.top + self.h), slice(self.left, self.left + self.w))
        patch = out[sl].astype(np.float32)
        a = self.alpha[:patch.shape[0], :patch.shape[1]]
        c = self.color[:patch.shape[0], :patch.shape[1]]
        out[sl] = np.clip(patch * (1.0 - a) + c * a + 0.5, 0, 255).astype(np.uint8)
        return out

    __call__ = apply

    def set_background(self, still: np.ndarray,
                       moving: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Frames that equal ``still`` outside ``moving`` keep doing so once captioned (the
        caption is drawn pixel by pixel): returns ``moving``."""
        return tuple(int(v) for v in moving)

    def apply_region(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The pixels of ``apply(frame)`` in ``box`` (x0, y0, x1, y1) (a new array)."""
        x0, y0, x1, y1 = (int(v) for v in box)
        out = np.array(frame[y0:y1, x0:x1], copy=True)
        ty0, tx0 = max(y0, self.top), max(x0, self.left)
        ty1, tx1 = min(y1, self.top + self.h), min(x1, self.left + self.w)
        if ty1 > ty0 and tx1 > tx0:
            patch = out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0].astype(np.float32)
            a = self.alpha[ty0 - self.top:ty1 - self.top, tx0 - self.left:tx1 - self.left]
            c = self.color[ty0 - self.top:ty1 - self.top, tx0 - self.left:tx1 - self.left]
            out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = np.clip(
                patch * (1.0 - a) + c * a + 0.5, 0, 255).astype(np.uint8)
        return out


def check_label(text: str | None, corner: str, opacity: float) -> None:
    """Raise :class:`InvalidOption` for a bad caption, corner or opacity."""
    if text is not None and len(str(text)) > 80:
        raise InvalidOption("label must be at most 80 characters")
    if corner not in CORNERS:
        raise InvalidOption(f"label_corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    try:
        ok = 0.0 <= float(opacity) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidOption(f"label_opacity must be between 0 and 1, got {opacity!r}")
