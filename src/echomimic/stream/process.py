"""A live session whose engine runs in a process of its own.

The engine of a :class:`~echomimic.stream.session.Stream` is a Python thread: two sessions in
one process share one interpreter lock, and on two cores they render no more frames together
than one session alone (33 frames/s in all at 512x512, against 33 for one). In two processes
they render 59 frames/s together, enough for two sessions at 25 fps. :class:`ProcessStream`
runs an ordinary :class:`Stream` in a child process and offers the same interface in this one:
input calls are forwarded to the child; its output items (audio chunks, frames, events) come
back through a pipe and are handed to this process's subscribers, so the WebRTC, RTMP and
WebSocket fronts use it unchanged.

The pipe carries our own objects between our own processes (the child is started with
``spawn`` from this package's code); nothing a user sends is unpickled.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import threading
import time
from typing import Any

from ..errors import EchomimicError
from .session import SAMPLE_RATE, SUBSCRIBER_QUEUE, BufferFull, Stream, StreamClosed, Subscription

log = logging.getLogger("echomimic.stream")

#: Seconds a child process may take to start and prepare the portrait.
START_TIMEOUT = 180.0
#: Seconds a call into the child may take (``push_audio`` may block while its buffer is full).
CALL_TIMEOUT = 120.0


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _child(image: Any, options: dict[str, Any], cmd, out) -> None:
    """The child's main: an ordinary Stream, its output sent to ``out``, calls read from ``cmd``."""
    try:
        stream = Stream(image, autostart=False, **options)
    except BaseException as exc:
        out.send(("error", _portable(exc)))
        return
    # the parent's subscribers apply their own limits: this queue only absorbs the pipe's jitter
    sub = stream.subscribe(("audio", "video", "event"), maxsize=10 * SUBSCRIBER_QUEUE)
    out.send(("ready", {"width": stream.width, "height": stream.height, "fps": stream.fps,
                        "setup_seconds": stream.setup_seconds, "delay": stream.delay,
                        "realtime": stream.realtime, "started_at": stream.started_at}))
    stream.start()

    def forward() -> None:
        try:
            for item in sub:
                out.send(("item", item))
            stream.close()
            out.send(("end", (_portable(stream.error) if stream.error else None,
                              dict(stream.stats), stream.info())))
        except (BrokenPipeError, EOFError, OSError):
            stream.close()

    fwd = threading.Thread(target=forward, name="echomimic-stream-forward", daemon=True)
    fwd.start()
    while True:
        try:
            op, args, kwargs = cmd.recv()
        except (EOFError, OSError):
            stream.close()
            break
        try:
            if op == "stats":
                result: Any = dict(stream.stats)
            elif op == "close":
                stream.close()
                result = None
            else:
                result = getattr(stream, op)(*args, **kwargs)
            cmd.send(("ok", result))
        except BaseException as exc:
            cmd.send(("error", _portable(exc)))
        if op == "close":
            break
    fwd.join(10)


