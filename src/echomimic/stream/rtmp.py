"""RTMP push of a :class:`~echomimic.stream.Stream`: FLV with H.264 and AAC, through PyAV.

The push runs on its own thread with a bounded queue of the session's output: a slow or stalled
network never makes rendering wait. When the push falls more than the queue behind (about 3 s)
it stops and reports ``failed``; the session goes on.

Any RTMP ingest takes it: OBS (a Media Source reading ``rtmp://...`` from a local server such as
nginx-rtmp or SRS), a platform's ingest URL with its stream key, or ``ffmpeg -listen 1 -i
rtmp://127.0.0.1/live/x``.
"""

from __future__ import annotations

import fractions
import logging
import threading

from typing import Any

import numpy as np

from ..errors import InvalidOption
from .session import SAMPLE_RATE, AudioChunk, Stream, VideoFrame

log = logging.getLogger("echomimic.stream.rtmp")

#: Sample rate of the AAC track (the rate FLV players expect).
AAC_RATE = 44100


def check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("rtmp://", "rtmps://")) or len(url) > 2000:
        raise InvalidOption("the RTMP url must start with rtmp:// or rtmps://")
    return url


class RtmpPush:
    """Push ``stream`` to ``url`` until :meth:`stop` or the end of the stream."""

    def __init__(self, stream: Stream, url: str, *, crf: int = 23, preset: str = "veryfast",
                 connect_timeout: float = 10.0):
        self.stream = stream
        self.url = check_url(url)
        self.crf, self.preset = int(crf), preset
        self.connect_timeout = float(connect_timeout)
        self.state = "starting"
        self.error = ""
        self.frames = 0
        self.audio_seconds = 0.0
        self._stop = threading.Event()
        self._sub = stream.subscribe(("audio", "video"), maxsize=240)
        self._thread = threading.Thread(target=self._run, name="echomimic-rtmp", daemon=True)
        self._thread.start()

    def _open(self):
        import av

        s = self.stream
        out = av.open(self.url, "w", format="flv", timeout=self.connect_timeout)
        v = out.add_stream("libx264", rate=fractions.Fraction(s.fps).limit_denominator(1001))
        v.width, v.height = s.width, s.height
        v.pix_fmt = "yuv420p"
        v.codec_context.time_base = fractions.Fraction(1, 1000)
        v.codec_context.gop_size = max(1, int(round(2 * s.fps)))
        v.codec_context.max_b_frames = 0
        v.codec_context.options = {"preset": self.preset, "tune": "zerolatency",
                                   "crf": str(self.crf)}
        a = out.add_stream("aac", rate=AAC_RATE)
        a.codec_context.layout = "mono"
        a.codec_context.bit_rate = 96000
        return out, v, a

    def _run(self) -> None:
        import av

        out = None
        try:
            out, vs, aus = self._open()
            self.state = "live"
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=AAC_RATE,
                                          frame_size=1024)
            t0: float | None = None
            a_pts = 0
            while not self._stop.is_set():
                try:
                    item = self._sub.get(timeout=0.5)
                except TimeoutError:
                    continue
                if item is None:
                    if self._sub.overflowed:
                        raise RuntimeError("the RTMP server takes the stream too slowly")
                    break
                if t0 is None:
                    t0 = item.time
                if isinstance(item, AudioChunk):
                    x = item.samples.astype(np.int16)[None, :]
                    f = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
                    f.sample_rate = SAMPLE_RATE
                    for r in resampler.resample(f):
                        r.pts = a_pts
                        r.time_base = fractions.Fraction(1, AAC_RATE)
                        a_pts += r.samples
                        for p in aus.encode(r):
                            out.mux(p)
                    self.audio_seconds = a_pts / AAC_RATE
                elif isinstance(item, VideoFrame):
                    pts = int(round((item.time - t0) * 1000))
                    if pts < 0:
                        continue
                    f = av.VideoFrame.from_ndarray(item.image, format="rgb24")
                    f.pts = pts
                    f.time_base = fractions.Fraction(1, 1000)
                    for p in vs.encode(f):
                        out.mux(p)
                    self.frames += 1
            for p in vs.encode(None):
                out.mux(p)
            for p in aus.encode(None):
                out.mux(p)
            self.state = "stopped"
        except Exception as exc:
            self.state = "failed"
            self.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            log.warning("RTMP push to %s failed: %s", _redact(self.url), self.error)
        finally:
            self._sub.close()
            if out is not None:
                try:
                    out.close()
                except Exception:
                    pass

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._sub.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def info(self) -> dict[str, Any]:
        return {"url": _redact(self.url), "state": self.state, "error": self.error or None,
                "frames": self.frames, "audio_seconds": round(self.audio_seconds, 3)}


def _redact(url: str) -> str:
    """The URL without its stream key (the last path element)."""
    head, _, last = url.rpartition("/")
    return f"{head}/{'*' * min(8, len(last))}" if head and last else url


__all__ = ["AAC_RATE", "RtmpPush", "check_url"]


