"""``echomimic verify``: was this video (or picture) made here?

It reads the two marks an output carries: the AI-generated label in the container's tags (see
:mod:`.labels`) and the invisible watermark in the frames (see :mod:`.watermark`). Tags are easy
to strip (any re-encode by another tool may drop them); the watermark stays through re-encoding
and scaling, so either mark is enough to say the video was made here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import VideoError
from .labels import read_label
from .watermark import WatermarkReading, detect

__all__ = ["Verification", "verify", "read_tags"]

#: Frames read for the watermark, spread evenly over the clip.
MAX_FRAMES = 24


@dataclass
class Verification:
    path: str
    label: dict | None
    watermark: WatermarkReading
    format: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def made_here(self) -> bool:
        return self.label is not None or self.watermark.found

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "made_here": self.made_here, "format": self.format,
                "label": self.label, "watermark": self.watermark.to_dict(),
                "notes": self.notes}

    def line(self) -> str:
        if self.made_here:
            marks = []
            if self.label is not None:
                v = self.label.get("generator_version")
                marks.append(f"AI-generated label ({self.label.get('generator', '?')}"
                             f"{' ' + v if v else ''})")
            if self.watermark.found:
                marks.append(f"watermark (score {self.watermark.score:.1f})")
            return f"{self.path}: made by echomimic: " + " and ".join(marks)
        return (f"{self.path}: no echomimic label or watermark found "
                f"(watermark score {self.watermark.score:.1f}, threshold 6)")


def read_tags(path: str) -> tuple[dict[str, str], str]:
    """The container's tags (and a GIF's comment lines) and the container format's name."""
    import av

    tags: dict[str, str] = {}
    with av.open(path) as c:
        fmt = c.format.name
        tags.update({str(k): str(v) for k, v in c.metadata.items()})
        for s in c.streams:
            for k, v in s.metadata.items():
                tags.setdefault(str(k), str(v))
    if fmt == "gif" or fmt.startswith("gif"):
        from PIL import Image

        with Image.open(path) as im:
            comment = im.info.get("comment")
        if comment:
            text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
            for line in text.splitlines():
                k, sep, v = line.partition("=")
                if sep:
                    tags.setdefault(k.strip(), v.strip())
    return tags, fmt


def _frames(path: str, n: int) -> list[np.ndarray]:
    import av

    with av.open(path) as c:
        vs = c.streams.video[0]
        total = vs.frames or 0
        step = max(1, total // n) if total else 1
        out: list[np.ndarray] = []
        for i, frame in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(frame.to_ndarray(format="rgb24"))
                if len(out) >= n:
                    break
    return out


def verify(path: str | os.PathLike, *, max_frames: int = MAX_FRAMES) -> Verification:
    """Read the label and the watermark of a video (or a picture) file."""
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"file {path!r} not found")
    notes: list[str] = []
    try:
        tags, fmt = read_tags(path)
        frames = _frames(path, max_frames)
    except (av.error.FFmpegError, IndexError, OSError, ValueError):
        tags, fmt, frames = {}, "", []
    if not frames:                    # a still picture that PyAV could not read
        from ..media import load_image

        try:
            rgb, _ = load_image(path)
        except Exception:
            raise VideoError(f"{path!r} is not a video or picture that can be read") from None
        frames, fmt = [rgb], fmt or "image"
    label = read_label(tags)
    if label is None:
        notes.append("no AI-generated label in the file's tags")
    reading = detect(frames)
    return Verification(path=path, label=label, watermark=reading, format=fmt, notes=notes)
