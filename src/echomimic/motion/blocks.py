"""The drive stage in blocks, ahead of the renderer, for a recording analysed in blocks.

:func:`echomimic.pipeline.animate` analyses a long recording before its first frame when every
stage needs the whole speech track. For the common case (a recording drives the lips, idle
life the rest) it runs the speech stage (:class:`~echomimic.speech.incremental.SpeechAnalyzer`)
and this module on a producer thread instead, so the renderer starts once the first block is
ready:

* **what needs the whole clip is known first**: the speech activity and loudness (a cheap
  pre-pass) and the clip-wide decisions (language, openness gain, reference pitch, from the
  busiest 8 s); idle life (blinks at phrase ends, head motion that follows speaking, nods on
  loudness accents, breathing) is made for the whole clip from them;
* **what is local is made in blocks**: the pitch and mouth targets of each block of
  :data:`BLOCK_S` seconds, then the lip-sync of the frames whose lookahead
  (:data:`LIP_LOOKAHEAD_S`, the reach of coarticulation, closures and pause rests) is
  analysed, computed on a window that starts :data:`LIP_CONTEXT_S` earlier, and the brow raises
  on pitch accents (:func:`~echomimic.motion.idle.brow_raise`, its state carried from block to
  block); the rows are mixed and quantized as :func:`echomimic.pipeline.drive` does.

The result equals the whole-clip path's track (``tests/test_pipeline_overlap.py``): the
renderer reads :class:`MotionRows` like the rows of a track, waiting for a row only when the
producer has not reached it. The producer stays at most :data:`AHEAD_S` seconds of frames ahead
of the renderer, so its work is spread over the render and its memory stays bounded.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

import numpy as np

from ..types import MotionTrack, Speech

__all__ = ["MotionRows", "frame_quantum", "BLOCK_S", "AHEAD_S", "LIP_CONTEXT_S",
           "LIP_LOOKAHEAD_S"]

#: Whether :func:`echomimic.pipeline.animate` analyses recordings in blocks (False: the whole
#: clip first, as every other input is).
ENABLED = True
#: Seconds of speech analysed per block.
BLOCK_S = 1.0
#: Seconds of frames the producer may be ahead of the renderer.
AHEAD_S = 10.0
#: Seconds of speech before a block of frames that its lip-sync window starts with (the
#: mouth dynamics' memory, closures and pauses that began before it).
LIP_CONTEXT_S = 1.0
#: Seconds of speech after a block of frames that must be analysed before its lip-sync (lead,
#: dynamics, closures up to 0.25 s and pauses of 0.3 s are decided within it).
LIP_LOOKAHEAD_S = 0.6


def frame_quantum(fps: float, hop: float) -> int | None:
    """The fewest frames that span a whole number of hops (lip-sync windows start there), or
    None when no small number does."""
    for q in range(1, 201):
        hops = q / fps / hop
        if abs(hops - round(hops)) < 1e-6:
            return q
    return None


class MotionRows:
    """The rows of the mixed, quantized motion track, made on a producer thread.

    Reads like ``track.values`` for the render loop (``rows[i]``, ``len(rows)``, ``shape``);
    :meth:`track` gives the finished :class:`MotionTrack` once every row is made. Pending
    progress of the analysis is passed to ``progress`` on the reading thread.
    """

    def __init__(self, analyzer, *, n_frames: int, opts, progress: Callable | None = None):
        from . import idle_track, mix_tracks
        from .idle import _on_grid

        self.an = analyzer
        self.speech: Speech = analyzer.speech
        self.n_frames = int(n_frames)
        self.fps = fps = float(opts.fps)
        self.opts = opts
        self._progress = progress
        self.quantum = frame_quantum(fps, self.speech.hop)
        if self.quantum is None:
            raise ValueError(f"no lip-sync window boundary for fps {fps}")
        sp = self.speech
        # idle life for the whole clip: pitch is not known yet (zeros: no brow raises), the
        # brows are made per block below
        self.ref = float(sp.meta.get("pitch_ref_hz") or 0.0)
        self.idle = idle_track(self.n_frames, fps, seed=int(opts.seed), speech=sp,
                               head_motion_scale=float(opts.head_motion_scale),
                               blink_rate=opts.blink_rate,
                               expression_scale=float(opts.expression_scale))
        from .idle import _RATE

        self._grid_rate = _RATE
        self._m = int(math.ceil(self.n_frames / fps * _RATE)) + 2
        self._act_grid = _on_grid(sp.activity, sp.hop, self._m)
        self._brow = np.zeros(self._m)
        self._brow_done = 0
        probe = mix_tracks(speech=self._lips(0, 0, 0), base=self._idle_rows(0, 0),
                           n_frames=0, fps=fps)
        self.channels = list(probe.channels)
        self.meta = dict(probe.meta)
        self.values = np.zeros((self.n_frames, len(self.channels)), np.float32)
        self.shape = self.values.shape
        self.made = 0                      # rows 0:made are ready
        self.read = 0                      # rows the renderer has asked for
        self.seconds = 0.0                 # producer's busy time
        self.error: BaseException | None = None
        self._events: list[tuple[str, float]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="echomimic-speech", daemon=True)

    # producer ----------------------------------------------------------------------------

    def start(self) -> "MotionRows":
        self._thread.start()
        return self

    def _lips(self, f0: int, f1: int, ready: int) -> MotionTrack:
        """Lip-sync rows of frames ``f0:f1`` from the speech analysed so far (hops 0:ready)."""
        from . import lipsync_track

        sp, q = self.speech, self.quantum
        hop = sp.hop
        fs = max(0, f0 - int(math.ceil(LIP_CONTEXT_S * self.fps)))
        fs -= fs % q
        h0 = int(round(fs / self.fps / hop))
        h1 = sp.n if ready >= sp.n else ready
        window = Speech(duration=(h1 - h0) * hop, hop=hop, activity=sp.activity[h0:h1],
                        loudness=sp.loudness[h0:h1], pitch=sp.pitch[h0:h1],
                        articulation={k: v[h0:h1] for k, v in sp.articulation.items()},
                        lang=sp.lang, method=sp.method)
        t = lipsync_track(window, f1 - fs, self.fps,
                          expression_scale=float(self.opts.expression_scale))
        return MotionTrack(self.fps, list(t.channels), t.values[f0 - fs:], dict(t.meta))

    def _idle_rows(self, f0: int, f1: int) -> MotionTrack:
        """Idle-life rows of frames ``f0:f1`` with their brow raises."""
        from .idle import BROW_MARGIN, _BROW_MAX, brow_follow, brow_target

        vals = self.idle.values[f0:f1].copy()
        if self.ref and f1 > f0:
            sp, R = self.speech, self._grid_rate
            t = np.arange(f0, f1) / self.fps
            g1 = min(self._m, int(math.floor(t[-1] * R)) + 2)      # grid samples used
            if g1 > self._brow_done:
                a = max(0, self._brow_done - BROW_MARGIN)
                b = min(self._m, g1 + BROW_MARGIN)
                gt = np.arange(a, b) / R
                idx = np.floor(gt / sp.hop).astype(np.int64)
                pitch = np.where(idx < sp.n, sp.pitch[np.minimum(idx, sp.n - 1)], 0.0)
                init = self._brow[self._brow_done - 1] if self._brow_done else 0.0
                k0 = self._brow_done - a
                target = brow_target(pitch.astype(np.float64), self._act_grid[a:b], self.ref)
                part = brow_follow(target[k0:g1 - a], initial=init)
                self._brow[self._brow_done:g1] = part
                self._brow_done = g1
            grid_t = np.arange(self._m) / R
            lo, hi = int(math.floor(t[0] * R)), g1
            brow = np.clip(np.interp(t, grid_t[lo:hi], np.clip(self._brow[lo:hi], 0.0, 1.0))
                           * _BROW_MAX * float(self.opts.expression_scale), 0.0, 1.0)
            ch = list(self.idle.channels)
            vals[:, ch.index("browInnerUp")] = brow
            vals[:, ch.index("browOuterUpLeft")] = 0.7 * brow
            vals[:, ch.index("browOuterUpRight")] = 0.7 * brow
        return MotionTrack(self.fps, list(self.idle.channels), vals, dict(self.idle.meta))

    def _make(self, f0: int, f1: int, ready: int) -> None:
        from . import mix_tracks, quantize

        lips = self._lips(f0, f1, ready)
        base = self._idle_rows(f0, f1)
        mixed = mix_tracks(speech=lips, base=base, overlays=[], n_frames=f1 - f0, fps=self.fps)
        self.values[f0:f1] = quantize(mixed).values

    def _run(self) -> None:
        try:
            sp = self.speech
            frame_s = 1.0 / self.fps
            for ready in self.an.blocks(BLOCK_S):
                t = time.perf_counter()
                if ready >= sp.n:
                    f1 = self.n_frames
                else:
                    f1 = int(math.floor((ready * sp.hop - LIP_LOOKAHEAD_S) / frame_s))
                    f1 = max(self.made, min(self.n_frames, f1))
                if f1 > self.made:
                    self._make(self.made, f1, ready)
                self.seconds += time.perf_counter() - t
                with self._cv:
                    self.made = f1
                    self._events.append(("analyze", min(1.0, ready / max(1, sp.n))))
                    self._cv.notify_all()
                    ahead = int(AHEAD_S * self.fps)
                    while not self._stop and self.made - self.read > ahead:
                        self._cv.wait(0.5)
                    if self._stop:
                        return
            if self.made < self.n_frames:      # frames past the end of the speech
                t = time.perf_counter()
                self._make(self.made, self.n_frames, sp.n)
                self.seconds += time.perf_counter() - t
            with self._cv:
                self.made = self.n_frames
                self._cv.notify_all()
        except BaseException as exc:           # surfaced on the reading thread
            with self._cv:
                self.error = exc
                self._cv.notify_all()

    # reader ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, i: Any) -> np.ndarray:
        if isinstance(i, (int, np.integer)):
            need = int(i) + 1 if i >= 0 else self.n_frames
        elif isinstance(i, slice):
            start, stop, step = i.indices(self.n_frames)
            need = max(start, stop) if step > 0 else start + 1
        else:                                  # fancy indexing: every row
            need = self.n_frames
        with self._cv:
            self.read = max(self.read, need - 1)
            self._cv.notify_all()
            while self.made < need and self.error is None:
                self._cv.wait(0.5)
            events, self._events = self._events, []
            if self.error is not None:
                raise self.error
        if self._progress is not None:
            for stage, frac in events:
                self._progress(stage, frac)
        return self.values[i]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row (waits for the producer): a stage that needs the whole track still works,
        without the overlap."""
        self.wait()
        return self.values if dtype is None else self.values.astype(dtype)

    def wait(self) -> None:
        """Until every row is made (re-raising the producer's error)."""
        with self._cv:
            self.read = self.n_frames
            self._cv.notify_all()
            while self.made < self.n_frames and self.error is None:
                self._cv.wait(0.5)
            if self.error is not None:
                raise self.error
        self._thread.join()

    def close(self) -> None:
        """Stop the producer (a cancelled or failed render)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(10)

    def view(self) -> Any:
        """The rows as a track for the render loop (``fps``, ``channels``, ``values`` read row
        by row, ``n_frames``, ``meta``)."""
        from types import SimpleNamespace

        return SimpleNamespace(fps=self.fps, channels=list(self.channels), values=self,
                               n_frames=self.n_frames, meta=dict(self.meta))

    def track(self, meta: dict[str, Any]) -> MotionTrack:
        """The finished track (call after :meth:`wait`)."""
        return MotionTrack(fps=self.fps, channels=list(self.channels), values=self.values,
                           meta={**self.meta, **meta})
