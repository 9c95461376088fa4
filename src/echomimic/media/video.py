"""Read video files (driving videos) with PyAV: probe and stream RGB frames."""

from __future__ import annotations

import os
from typing import Iterator, Union

import av
import numpy as np

from ..errors import VideoError
from .audio import _short, describe, open_media

__all__ = ["probe_video", "iter_video_frames"]

VideoSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


def _video_stream(container, name: str):
    if not container.streams.video:
        raise VideoError(f"video {name} has no video track")
    return container.streams.video[0]


def _rotation(frame) -> int:
    """Display rotation of a decoded frame in degrees (counter-clockwise), 0 when none."""
    try:
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    except (TypeError, ValueError):
        return 0


def _apply_rotation(rgb: np.ndarray, degrees: int) -> np.ndarray:
    k = {90: 1, 180: 2, 270: 3}.get(degrees, 0)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def probe_video(src: VideoSource) -> dict:
    """Header facts about the first video track.

    Returns ``{"width", "height", "fps", "n_frames", "duration", "has_audio"}``: the coded size,
    the average frame rate (float), the frame count (from the header, else estimated as
    ``round(duration * fps)``), the duration in seconds, and whether an audio track exists.
    Nothing is decoded. Raises :class:`VideoError` when the file is unreadable or has no video.
    """
    name = describe(src)
    with open_media(src, error=VideoError, what="video") as container:
        stream = _video_stream(container, name)
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        if not duration and container.duration:
            duration = container.duration / float(av.time_base)
        n_frames = int(stream.frames or 0)
        if n_frames <= 0 and duration and fps:
            n_frames = int(round(duration * fps))
        if (not duration) and n_frames and fps:
            duration = n_frames / fps
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError(f"video {name} has no valid frame size")
        return {
            "width": width,
            "height": height,
            "fps": fps,
            "n_frames": n_frames,
            "duration": float(duration or 0.0),
            "has_audio": bool(container.streams.audio),
        }


def iter_video_frames(src: VideoSource, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of the first video track as (H, W, 3) RGB ``uint8`` arrays.

    Frames come in presentation order, with the container's display rotation applied (phone
    videos). Damaged packets are skipped, as players do. Stops after ``max_frames`` when given.
    The file is opened when the generator is first advanced, so errors surface then.

    Raises:
        VideoError: unreadable/empty file, no video track, or no frame could be decoded.
    """
    name = describe(src)
    if max_frames is not None and max_frames <= 0:
        return
    with open_media(src, error=VideoError, what="video") as container:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        count = 0
        errors = 0
        last_error: BaseException | None = None

        def frames():
            nonlocal errors, last_error
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    errors += 1
                    last_error = exc
                    continue
                yield from decoded

        try:
            for frame in frames():
                rgb = frame.to_ndarray(format="rgb24")
                yield _apply_rotation(rgb, _rotation(frame))
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
        except av.FFmpegError as exc:
            if count == 0:
                raise VideoError(f"video {name} is corrupt ({_short(exc)})") from None
            return  # keep the frames decoded before the damage
        if count == 0:
            detail = f" ({_short(last_error)})" if last_error is not None else ""
            raise VideoError(f"video {name} has no decodable frames{detail}")
