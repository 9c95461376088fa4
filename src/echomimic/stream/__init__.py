"""Live sessions: the pipeline's stages run incrementally under the audio's clock, with WebRTC
and RTMP outputs (see ``docs/streaming.md``)."""

from __future__ import annotations

from .process import ProcessStream
from .session import (AudioChunk, BufferFull, Event, Stream, StreamClosed, Subscription,
                      VideoFrame, SAMPLE_RATE)

__all__ = ["AudioChunk", "BufferFull", "Event", "ProcessStream", "Stream", "StreamClosed",
           "Subscription", "VideoFrame", "SAMPLE_RATE"]
