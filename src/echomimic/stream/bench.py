"""``echomimic bench --stream``: latency, sync and drift of live sessions, measured on their output.

Every figure is measured on what a subscriber of the session receives (the frames and audio
chunks as they leave the engine, before the network):

* **first-frame latency**: from the moment a chunk of speech is pushed after silence to the
  arrival of the first frame whose interval holds its first sample (p50 / p95 over utterances);
* **audio-to-mouth offset**: the lag that best aligns the received audio's loudness envelope
  with the received frames' mouth opening (``jawOpen``), by cross-correlation at 100 Hz; a
  negative lag means the mouth leads the sound (the lip-sync stage leads by 40 ms on purpose);
* **A/V drift**: over a long session, the received audio clock against the wall clock and the
  last frame's timestamp against the audio received with it;
* **late / dropped frames**: the session's counters (a frame the CPU could not render in time is
  dropped; audio never is);
* **concurrent sessions**: how many 512x512 sessions run side by side with at most 0.1 % of their
  frames dropped, with their engines as threads of one process and in processes of their own
  (:class:`~echomimic.stream.process.ProcessStream`, ``ECHOMIMIC_STREAM_PROCESSES=on``);
* **mouth-closed delay**: from the last sample of sound to the first frame with the mouth shut;
* **interrupt latency**: from ``interrupt()`` to the first frame (and audio chunk) after the cut.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any, Callable

import numpy as np

from .session import SAMPLE_RATE, AudioChunk, Stream, VideoFrame

__all__ = ["run_stream_bench", "format_stream_report"]


def _photo() -> bytes:
    from PIL import Image
    from skimage import data

    b = io.BytesIO()
    Image.fromarray(data.astronaut()).save(b, "PNG")
    return b.getvalue()


def _speech(seconds: float) -> np.ndarray:
    from ..bench import BENCH_TEXT
    from ..media import iter_audio_chunks
    from ..speech import synthesize

    audio, _ = synthesize(BENCH_TEXT, lang="en")
    x = np.concatenate([c[0] for c in iter_audio_chunks(audio, sample_rate=SAMPLE_RATE)])
    x = x[: int(seconds * SAMPLE_RATE)]
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _concurrent(photo: bytes, speech: np.ndarray, size: int, fps: float, max_sessions: int,
                engine: str) -> dict[str, Any]:
    """The most sessions (1, 2, ...) that run side by side for 10 s with at most 0.1 % of their
    frames dropped."""
    from .process import ProcessStream

    make = Stream if engine == "thread" else ProcessStream
    held = 0
    results = []
    for k in range(1, max_sessions + 1):
        streams = [make(photo, realtime=True, crop="face", size=size, fps=fps) for _ in range(k)]
        time.sleep(1.0)
        for st_ in streams:
            st_.push_audio(np.tile(speech, 3).tobytes(), SAMPLE_RATE)
        time.sleep(10.0)
        stats = [st_.info()["stats"] for st_ in streams]
        for st_ in streams:
            st_.close()
        dropped = sum(x["frames_dropped"] for x in stats)
        total = sum(x["frames_sent"] + x["frames_dropped"] for x in stats)
        pct = 100.0 * dropped / max(1, total)
        behind = sum(x.get("frames_behind", 0) for x in stats)
        results.append({"sessions": k, "dropped_pct": round(pct, 2),
                        "sent_one_frame_late_pct": round(100.0 * behind / max(1, total), 2)})
        if pct <= 0.1:
            held = k
        else:
            break
    return {"engine": engine, "max_sessions_holding_fps": held, "runs": results}


def _pct(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "max": round(float(a.max()), 1)}


class _Collector(threading.Thread):
    """Reads a subscription and keeps timestamps, audio envelope and mouth opening."""

    def __init__(self, stream: Stream):
        super().__init__(daemon=True)
        self.sub = stream.subscribe(("audio", "video"), maxsize=2000)
        self.frames: list[tuple[float, int, float, float]] = []  # wall, index, jaw, close
        self.audio: list[tuple[float, int, np.ndarray]] = []     # wall, pts, samples
        self.start()

    def run(self) -> None:
        for item in self.sub:
            now = time.perf_counter()
            if isinstance(item, VideoFrame):
                self.frames.append((now, item.index, item.motion.get("jawOpen", 0.0),
                                    item.motion.get("mouthClose", 0.0)))
            elif isinstance(item, AudioChunk):
                self.audio.append((now, item.pts, item.samples))


def _offset_ms(col: _Collector, fps: float) -> float | None:
    """Lag (ms) of the mouth opening against the audio envelope; negative = mouth first."""
    if not col.audio or len(col.frames) < 50:
        return None
    x = np.concatenate([a[2] for a in col.audio]).astype(np.float32) / 32768.0
    start = col.audio[0][1]
    hop = SAMPLE_RATE // 100
    n = x.size // hop
    env = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))
    env = np.log(env + 1e-4)
    t_env = start / SAMPLE_RATE + (np.arange(n) + 0.5) / 100
    idx = np.array([f[1] for f in col.frames])
    jaw = np.array([f[2] for f in col.frames])
    t_fr = (idx + 0.5) / fps
    mouth = np.interp(t_env, t_fr, jaw)
    e = (env - env.mean()) / (env.std() + 1e-9)
    m = (mouth - mouth.mean()) / (mouth.std() + 1e-9)
    best, lag_best = -np.inf, 0
    for lag in range(-30, 31):                 # +-300 ms at 10 ms
        if lag >= 0:
            c = float(np.dot(e[lag:], m[: m.size - lag])) / (m.size - lag)
        else:
            c = float(np.dot(e[: lag], m[-lag:])) / (m.size + lag)
        if c > best:
            best, lag_best = c, lag
    # mouth[t] ~ env[t + lag]: the mouth leads by lag*10 ms when lag > 0
    return -10.0 * lag_best


def run_stream_bench(*, minutes: float = 1.0, size: int = 512, fps: float = 25.0,
                     utterances: int = 10, max_sessions: int = 4,
                     log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    import os

    photo = _photo()
    report: dict[str, Any] = {"size": size, "fps": fps, "cpus": os.cpu_count(),
                              "load_average_at_start": [round(v, 1) for v in os.getloadavg()]}
    speech = _speech(4.0)

    # 1. latency, offset, mouth closing, late/dropped: one real-time session, utterances with
    #    silences between them
    log(f"one {size}x{size} session, {utterances} utterances")
    s = Stream(photo, realtime=True, crop="face", size=size, fps=fps)
    report["setup_s"] = round(s.setup_seconds, 2)
    col = _Collector(s)
    time.sleep(1.0)
    ends = []
    for _ in range(utterances):
        t_push = time.perf_counter()
        s.push_audio(speech.tobytes(), SAMPLE_RATE)
        ends.append(t_push)
        time.sleep(speech.size / SAMPLE_RATE + 1.2)
    info = s.info()
    s.close()
    col.join(5)
    st = info["stats"]
    report["first_frame_latency_ms"] = st["first_frame_latency_ms"]
    report["audio_to_mouth_offset_ms"] = _offset_ms(col, fps)
    report["frames"] = {"sent": st["frames_sent"], "dropped": st["frames_dropped"],
                        "late": st["frames_late"], "behind": st.get("frames_behind", 0),
                        "dropped_pct": round(100.0 * st["frames_dropped"] /
                                             max(1, st["frames_sent"] + st["frames_dropped"]), 3)}
    report["render_ms_mean"] = round(st["render_ms_mean"], 2)
    report["analysis_ms_mean"] = round(st["analysis_ms_mean"], 2)
    # mouth-closed delay, per utterance, from the last loud sample to the first shut frame:
    # a property of the stages, not of the CPU, so it is measured on an offline session
    # (every frame rendered) fed the same utterances with silences between them
    s = Stream(photo, realtime=False, crop="face", size=size, fps=fps)
    col = _Collector(s)
    for _ in range(min(utterances, 5)):
        s.push_audio(speech.tobytes(), SAMPLE_RATE)
        s.push_audio(np.zeros(SAMPLE_RATE, np.int16).tobytes(), SAMPLE_RATE)
    s.end()
    col.join(600)
    s.close()
    x = np.concatenate([a[2] for a in col.audio]) if col.audio else np.zeros(0, np.int16)
    loud = np.abs(x.astype(np.int32)) > 500
    frames = np.array([(f[1], f[2], f[3]) for f in col.frames]) if col.frames else np.zeros((0, 3))
    delays = []
    if loud.any() and frames.size:
        runs = np.flatnonzero(np.diff(loud.astype(np.int8)) == -1)
        for r in runs:
            later = loud[r + 1: r + 1 + SAMPLE_RATE // 2]
            if later.any():
                continue                      # a gap inside speech
            t_end = (r + 1) / SAMPLE_RATE
            after = frames[frames[:, 0] / fps >= t_end]
            shut = after[(after[:, 1] < 0.02) & (after[:, 2] > 0.9)]
            if shut.size:
                delays.append(1000.0 * max(0.0, shut[0, 0] / fps - t_end))
    report["mouth_closed_after_speech_ms"] = _pct(delays)
    report["audio_to_mouth_offset_ms_offline"] = _offset_ms(col, fps)

    # 2. interrupt latency
    log("interrupts")
    s = Stream(photo, realtime=True, crop="face", size=size, fps=fps)
    for _ in range(5):
        s.push_audio(speech.tobytes(), SAMPLE_RATE)
        time.sleep(1.5)
        s.interrupt()
        time.sleep(1.0)
    report["interrupt_latency_ms"] = s.info()["stats"]["interrupt_latency_ms"]
    s.close()

    # 3. drift over a long session
    log(f"drift over {minutes:g} min")
    s = Stream(photo, realtime=True, crop="face", size=size, fps=fps)
    col = _Collector(s)
    t0 = time.perf_counter()
    long_speech = np.tile(speech, 3)
    while time.perf_counter() - t0 < minutes * 60:
        s.push_audio(long_speech.tobytes(), SAMPLE_RATE, timeout=60)
        time.sleep(long_speech.size / SAMPLE_RATE * 0.9)
    time.sleep(0.5)
    info = s.info()
    s.close()
    col.join(5)
    if col.audio and col.frames:
        w0, p0, _ = col.audio[0]
        w1, p1, a1 = col.audio[-1]
        audio_vs_wall = ((p1 + a1.size - p0) / SAMPLE_RATE) - (w1 - w0)
        last = col.frames[-1]
        audio_at_last = max(p + a.size for w, p, a in col.audio if w <= last[0]) / SAMPLE_RATE
        frame_vs_audio = last[1] / fps - audio_at_last
        report["drift"] = {"minutes": round((w1 - w0) / 60, 2),
                           "audio_clock_vs_wall_ms": round(1000 * audio_vs_wall, 1),
                           "last_frame_vs_audio_ms": round(1000 * frame_vs_audio, 1),
                           "frames_dropped": info["stats"]["frames_dropped"],
                           "frames_sent": info["stats"]["frames_sent"]}

    # 4. concurrent sessions: engines as threads of this process, then in processes of their own
    for engine, key in (("thread", "concurrent"), ("process", "concurrent_processes")):
        log(f"concurrent sessions ({engine} engines)")
        report[key] = _concurrent(photo, speech, size, fps, max_sessions, engine)
    report["load_average_at_end"] = [round(v, 1) for v in os.getloadavg()]
    return report


def format_stream_report(r: dict[str, Any]) -> str:
    def p(d):
        return "n/a" if not d else f"p50 {d['p50']} ms, p95 {d['p95']} ms (n={d['n']})"

    lines = [f"live session, {r['size']}x{r['size']} at {r['fps']:g} fps on {r['cpus']} CPUs "
             f"(load average {r['load_average_at_start']} -> {r.get('load_average_at_end')})",
             f"  first-frame latency      {p(r.get('first_frame_latency_ms'))}",
             f"  audio-to-mouth offset    {r.get('audio_to_mouth_offset_ms')} ms live, "
             f"{r.get('audio_to_mouth_offset_ms_offline')} ms offline (negative: mouth first)",
             f"  mouth shut after speech  {p(r.get('mouth_closed_after_speech_ms'))}",
             f"  interrupt latency        {p(r.get('interrupt_latency_ms'))}",
             f"  frames                   {r.get('frames')}",
             f"  render / analysis        {r.get('render_ms_mean')} / {r.get('analysis_ms_mean')} ms per frame",
             f"  drift                    {r.get('drift')}",
             f"  concurrent sessions      {r.get('concurrent')}",
             f"  ... engines in processes {r.get('concurrent_processes')}"]
    return "\n".join(lines)
