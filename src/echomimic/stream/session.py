"""A live talking portrait: audio (or text) in, frames and sound out, under the audio's clock.

A :class:`Stream` runs the stages of the pipeline incrementally, on one engine thread:

* the **portrait** is prepared once (:func:`echomimic.pipeline.load_portrait`, whose analysis is
  cached by content hash) and the renderer is built once;
* **audio** arrives in chunks of any size (:meth:`Stream.push_audio`, PCM16 or float, at 16, 24
  or 48 kHz) or as text spoken by the offline TTS (:meth:`Stream.say`); both join one FIFO;
* the engine's **clock is the audio's**: every tick (20 ms) it takes 20 ms of samples from the
  FIFO (silence when it is empty), so the output audio never waits for anything; a video frame's
  timestamp is its index over ``fps`` on that sample clock, and it is sent with the audio it
  belongs to;
* **speech analysis** runs on a sliding window: for frame ``i`` the window ends ``lookahead``
  seconds (80 ms) after the frame's own interval and starts ``context`` seconds before it; the
  speech stage (:func:`~echomimic.speech.analyze_speech`, acoustic path, or
  :func:`~echomimic.speech.speech_from_phones` for text with the TTS's phoneme events) and the
  lip-sync stage (:func:`~echomimic.motion.lipsync_track`) run on that window and only the
  frame's own row is kept. Output therefore lags input by ``1 / fps + lookahead`` (120 ms at
  25 fps), the same for sound and picture;
* **idle life** (blinks, breathing, head motion; :func:`~echomimic.motion.idle_track`) is made
  once for a minute and played forwards and backwards, so it never jumps; the mixer
  (:func:`~echomimic.motion.mix_tracks`) puts the lips on it, as in the pipeline;
* each frame is **rendered just in time** by the renderer plugin; when the engine is late by
  more than a frame, frames are dropped (counted), audio never is.

Outputs go to subscribers (:meth:`Stream.subscribe`), each with a bounded queue: a subscriber that
stops reading is closed, it never makes the engine wait (in real time). Iterating a ``Stream``
yields its :class:`AudioChunk`, :class:`VideoFrame` and :class:`Event` items.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..errors import EchomimicError, InvalidOption
from ..types import Audio, MotionTrack, Phone

log = logging.getLogger("echomimic.stream")

#: Sample rate of the session's audio (analysis and output).
SAMPLE_RATE = 16000
#: Input rates a client may declare.
INPUT_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
#: Seconds of audio per engine tick.
TICK = 0.02
#: Default analysis lookahead past a frame's interval (seconds); at most 0.08.
LOOKAHEAD = 0.08
#: Default analysis context before a frame (seconds).
CONTEXT = 0.3
#: Frames that may wait behind the newest due frame and still be rendered: a frame due one frame
#: ago is rendered and sent (with its own timestamp; viewers' jitter buffers absorb the delay)
#: rather than dropped, so a brief stall of the CPU (another process, a garbage collection)
#: costs no frame; frames further behind are dropped. Audio is never held back either way.
MAX_BACKLOG = 1
#: Seconds of idle life made once and played back and forth.
IDLE_LOOP = 60.0
#: Most seconds of audio waiting in the FIFO (push_audio blocks, or fails without blocking).
MAX_BUFFER = 30.0
#: Items a subscriber's queue holds before it is closed as too slow (about 3 s of output).
SUBSCRIBER_QUEUE = 240
#: Below this peak a window is silence: the mouth is at rest without running the analysis.
_SILENT_PEAK = 1e-4


class BufferFull(EchomimicError):
    """More audio was pushed than the session holds (:data:`MAX_BUFFER` seconds ahead)."""

    code = "buffer_full"
    http_status = 429


class StreamClosed(EchomimicError):
    """The stream has ended or was closed."""

    code = "stream_closed"
    http_status = 409


# ------------------------------------------------------------------------------------------------
# output items
# ------------------------------------------------------------------------------------------------


@dataclass
class AudioChunk:
    """``samples`` (int16, mono, :data:`SAMPLE_RATE`) starting at sample ``pts`` of the clock."""

    pts: int
    samples: np.ndarray
    rate: int = SAMPLE_RATE

    @property
    def time(self) -> float:
        return self.pts / self.rate


@dataclass
class VideoFrame:
    """Frame ``index`` (RGB uint8), shown at ``index / fps`` seconds of the audio clock."""

    index: int
    fps: float
    image: np.ndarray
    motion: dict[str, float] = field(default_factory=dict)

    @property
    def time(self) -> float:
        return self.index / self.fps


@dataclass
class Event:
    """``speaking`` / ``idle`` (at output time ``t``), ``interrupted``, ``error``, ``end``."""

    type: str
    t: float
    data: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"type": self.type, "t": round(self.t, 3), **self.data}


class Subscription:
    """A bounded queue of a session's output items. ``kinds`` filters them ("audio", "video",
    "event"). In real time a subscriber that falls ``maxsize`` items behind is closed
    (``overflowed``); offline the engine waits for it. With ``loop`` (an asyncio loop) items are
    read with ``await sub.aget()`` instead of :meth:`get`, without a thread."""

    def __init__(self, stream: "Stream", kinds: set[str], maxsize: int, loop=None):
        self.stream = stream
        self.kinds = kinds
        self.maxsize = maxsize
        self.loop = loop
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.aq = None
        if loop is not None:
            import asyncio

            self.aq = asyncio.Queue()
        self._pending = 0
        self.closed = False
        self.overflowed = False

    def _offer(self, item: Any, block: bool) -> None:
        if self.closed:
            return
        if self.aq is not None:
            if self._pending >= self.maxsize:
                self.overflowed = True
                self.close()
                return
            self._pending += 1
            try:
                self.loop.call_soon_threadsafe(self.aq.put_nowait, item)
            except RuntimeError:          # the loop is gone
                self.closed = True
            return
        try:
            self.q.put(item, block=block, timeout=None if block else 0)
        except queue.Full:
            self.overflowed = True
            self.close()

    def _end_marker(self, block: bool = False) -> None:
        if self.aq is not None:
            try:
                self.loop.call_soon_threadsafe(self.aq.put_nowait, None)
            except RuntimeError:
                pass
            return
        try:
            self.q.put(None, block=block, timeout=10.0 if block else None)
        except queue.Full:
            try:                       # make room for the end marker
                self.q.get_nowait()
                self.q.put_nowait(None)
            except (queue.Empty, queue.Full):
                pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._end_marker()
            self.stream._unsubscribe(self)

    def get(self, timeout: float | None = None) -> Any:
        """The next item; ``None`` when the stream or the subscription has ended."""
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no output from the stream") from None

    async def aget(self) -> Any:
        """The next item (asyncio subscriptions); ``None`` at the end."""
        item = await self.aq.get()
        if item is not None:
            self._pending -= 1
        return item

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item


# ------------------------------------------------------------------------------------------------
# the input FIFO
# ------------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    samples: np.ndarray                 # float32 at SAMPLE_RATE
    phones: list[Phone] | None = None   # TTS phoneme events, seconds from the segment start
    pos: int = 0                        # samples already taken
    gen: int = 0                        # interrupt generation it belongs to
    wall: float = field(default_factory=time.perf_counter)   # when it was queued


class _Resampler:
    """Streaming resampling of float32 mono to :data:`SAMPLE_RATE` (FFmpeg's, through PyAV)."""

    def __init__(self, rate: int):
        import av

        self.rate = int(rate)
        self._res = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._av = av

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return x
        frame = self._av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = self.rate
        out = [f.to_ndarray().reshape(-1) for f in self._res.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


# ------------------------------------------------------------------------------------------------
# the session
# ------------------------------------------------------------------------------------------------


class Stream:
    """A live talking portrait.

    >>> s = Stream("face.png", fps=25)            # doctest: +SKIP
    >>> s.say("Hello!"); s.end()                  # doctest: +SKIP
    >>> for item in s: ...                        # AudioChunk / VideoFrame / Event

    Args:
        image: the portrait (path, bytes, or ``(rgb, content_hash)``), prepared once.
        realtime: pace the clock by the wall clock (a live session). ``False`` runs as fast as
            the input allows and waits for slow subscribers (files, tests).
        lookahead: seconds of audio after a frame's interval the analysis may see (<= 0.08).
        context: seconds of audio before a frame the analysis sees.
        **options: the pipeline's options (``fps``, ``crop``, ``size``, ``max_side``, ``seed``,
            ``lang``, ``voice``, ``rate``, ``pitch``, ``volume``, ``expression_scale``,
            ``head_motion_scale``, ``blink_rate``, ``emotion``, ``emotion_intensity``,
            ``renderer``, ...).
    """

    def __init__(self, image: Any, *, realtime: bool = True, lookahead: float = LOOKAHEAD,
                 context: float = CONTEXT, autostart: bool = True, **options: Any):
        from ..motion import idle_track
        from ..motion.emotion import emotion_head_scale, emotion_overlay
        from ..pipeline import AnimateOptions, load_portrait
        from ..render import get_renderer

        self.opts = AnimateOptions.from_kwargs(**options)
        if not 0.0 <= float(lookahead) <= 0.08:
            raise InvalidOption(f"lookahead must be between 0 and 0.08 s, got {lookahead}")
        if not 0.1 <= float(context) <= 2.0:
            raise InvalidOption(f"context must be between 0.1 and 2 s, got {context}")
        self.fps = float(self.opts.fps)
        self.realtime = bool(realtime)
        self.lookahead = float(lookahead)
        self.context = float(context)
        t0 = time.perf_counter()
        self.portrait = load_portrait(image, self.opts)
        cls = get_renderer(self.opts.renderer)
        if getattr(cls, "needs_whole_clip", False):
            raise InvalidOption(f"the {self.opts.renderer!r} renderer needs the whole clip "
                                f"before its first frame; a live stream needs a frame-by-frame "
                                f"renderer such as 'warp'")
        self.renderer = cls(self.portrait) if self.opts.weights is None else cls(
            self.portrait, weights=self.opts.weights)
        o = self.opts
        head = float(o.head_motion_scale) * emotion_head_scale(o.emotion, float(o.emotion_intensity))
        self._idle = idle_track(int(IDLE_LOOP * self.fps), self.fps, seed=int(o.seed),
                                head_motion_scale=head, blink_rate=o.blink_rate,
                                expression_scale=float(o.expression_scale))
        self._emotion = emotion_overlay(1, self.fps, o.emotion, float(o.emotion_intensity))
        from ..speech.incremental import LiveAnalyzer

        self._analyzer = LiveAnalyzer(history=self.context + 1.0 + 2 * self.lookahead + 4.0)
        self._rest_lips = self._lips_row(np.zeros(int(0.5 * SAMPLE_RATE), np.float32), [],
                                         0, int(0.5 * self.fps) - 1)
        self.setup_seconds = time.perf_counter() - t0
        self.width, self.height = self.portrait.size

        # clock (samples) -----------------------------------------------------------------
        self._frame_len = SAMPLE_RATE / self.fps
        self.delay = int(round(self._frame_len + self.lookahead * SAMPLE_RATE))  # output lag
        self._tick = int(round(TICK * SAMPLE_RATE))
        self.intake = 0            # samples taken from the FIFO (absolute)
        self.out_pos = 0           # samples sent out
        self.next_frame = 0        # index of the next frame to send
        self._hist = np.zeros(0, np.float32)
        self._hist_start = 0       # absolute sample of _hist[0]
        self._phones: list[tuple[float, float, str]] = []   # absolute seconds (intake clock)
        self._speech_marks: list[tuple[int, int]] = []      # (start, end) absolute samples
        self._last_real = -1       # last absolute sample taken from real input
        self._input_end = 0        # absolute end of the input taken (silence pushed included)
        self._got_last = 0

        # input --------------------------------------------------------------------------
        self._fifo: collections.deque[_Segment] = collections.deque()
        self._buffered = 0
        self._gen = 0
        self._resamplers: dict[int, _Resampler] = {}
        self._cv = threading.Condition()
        self._ended = False
        self._closed = False
        self._interrupt_at: float | None = None
        self._interrupt_pending = False
        self._interrupt_at_sample: int | None = None
        self._tts_threads: list[threading.Thread] = []

        # output -------------------------------------------------------------------------
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()
        self._speaking = False
        self.stats: dict[str, Any] = {
            "frames_sent": 0, "frames_dropped": 0, "frames_late": 0, "frames_behind": 0,
            "audio_seconds": 0.0,
            "render_ms_mean": 0.0, "analysis_ms_mean": 0.0, "first_frame_latency_ms": [],
            "interrupt_latency_ms": [], "subscribers_closed_slow": 0,
        }
        self._render_total = 0.0
        self._analysis_total = 0.0
        self._analysis_n = 0
        self._pending_first: float | None = None   # wall time of the first chunk of an utterance
        self._first_sample: int | None = None      # its absolute sample
        self.error: BaseException | None = None
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="echomimic-stream", daemon=True)
        if autostart:
            self._thread.start()

    # ------------------------------------------------------------------------------------
    # input
    # ------------------------------------------------------------------------------------

    def push_audio(self, pcm: bytes | bytearray | memoryview | np.ndarray, rate: int = SAMPLE_RATE,
                   *, block: bool = True, timeout: float | None = None) -> None:
        """Queue speech audio: PCM16 little-endian mono bytes, or a float32/int16 array, at
        ``rate`` Hz. Blocks while more than :data:`MAX_BUFFER` seconds are waiting (or raises
        :class:`BufferFull` with ``block=False``)."""
        rate = int(rate)
        if rate not in INPUT_RATES:
            raise InvalidOption(f"rate must be one of {', '.join(map(str, INPUT_RATES))}, "
                                f"got {rate}")
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            raw = bytes(pcm)
            if len(raw) % 2:
                raise InvalidOption("PCM16 audio must have an even number of bytes")
            x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        else:
            arr = np.asarray(pcm)
            if arr.ndim != 1:
                raise InvalidOption("audio must be mono (a 1-D array)")
            if arr.dtype == np.int16:
                x = arr.astype(np.float32) / 32768.0
            elif arr.dtype.kind == "f":
                x = np.clip(np.nan_to_num(arr.astype(np.float32)), -1.0, 1.0)
            else:
                raise InvalidOption(f"audio arrays must be int16 or float, got {arr.dtype}")
        if x.size == 0:
            return
        with self._cv:
            res = self._resamplers.get(rate)
            if res is None:
                res = self._resamplers[rate] = _Resampler(rate)
            y = res(x)
            if y.size == 0:
                return
            self._enqueue(_Segment(y), block=block, timeout=timeout)

    def say(self, text: str, *, lang: str | None = None, voice: str | None = None) -> None:
        """Speak ``text`` with the offline TTS, sentence by sentence as each is synthesized; the
        mouth follows the TTS's phoneme events. Queued after the audio already waiting."""
        from ..speech.tts import synthesize_stream

        if not isinstance(text, str) or not text.strip():
            raise InvalidOption("text to speak is empty")
        if len(text) > 5000:
            raise InvalidOption("text is longer than 5000 characters")
        o = self.opts
        chunks = synthesize_stream(text, lang=lang or o.lang, voice=voice or o.voice,
                                   rate=int(o.rate), pitch=int(o.pitch), volume=int(o.volume))
        first = next(chunks)             # options and language checked here, in the caller
        gen = self._gen

        def feed() -> None:
            from ..media import iter_audio_chunks

            try:
                for chunk in itertools.chain([first], chunks):
                    if self._closed or gen != self._gen:
                        return
                    pieces = [c[0] for c in iter_audio_chunks(chunk.audio, sample_rate=SAMPLE_RATE,
                                                              chunk_seconds=10.0)]
                    y = np.concatenate(pieces).astype(np.float32)
                    with self._cv:
                        if gen != self._gen:
                            return
                        self._enqueue(_Segment(y, phones=list(chunk.phones), gen=gen), block=True)
            except Exception as exc:    # reported as an event, the session goes on
                log.warning("text to speech failed: %s", exc)
                self._emit(Event("error", self.out_pos / SAMPLE_RATE,
                                 {"code": "tts_failed", "message": str(exc)}))

        th = threading.Thread(target=feed, name="echomimic-stream-tts", daemon=True)
        self._tts_threads = [t for t in self._tts_threads if t.is_alive()] + [th]
        th.start()

    def interrupt(self) -> None:
        """Stop the current speech now: the queued audio and text are dropped, and audio taken
        but not yet sent out is silenced, so sound and mouth stop within a tick or two."""
        with self._cv:
            self._gen += 1
            self._fifo.clear()
            self._buffered = 0
            self._interrupt_at = time.perf_counter()
            self._interrupt_pending = True
            self._cv.notify_all()

    def end(self) -> None:
        """No more input: the stream finishes once what is queued has been played."""
        with self._cv:
            self._ended = True
            self._cv.notify_all()

    def close(self) -> None:
        """Stop now and release the engine thread (idempotent)."""
        with self._cv:
            self._closed = True
            self._gen += 1
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        for th in self._tts_threads:
            if th.is_alive() and th is not threading.current_thread():
                th.join(5)
        self._finish_subscribers()

    @property
    def closed(self) -> bool:
        return self._closed or not self._thread.is_alive() and self._thread.ident is not None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _enqueue(self, seg: _Segment, *, block: bool, timeout: float | None = None) -> None:
        """Append a segment (the caller holds ``_cv``)."""
        if self._closed or self._ended:
            raise StreamClosed("the stream has ended")
        limit = int(MAX_BUFFER * SAMPLE_RATE)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._buffered + seg.samples.size > limit and self._buffered > 0:
            if not block:
                raise BufferFull(f"more than {MAX_BUFFER:.0f} s of audio is waiting")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise BufferFull(f"more than {MAX_BUFFER:.0f} s of audio is waiting")
            self._cv.wait(left)
            if self._closed:
                raise StreamClosed("the stream was closed")
        seg.gen = self._gen
        self._fifo.append(seg)
        self._buffered += seg.samples.size
        self._cv.notify_all()

    # ------------------------------------------------------------------------------------
    # output
    # ------------------------------------------------------------------------------------

    def subscribe(self, kinds: tuple[str, ...] = ("audio", "video", "event"),
                  maxsize: int = SUBSCRIBER_QUEUE, loop=None) -> Subscription:
        """A new bounded queue of output items (from now on); see :class:`Subscription`."""
        sub = Subscription(self, set(kinds), maxsize, loop)
        with self._subs_lock:
            if self._closed or (self._thread.ident is not None and not self._thread.is_alive()):
                sub.closed = True
                sub._end_marker()
                return sub
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            if sub in self._subs:
                self._subs.remove(sub)
                if sub.overflowed:
                    self._count_slow_subscriber()

    def _count_slow_subscriber(self) -> None:
        self.stats["subscribers_closed_slow"] += 1

    def __iter__(self) -> Iterator[AudioChunk | VideoFrame | Event]:
        sub = self.subscribe()
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()
        yield from sub

    def start(self) -> None:
        if self._thread.ident is None:
            self._thread.start()

    def _emit(self, item: Any) -> None:
        kind = ("audio" if isinstance(item, AudioChunk) else
                "video" if isinstance(item, VideoFrame) else "event")
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            if kind in sub.kinds:
                sub._offer(item, block=not self.realtime)

    def _finish_subscribers(self) -> None:
        with self._subs_lock:
            subs = list(self._subs)
            self._subs.clear()
        for sub in subs:
            sub.closed = True
            sub._end_marker(block=not self.realtime)   # offline: every item is delivered

    # ------------------------------------------------------------------------------------
    # the engine
    # ------------------------------------------------------------------------------------

    def _take(self, n: int) -> tuple[np.ndarray, bool, float]:
        """``n`` samples from the FIFO (zeros where it runs dry); whether any were real; when
        the first segment they came from was queued."""
        out = np.zeros(n, np.float32)
        got = 0
        wall = time.perf_counter()
        with self._cv:
            if self._fifo:
                wall = self._fifo[0].wall
            while got < n and self._fifo:
                seg = self._fifo[0]
                if seg.phones is not None and seg.pos == 0:
                    base = (self.intake + got) / SAMPLE_RATE
                    self._phones.extend((base + p.start, base + p.end, p.label)
                                        for p in seg.phones)
                k = min(n - got, seg.samples.size - seg.pos)
                out[got:got + k] = seg.samples[seg.pos:seg.pos + k]
                seg.pos += k
                got += k
                if seg.pos >= seg.samples.size:
                    self._fifo.popleft()
            self._buffered -= got
            if got:
                self._cv.notify_all()
        self._got_last = got
        return out, got > 0, wall

    def _silence_after(self, start: int) -> None:
        """Silence what was taken but not yet sent (an interrupt), from absolute ``start``."""
        i = max(0, start - self._hist_start)
        self._hist[i:] = 0.0
        t = start / SAMPLE_RATE
        self._phones = [p for p in self._phones if p[0] < t]
        self._phones = [(a, min(b, t), lab) for a, b, lab in self._phones]
        self._last_real = min(self._last_real, start - 1)
        self._analyzer.forget_after(start)

    def _advance(self) -> None:
        """One tick: take audio, send the audio now due, and mark the frames now due."""
        x, real, wall = self._take(self._tick)
        if self._interrupt_pending:
            self._interrupt_pending = False
            self._silence_after(self.out_pos)
            self._interrupt_at_sample = self.out_pos
            self._emit(Event("interrupted", self.out_pos / SAMPLE_RATE))
        self._hist = np.concatenate([self._hist, x])
        if real:
            self._input_end = self.intake + self._got_last
            nz = np.flatnonzero(np.abs(x) > _SILENT_PEAK)
            if nz.size:
                self._last_real = self.intake + int(nz[-1])
                if self._first_sample is None and not self._speaking:
                    self._first_sample = self.intake + int(nz[0])
                    self._pending_first = wall
        self.intake += x.size
        t = time.perf_counter()
        self._analyzer.update(self._hist, self._hist_start, self.intake, min_hops=8)
        self._analysis_total += time.perf_counter() - t     # per-hop features, once per hop
        keep = int((self.context + 1.0) * SAMPLE_RATE) + self.delay
        if self._hist.size > 2 * keep:
            cut = self._hist.size - keep
            self._hist = self._hist[cut:].copy()
            self._hist_start += cut
            t_old = (self._hist_start / SAMPLE_RATE) - 1.0
            self._phones = [p for p in self._phones if p[1] >= t_old]
        end = self.intake - self.delay
        if end > self.out_pos:
            a = self._hist_at(self.out_pos, end)
            pcm = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
            self._emit(AudioChunk(self.out_pos, pcm))
            self.stats["audio_seconds"] = end / SAMPLE_RATE
            self._update_speaking(self.out_pos, end)
            self.out_pos = end

    def _update_speaking(self, a: int, b: int) -> None:
        """``speaking`` / ``idle`` events at output time."""
        if not self._speaking and self._first_sample is not None and self._first_sample < b:
            self._speaking = True
            self._emit(Event("speaking", max(a, self._first_sample) / SAMPLE_RATE))
        elif self._speaking and self._last_real < b - int(0.3 * SAMPLE_RATE):
            with self._cv:
                empty = not self._fifo
            if empty:
                self._speaking = False
                self._first_sample = None
                self._emit(Event("idle", (self._last_real + 1) / SAMPLE_RATE))

    def _hist_at(self, a: int, b: int) -> np.ndarray:
        """Absolute samples [a, b) of the history (zeros before the start of the clock)."""
        out = np.zeros(b - a, np.float32)
        lo, hi = max(a, self._hist_start), min(b, self._hist_start + self._hist.size)
        if hi > lo:
            out[lo - a:hi - a] = self._hist[lo - self._hist_start:hi - self._hist_start]
        return out

    def _lips_row(self, x: np.ndarray, phones: list[Phone], w0_frame: int, k: int) -> np.ndarray:
        """Lip channels of frame ``k`` of a window of audio ``x`` that starts at a frame
        boundary: the speech and lip-sync stages run on the window, one row is kept."""
        from ..motion import lipsync_track
        from ..speech import analyze_speech, speech_from_phones

        audio = Audio(samples=x, sample_rate=SAMPLE_RATE, source="stream")
        if phones:
            speech = speech_from_phones(audio, phones)
        else:
            speech = analyze_speech(audio, lang="und", path="acoustic")
        track = lipsync_track(speech, k + 1, self.fps,
                              expression_scale=float(self.opts.expression_scale))
        return track.values[k].copy()

    def _live_lips_row(self, w0: int, w1: int, phones: list[Phone], k: int) -> np.ndarray:
        """Lip channels of frame ``k`` of the window of samples ``[w0, w1)`` (``w0`` at a frame
        boundary): the incremental speech analyzer gives the window's speech from its cached
        per-hop features (only hops not seen before are analysed), the lip-sync stage runs on
        it and one row is kept."""
        from ..motion import lipsync_track

        an = self._analyzer
        hs = an.hop_samples
        j0, j1 = w0 // hs, -(-w1 // hs)
        an.update(self._hist, self._hist_start, self.intake, upto=j1)
        speech = an.window(j0, j1)
        if phones:
            speech = _with_phones(speech, phones, (w0 - j0 * hs) / SAMPLE_RATE)
        frac = (w0 - j0 * hs) / hs
        if frac:
            speech = _shift_speech(speech, frac)
        track = lipsync_track(speech, k + 1, self.fps,
                              expression_scale=float(self.opts.expression_scale))
        return track.values[k].copy()

    def _motion(self, i: int) -> dict[str, float]:
        """The motion of frame ``i``: lips from the analysis window, the rest from idle life."""
        from ..motion import LIPSYNC_CHANNELS, mix_tracks

        k = min(i, int(math.ceil(self.context * self.fps)))
        w0 = int(round((i - k) * self._frame_len))
        w1 = int(round((i + 1) * self._frame_len)) + int(round(self.lookahead * SAMPLE_RATE))
        x = self._hist_at(w0, w1)
        t0, t1 = w0 / SAMPLE_RATE, w1 / SAMPLE_RATE
        phones = [Phone(max(0.0, a - t0), min(b, t1) - t0, lab)
                  for a, b, lab in self._phones if b > t0 and a < t1]
        if not phones and float(np.abs(x).max(initial=0.0)) < _SILENT_PEAK:
            lips = self._rest_lips
        else:
            t = time.perf_counter()
            lips = self._live_lips_row(w0, w1, phones, k)
            self._analysis_total += time.perf_counter() - t
            self._analysis_n += 1
        n_idle = self._idle.n_frames
        period = 2 * (n_idle - 1)
        j = i % period
        j = j if j < n_idle else period - j
        idle = MotionTrack(self.fps, list(self._idle.channels), self._idle.values[j:j + 1])
        speech = MotionTrack(self.fps, list(LIPSYNC_CHANNELS), lips[None, :])
        mixed = mix_tracks(speech=speech, base=idle, overlays=[self._emotion], n_frames=1,
                           fps=self.fps)
        return dict(zip(mixed.channels, mixed.values[0].tolist()))

    def _frame_due(self, i: int) -> bool:
        """Frame ``i`` is due as soon as its analysis window is complete (its interval and the
        lookahead have been taken in); the audio before its interval has been sent out by then,
        so it leaves just ahead of its own sound."""
        w1 = int(round((i + 1) * self._frame_len)) + int(round(self.lookahead * SAMPLE_RATE))
        return w1 <= self.intake

    def _render(self, i: int) -> None:
        m = self._motion(i)
        t = time.perf_counter()
        img = self.renderer.render(m)
        self._render_total += time.perf_counter() - t
        n = self.stats["frames_sent"] + 1
        self.stats["frames_sent"] = n
        self.stats["render_ms_mean"] = 1000.0 * self._render_total / n
        if self._analysis_n:
            self.stats["analysis_ms_mean"] = 1000.0 * self._analysis_total / self._analysis_n
        if self._pending_first is not None and self._first_sample is not None \
                and int(round((i + 1) * self._frame_len)) > self._first_sample:
            lat = 1000.0 * (time.perf_counter() - self._pending_first)
            self.stats["first_frame_latency_ms"].append(round(lat, 1))
            del self.stats["first_frame_latency_ms"][:-1000]
            self._pending_first = None
        if self._interrupt_at is not None and self._interrupt_at_sample is not None \
                and int(round(i * self._frame_len)) >= self._interrupt_at_sample:
            lat = 1000.0 * (time.perf_counter() - self._interrupt_at)
            self.stats["interrupt_latency_ms"].append(round(lat, 1))
            self._interrupt_at = None
            self._interrupt_at_sample = None
        self._emit(VideoFrame(i, self.fps, img, m))

    def _run(self) -> None:
        from ..render import rendering_threads

        with rendering_threads():          # OpenCV's and BLAS's thread counts, as offline
            self._engine()

    def _engine(self) -> None:
        t_start = time.perf_counter()
        try:
            while True:
                with self._cv:
                    if self._closed:
                        break
                    drained = not self._fifo
                    if drained and self._ended and self.out_pos >= self._input_end \
                            and self.out_pos >= int(0.2 * SAMPLE_RATE) + self._last_real:
                        break
                    # offline: a tick is taken only when it is full of input (or the input has
                    # ended), so a slow producer never gets silence inserted between its chunks
                    if not self.realtime and not self._ended and self._buffered < self._tick:
                        self._cv.wait(0.1)
                        continue
                if self.realtime:
                    # every tick the wall clock has reached: audio never waits for pictures
                    ticks = int((time.perf_counter() - t_start) * SAMPLE_RATE) // self._tick \
                        - self.intake // self._tick
                    if ticks <= 0 and not self._frame_due(self.next_frame):
                        due = t_start + (self.intake + self._tick) / SAMPLE_RATE
                        with self._cv:
                            self._cv.wait(max(0.0, due - time.perf_counter()))
                        continue
                    if ticks > 1:
                        self.stats["ticks_late"] = self.stats.get("ticks_late", 0) + ticks - 1
                    for _ in range(ticks):
                        self._advance()
                else:
                    self._advance()
                # frames now due: in real time, the oldest of the newest 1 + MAX_BACKLOG is
                # rendered (older ones are dropped) and the clock is looked at again before the
                # next, so audio keeps its pace; offline, every one
                last = self.next_frame - 1
                while self._frame_due(last + 1):
                    last += 1
                if last >= self.next_frame:
                    if self.realtime:
                        if last - self.next_frame > MAX_BACKLOG:
                            self.stats["frames_dropped"] += last - self.next_frame - MAX_BACKLOG
                            self.next_frame = last - MAX_BACKLOG
                        if last > self.next_frame:
                            self.stats["frames_behind"] += 1   # sent a frame late, not dropped
                        last = self.next_frame
                    while self.next_frame <= last:
                        i = self.next_frame
                        self.next_frame += 1
                        self._render(i)
                    if self.realtime and time.perf_counter() - t_start > \
                            (self.intake + self._tick) / SAMPLE_RATE:
                        self.stats["frames_late"] += 1      # it took past the next tick
        except BaseException as exc:  # surfaced through .error and an event
            self.error = exc
            log.exception("stream engine failed")
            self._emit(Event("error", self.out_pos / SAMPLE_RATE,
                             {"code": "engine_failed", "message": str(exc)}))
        finally:
            self._emit(Event("end", self.out_pos / SAMPLE_RATE))
            self._finish_subscribers()

    # ------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """State and figures (for ``GET /sessions/{id}``)."""
        s = dict(self.stats)
        lat = s.pop("first_frame_latency_ms")
        il = s.pop("interrupt_latency_ms")
        s["first_frame_latency_ms"] = _percentiles(lat)
        s["interrupt_latency_ms"] = _percentiles(il)
        with self._cv:
            buffered = self._buffered / SAMPLE_RATE
        return {"state": "closed" if self.closed else ("speaking" if self._speaking else "idle"),
                "fps": self.fps, "width": self.width, "height": self.height,
                "sample_rate": SAMPLE_RATE, "latency_s": self.delay / SAMPLE_RATE,
                "buffered_s": round(buffered, 3), "clock_s": round(self.out_pos / SAMPLE_RATE, 3),
                "viewers": len(self._subs), "stats": s}


def _shift_speech(speech, frac: float):
    """``speech`` read ``frac`` hops later (time 0 moved to ``frac`` hops after its start)."""
    from dataclasses import replace

    n = speech.n
    t = np.arange(n) + frac
    src = np.arange(n)

    def at(v: np.ndarray) -> np.ndarray:
        return np.interp(t, src, np.asarray(v, np.float64)).astype(np.float32)

    return replace(speech, activity=at(speech.activity), loudness=at(speech.loudness),
                   pitch=np.asarray(speech.pitch)[np.minimum(np.round(t).astype(int), n - 1)],
                   articulation={k: at(v) for k, v in speech.articulation.items()})


def _with_phones(speech, phones: list[Phone], offset: float):
    """The window's speech with its mouth targets and activity from known phone timing (the
    TTS's events; times relative to the window's start, which is ``offset`` seconds after the
    speech's), as :func:`~echomimic.speech.speech_from_phones` does."""
    from dataclasses import replace

    from ..speech.analyze import phone_timeline

    n, hop = speech.n, speech.hop
    shifted = [Phone(p.start + offset, p.end + offset, p.label) for p in phones]
    art, act = phone_timeline(shifted, n, hop, n * hop)
    return replace(speech, activity=act, articulation=art, phones=shifted,
                   lang="tts", method="tts-events")


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "max": round(float(a.max()), 1)}
