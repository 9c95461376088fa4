"""Media input/output: decode and validate images, audio and video; write H.264/AAC MP4.

All decoding recognises formats by content, enforces limits before doing expensive work, and
raises typed :mod:`echomimic.errors` for anything a user can cause.
"""

from __future__ import annotations

from .audio import iter_audio_chunks, load_audio, probe_audio, probe_duration
from .image import load_image, resize_max_side, sniff_kind
from .sheet import contact_sheet, save_png
from .video import iter_video_frames, probe_video
from .writer import MEDIA_TYPES, OUTPUT_FORMATS, Mp4Writer, VideoWriter, format_of, fps_fraction

__all__ = [
    "load_image",
    "resize_max_side",
    "sniff_kind",
    "load_audio",
    "probe_duration",
    "probe_audio",
    "iter_audio_chunks",
    "Mp4Writer",
    "VideoWriter",
    "OUTPUT_FORMATS",
    "MEDIA_TYPES",
    "format_of",
    "fps_fraction",
    "probe_video",
    "iter_video_frames",
    "contact_sheet",
    "save_png",
]