class ProcessStream:
    """:class:`~echomimic.stream.session.Stream`'s interface, the engine in a child process.

    Takes the same arguments; ``push_audio``, ``say``, ``interrupt``, ``end``, ``info`` and
    :attr:`stats` are answered by the child, ``subscribe`` and iteration are served here."""

    def __init__(self, image: Any, *, realtime: bool = True, **options: Any):
        ctx = mp.get_context("spawn")
        self._cmd, child_cmd = ctx.Pipe()
        out_r, out_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(image, dict(options, realtime=realtime),
                                                      child_cmd, out_w),
                                 name="echomimic-stream-engine", daemon=True)
        self._proc.start()
        child_cmd.close()
        out_w.close()
        self._out = out_r
        try:
            if not out_r.poll(START_TIMEOUT):
                raise EOFError
            kind, value = out_r.recv()
        except (EOFError, OSError):
            self._proc.kill()
            self._proc.join(5)
            raise RuntimeError("the stream engine process did not start") from None
        if kind == "error":
            self._proc.join(5)
            raise value
        self.width, self.height, self.fps = value["width"], value["height"], value["fps"]
        self.setup_seconds, self.delay = value["setup_seconds"], value["delay"]
        self.realtime, self.started_at = value["realtime"], value["started_at"]
        self.error: BaseException | None = None
        self._closed = False
        self._call_lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()
        self._local_stats = {"subscribers_closed_slow": 0}
        self._final_stats: dict[str, Any] | None = None     # sent by the child at its end
        self._final_info: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._read, name="echomimic-stream-reader",
                                        daemon=True)
        self._thread.start()

    # the subscribers are served here, as a Stream serves them
    subscribe = Stream.subscribe
    _emit = Stream._emit
    _finish_subscribers = Stream._finish_subscribers
    __iter__ = Stream.__iter__

    _unsubscribe = Stream._unsubscribe

    def _count_slow_subscriber(self) -> None:
        self._local_stats["subscribers_closed_slow"] += 1

    def _read(self) -> None:
        try:
            while True:
                kind, value = self._out.recv()
                if kind == "item":
                    self._emit(value)
                else:
                    self.error, self._final_stats, self._final_info = value
                    break
        except (EOFError, OSError):
            pass
        finally:
            self._closed = True
            self._finish_subscribers()

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        with self._call_lock:
            if self._closed and op != "close" or not self._proc.is_alive():
                raise StreamClosed("the stream has ended")
            try:
                self._cmd.send((op, args, kwargs))
                if not self._cmd.poll(CALL_TIMEOUT):
                    raise StreamClosed("the stream engine process does not answer")
                kind, value = self._cmd.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise StreamClosed("the stream engine process has ended") from None
        if kind == "error":
            raise value
        return value

    # ------------------------------------------------------------------------------------

    def push_audio(self, pcm: Any, rate: int = SAMPLE_RATE, *, block: bool = True,
                   timeout: float | None = None) -> None:
        """As :meth:`Stream.push_audio`; a full buffer is waited on here (the child never
        blocks, so an ``interrupt`` gets through while a push waits)."""
        if isinstance(pcm, (bytearray, memoryview)):
            pcm = bytes(pcm)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self._call("push_audio", pcm, rate, block=False)
                return
            except BufferFull:
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise
                time.sleep(0.05)

    def say(self, text: str, *, lang: str | None = None, voice: str | None = None) -> None:
        self._call("say", text, lang=lang, voice=voice)

    def interrupt(self) -> None:
        self._call("interrupt")

    def end(self) -> None:
        self._call("end")

    def info(self) -> dict[str, Any]:
        if self._closed or not self._proc.is_alive():
            out = dict(self._final_info or {"fps": self.fps, "width": self.width,
                                            "height": self.height, "stats": {}})
            out.update(state="closed", viewers=0)
            return out
        out = self._call("info")
        out["viewers"] = len(self._subs)
        return out

    @property
    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = {"frames_sent": 0, "frames_dropped": 0, "frames_late": 0,
                             "frames_behind": 0,
                             "audio_seconds": 0.0, "render_ms_mean": 0.0, "analysis_ms_mean": 0.0,
                             "first_frame_latency_ms": [], "interrupt_latency_ms": []}
        try:
            s.update(self._call("stats"))
        except (StreamClosed, EchomimicError):
            s.update(self._final_stats or {})      # the child's last figures (none if it died)
        s.update(self._local_stats)
        return s

    def start(self) -> None:
        """The engine starts with the process (for :class:`Stream`'s interface)."""

    def close(self) -> None:
        """Stop the engine and its process (idempotent)."""
        if self._proc.is_alive():
            try:
                self._call("close")
            except (StreamClosed, EchomimicError, RuntimeError):
                pass
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._closed = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        self._finish_subscribers()
        for conn in (self._cmd, self._out):
            try:
                conn.close()
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ProcessStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
