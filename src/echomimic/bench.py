"""Speed benchmark of the pipeline: milliseconds per frame for each stage and the real-time factor.

For every size asked for, one short warm-up job runs first (imports, model loading, first-call
set-up: reported separately as ``warmup_seconds``), then one timed job on synthesized speech of
the given length. The portrait analysis cache is switched off while timing, so the photo is
analysed in every job as a first job on a new photo would be.

Sizes:

* ``N`` (e.g. ``512``): the astronaut photo, ``crop=face`` with ``size=N`` (an N x N video);
* ``Np`` (e.g. ``1080p``): a 16:9 frame N pixels high made from the astronaut photo (scaled to N
  high, the sides extended by reflection), ``crop=none``, full size.

With ``halfbody=PHOTO`` (CLI ``--halfbody PHOTO``) one more case, ``halfbody768``, times a
half-body photo squared to 768 x 768 (``crop=none``): the arms gesture with the speech, so the
body layer of the warp renderer is timed too (its setup inside ``render setup``).

The real-time factor is ``audio seconds / wall seconds``: above 1 is faster than real time.
Rendering and encoding overlap (the encoder runs on a second thread), so the stage times add up
to more than the wall time.

:func:`run_real_bench` (CLI ``--real``) times whole jobs on a real recording instead (the media
folder's recordings joined, see :func:`make_recording`): per size the wall time to the closed
file, the real-time factor, the time until the first frame reaches the encoder, CPU time, peak
RSS and the stage table, over ``runs`` jobs (min / median / max).
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import InvalidOption

__all__ = ["BenchCase", "BenchReport", "RealCase", "RealReport", "RealRun", "STAGES", "find_media_audio",
           "format_real_table", "format_table", "machine_info", "make_frame", "make_recording",
           "make_speech", "parse_sizes", "run_bench", "run_real_bench"]

#: (key in AnimateResult.timings, column label), in pipeline order.
STAGES: tuple[tuple[str, str], ...] = (
    ("analyze_image", "analysis image"),
    ("analyze_audio", "analysis audio"),
    ("motion", "motion"),
    ("render_setup", "render setup"),
    ("render", "render"),
    ("encode", "encode"),
)

#: Text spoken (and repeated as needed) for the timed speech.
BENCH_TEXT = ("The quick brown fox jumps over the lazy dog. Please call Stella and ask her to "
              "bring these things with her from the store. ")

_SIZE = re.compile(r"^(\d+)(p?)$")


def parse_sizes(text: str | Sequence[str]) -> list[str]:
    """``"512,1080p"`` -> ``["512", "1080p"]`` (validated)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        s = item.strip().lower()
        m = _SIZE.match(s)
        if not m or not (64 <= int(m.group(1)) <= 4320):
            raise InvalidOption(f"bad size {item!r}: use N (face crop, 64-4096) or Np "
                                f"(16:9 frame N pixels high), e.g. 512,1080p")
        out.append(s)
    if not out:
        raise InvalidOption("no sizes given")
    return out


def make_frame(size: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The photo and the animate options for one benchmark size (see the module docstring)."""
    import cv2
    import skimage.data

    astro = np.ascontiguousarray(skimage.data.astronaut())
    m = _SIZE.match(size)
    if m is None:
        raise InvalidOption(f"bad size {size!r}")
    n = int(m.group(1))
    if not m.group(2):
        return astro, {"crop": "face", "size": n}
    h = n
    w = int(round(n * 16 / 9 / 2)) * 2
    scaled = cv2.resize(astro, (h, h), interpolation=cv2.INTER_AREA if h < 512
                        else cv2.INTER_CUBIC)
    left = (w - h) // 2
    right = w - h - left
    frame = cv2.copyMakeBorder(scaled, 0, 0, left, right, cv2.BORDER_REFLECT)
    return np.ascontiguousarray(frame), {"crop": "none", "max_side": 0}


def make_halfbody_frame(photo: str | os.PathLike, side: int = 768) -> tuple[np.ndarray, dict[str, Any]]:
    """A half-body photo as a ``side`` x ``side`` frame (centre square, resized) and its options."""
    import cv2

    from .media import load_image

    rgb, _ = load_image(photo)
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = rgb[y0:y0 + s, x0:x0 + s]
    frame = cv2.resize(sq, (side, side), interpolation=cv2.INTER_AREA if s > side else cv2.INTER_CUBIC)
    return np.ascontiguousarray(frame), {"crop": "none", "max_side": 0}


def make_speech(seconds: float, path: str | os.PathLike) -> Path:
    """Write ``seconds`` of English speech (espeak-ng, repeated as needed) as a WAV file."""
    from .speech.tts import synthesize, write_wav
    from .types import Audio

    audio, _ = synthesize(BENCH_TEXT, lang="en")
    rate = int(audio.sample_rate)
    need = int(round(seconds * rate))
    reps = int(np.ceil(need / max(1, len(audio.samples))))
    samples = np.tile(np.asarray(audio.samples, np.float32), reps)[:need]
    return write_wav(path, Audio(samples=samples, sample_rate=rate, source="bench"))


@contextmanager
def _analysis_cache_off() -> Iterator[None]:
    old = os.environ.get("ECHOMIMIC_CACHE")
    os.environ["ECHOMIMIC_CACHE"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ECHOMIMIC_CACHE", None)
        else:
            os.environ["ECHOMIMIC_CACHE"] = old


@dataclass
class BenchCase:
    """The timing of one job."""

    size: str
    width: int
    height: int
    n_frames: int
    audio_seconds: float
    wall_seconds: float
    warmup_seconds: float
    timings: dict[str, float]                 # seconds per stage (AnimateResult.timings)
    ms_per_frame: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = float("nan")        # CPU time of this process (all its threads)

    @property
    def realtime_factor(self) -> float:
        """Audio seconds per wall second (> 1: faster than real time)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def cpu_realtime_factor(self) -> float:
        """Audio seconds per CPU second: the real-time factor on one free core, whatever else
        the machine runs (with two free cores the wall figure can be up to twice as good,
        since render and encode overlap)."""
        return self.audio_seconds / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")

    @property
    def wall_ms_per_frame(self) -> float:
        return 1000.0 * self.wall_seconds / max(1, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["realtime_factor"] = self.realtime_factor
        d["cpu_realtime_factor"] = self.cpu_realtime_factor
        d["wall_ms_per_frame"] = self.wall_ms_per_frame
        return d


@dataclass
class BenchReport:
    """All the cases of one benchmark run and the machine it ran on."""

    cases: list[BenchCase]
    seconds: float
    fps: float
    machine: dict[str, Any]
    startup_seconds: float                    # the very first job: imports + model loading

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "fps": self.fps, "machine": self.machine,
                "startup_seconds": self.startup_seconds,
                "cases": [c.to_dict() for c in self.cases]}


def machine_info() -> dict[str, Any]:
    """CPU model, usable cores, OS and library versions (for reading the figures later)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 0
    import av
    import cv2

    from . import __version__

    return {"cpu": cpu, "cores": cores, "os": platform.platform(),
            "python": platform.python_version(), "echomimic": __version__,
            "opencv": cv2.__version__, "av": av.__version__, "numpy": np.__version__}


def run_bench(seconds: float = 10.0, sizes: Sequence[str] = ("512", "1080p"), *,
              fps: float = 25.0, workdir: str | os.PathLike | None = None,
              warmup_seconds: float = 1.0,
              log: Callable[[str], None] | None = None,
              halfbody: str | os.PathLike | None = None) -> BenchReport:
    """Time the pipeline on synthesized speech of ``seconds`` at each size in ``sizes``.

    Args:
        seconds: length of the timed speech.
        sizes: see :func:`parse_sizes`.
        fps: output frame rate.
        workdir: where the inputs and videos are written (default: a temporary folder that is
            removed afterwards).
        warmup_seconds: length of the warm-up job run before each timed job.
        log: called with a line of progress text.
        halfbody: a half-body photo: adds the ``halfbody768`` case (768 x 768, arms moving).
    """
    from PIL import Image

    from .pipeline import animate

    if not (0.5 <= float(seconds) <= 600):
        raise InvalidOption(f"seconds must be between 0.5 and 600, got {seconds}")
    sizes = parse_sizes(sizes)
    say = log or (lambda msg: None)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="echomimic-bench-")
        workdir = tmp.name
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[BenchCase] = []
    startup = float("nan")
    try:
        say(f"synthesizing {seconds:g} s of speech")
        speech = make_speech(seconds, root / "speech.wav")
        warm_speech = make_speech(warmup_seconds, root / "warmup.wav")
        todo: list[tuple[str, np.ndarray, dict[str, Any]]] = [(s, *make_frame(s)) for s in sizes]
        if halfbody is not None:
            todo.append(("halfbody768", *make_halfbody_frame(halfbody)))
        with _analysis_cache_off():
            for size, frame, opts in todo:
                photo = root / f"photo_{size}.png"
                Image.fromarray(frame).save(photo)
                say(f"{size}: warm-up")
                t0 = time.perf_counter()
                animate(photo, root / f"warmup_{size}.mp4", audio=warm_speech, fps=fps, **opts)
                warm = time.perf_counter() - t0
                if not cases and startup != startup:
                    startup = warm
                say(f"{size}: timing {seconds:g} s of speech")
                t0 = time.perf_counter()
                c0 = time.process_time()
                res = animate(photo, root / f"bench_{size}.mp4", audio=speech, fps=fps, **opts)
                wall = time.perf_counter() - t0
                cpu = time.process_time() - c0
                n = max(1, res.n_frames)
                ms = {k: 1000.0 * float(res.timings.get(k, 0.0)) / n for k, _ in STAGES}
                cases.append(BenchCase(size=size, width=res.width, height=res.height,
                                       n_frames=res.n_frames, audio_seconds=float(seconds),
                                       wall_seconds=wall, warmup_seconds=warm,
                                       timings=dict(res.timings), ms_per_frame=ms,
                                       cpu_seconds=cpu))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return BenchReport(cases=cases, seconds=float(seconds), fps=float(fps),
                       machine=machine_info(), startup_seconds=startup)


def format_table(report: BenchReport):
    """A rich table of the report: one row per stage (ms/frame), one column per size."""
    from rich.table import Table

    m = report.machine
    table = Table(title=f"echomimic bench: {report.seconds:g} s of speech at {report.fps:g} fps, "
                        f"{m.get('cores')} core(s) of {m.get('cpu') or 'an unknown CPU'}",
                  title_justify="left",
                  caption=f"Render and encode overlap (two threads), so the stages add up to "
                          f"more than the wall time. First job (imports + model loading): "
                          f"{report.startup_seconds:.1f} s.",
                  caption_justify="left")
    table.add_column("ms per frame")
    for c in report.cases:
        table.add_column(f"{c.size} ({c.width}x{c.height})", justify="right")
    for key, label in STAGES:
        table.add_row(label, *(f"{c.ms_per_frame.get(key, 0.0):.1f}" for c in report.cases))
    table.add_row("wall", *(f"{c.wall_ms_per_frame:.1f}" for c in report.cases),
                  style="bold", end_section=True)
    table.add_row("frames", *(str(c.n_frames) for c in report.cases))
    table.add_row("warm-up job (s)", *(f"{c.warmup_seconds:.2f}" for c in report.cases))
    table.add_row("real-time factor", *(f"{c.realtime_factor:.2f}x" for c in report.cases),
                  style="bold")
    table.add_row("CPU s per audio s", *(f"{c.cpu_seconds / c.audio_seconds:.2f}"
                                         for c in report.cases))
    return table


# ------------------------------------------------------------------------------------------------
# the real-recording case: end to end on a recording, wall / real-time factor / first frame / RSS
# ------------------------------------------------------------------------------------------------

#: Files read from a media folder for the real-recording case, in this order.
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")

#: Sample rate the recordings are resampled to before they are joined.
RECORDING_RATE = 24000


def find_media_audio(media: str | os.PathLike | None = None) -> Path | None:
    """The folder of real recordings: ``media`` if given, else ``$ECHOMIMIC_MEDIA/audio``, else
    ``../shared/media/audio`` next to the current folder or the source checkout; None if absent."""
    cands: list[Path] = []
    if media is not None:
        p = Path(media)
        cands += [p / "audio", p]
    else:
        env = os.environ.get("ECHOMIMIC_MEDIA")
        if env:
            cands.append(Path(env) / "audio")
        cands.append(Path.cwd().parent / "shared" / "media" / "audio")
        cands.append(Path(__file__).resolve().parents[2].parent / "shared" / "media" / "audio")
    for c in cands:
        if c.is_dir() and any(f.suffix.lower() in AUDIO_SUFFIXES for f in c.iterdir()):
            return c
    if media is not None:
        raise InvalidOption(f"no recordings ({', '.join(AUDIO_SUFFIXES)}) in {media}")
    return None


def make_recording(seconds: float, path: str | os.PathLike,
                   media: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Write ``seconds`` of a real recording as a WAV file: every recording of the media folder
    (see :func:`find_media_audio`), resampled to :data:`RECORDING_RATE` mono, joined in name order
    and repeated to length; synthesized speech (:func:`make_speech`) when there is no folder.

    Returns the path and a line that says which it is.
    """
    from .media import load_audio
    from .speech.tts import write_wav
    from .types import Audio

    folder = find_media_audio(media)
    if folder is None:
        return (make_speech(seconds, path),
                f"synthesized speech (espeak-ng), {seconds:g} s: no media folder found")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES)
    parts = [np.asarray(load_audio(f, sample_rate=RECORDING_RATE, max_duration=None).samples,
                        np.float32) for f in files]
    joined = np.concatenate(parts)
    need = int(round(seconds * RECORDING_RATE))
    reps = int(np.ceil(need / max(1, len(joined))))
    samples = np.tile(joined, reps)[:need]
    total = len(joined) / RECORDING_RATE
    desc = (f"{len(files)} recordings of {folder} ({total:.1f} s, resampled to "
            f"{RECORDING_RATE} Hz mono, joined" + (f", repeated to {seconds:g} s)" if reps > 1
                                                   else f", cut to {seconds:g} s)"))
    return write_wav(path, Audio(samples=samples, sample_rate=RECORDING_RATE,
                                 source="bench-recording")), desc


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident set (Linux ``clear_refs``); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident set of this process in MB (since the last reset where that is possible)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class RealRun:
    """One timed job of the real-recording case."""

    wall_seconds: float                       # start of animate() to the closed file
    first_frame_seconds: float                # start to the first frame handed to the encoder
    peak_rss_mb: float
    timings: dict[str, float]
    n_frames: int
    audio_seconds: float
    cpu_seconds: float = float("nan")         # CPU time of the process (all threads) in the job

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["realtime_factor"] = self.realtime_factor
        d["ms_per_frame"] = {k: 1000.0 * float(self.timings.get(k, 0.0)) / max(1, self.n_frames)
                             for k, _ in STAGES}
        return d


@dataclass
class RealCase:
    """All the runs of one size on the recording."""

    size: str
    width: int
    height: int
    runs: list[RealRun]
    warmup_seconds: float

    def stat(self, fn: Callable[[RealRun], float]) -> tuple[float, float, float]:
        """(min, median, max) of ``fn`` over the runs."""
        v = np.array([fn(r) for r in self.runs], dtype=np.float64)
        return float(v.min()), float(np.median(v)), float(v.max())

    def to_dict(self) -> dict[str, Any]:
        def mmm(fn):
            lo, med, hi = self.stat(fn)
            return {"min": lo, "median": med, "max": hi}

        summary = {"wall_seconds": mmm(lambda r: r.wall_seconds),
                   "realtime_factor": mmm(lambda r: r.realtime_factor),
                   "first_frame_seconds": mmm(lambda r: r.first_frame_seconds),
                   "peak_rss_mb": mmm(lambda r: r.peak_rss_mb),
                   "cpu_seconds": mmm(lambda r: r.cpu_seconds),
                   "ms_per_frame": {k: mmm(lambda r, k=k: 1000.0 * r.timings.get(k, 0.0)
                                           / max(1, r.n_frames)) for k, _ in STAGES}}
        return {"size": self.size, "width": self.width, "height": self.height,
                "warmup_seconds": self.warmup_seconds, "summary": summary,
                "runs": [r.to_dict() for r in self.runs]}


@dataclass
class RealReport:
    """The real-recording benchmark: the recording used, every size, the machine."""

    cases: list[RealCase]
    seconds: float
    fps: float
    source: str                               # which recording (or synthesized speech)
    real: bool                                # False: synthesized speech stood in
    machine: dict[str, Any]
    load: tuple[float, float, float] | None   # os.getloadavg() before the first job

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "fps": self.fps, "source": self.source,
                "real_recording": self.real, "machine": self.machine,
                "load_average": list(self.load) if self.load else None,
                "cases": [c.to_dict() for c in self.cases]}


def run_real_bench(seconds: float = 60.0, sizes: Sequence[str] = ("512", "1080p"), *,
                   runs: int = 1, fps: float = 25.0, media: str | os.PathLike | None = None,
                   workdir: str | os.PathLike | None = None, warmup_seconds: float = 1.0,
                   log: Callable[[str], None] | None = None) -> RealReport:
    """Time whole jobs on a real recording (see :func:`make_recording`) at each size.

    Per size: one warm-up job, then ``runs`` timed jobs, each timed from the call of
    :func:`~echomimic.pipeline.animate` to the closed file, with the time at which the first
    frame reached the encoder (the first ``render`` progress report comes right after it is
    queued) and the peak resident memory of the job (Linux: reset before each job).
    """
    from PIL import Image

    from .pipeline import animate

    if not (0.5 <= float(seconds) <= 600):
        raise InvalidOption(f"seconds must be between 0.5 and 600, got {seconds}")
    if not (1 <= int(runs) <= 20):
        raise InvalidOption(f"runs must be between 1 and 20, got {runs}")
    sizes = parse_sizes(sizes)
    say = log or (lambda msg: None)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="echomimic-bench-")
        workdir = tmp.name
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        load = os.getloadavg()
    except (AttributeError, OSError):
        load = None
    cases: list[RealCase] = []
    try:
        recording, source = make_recording(seconds, root / "recording.wav", media)
        say(f"recording: {source}")
        warm_speech = make_speech(warmup_seconds, root / "warmup.wav")
        with _analysis_cache_off():
            for size in sizes:
                frame, opts = make_frame(size)
                photo = root / f"photo_{size}.png"
                Image.fromarray(frame).save(photo)
                say(f"{size}: warm-up")
                t0 = time.perf_counter()
                animate(photo, root / f"warmup_{size}.mp4", audio=warm_speech, fps=fps, **opts)
                warm = time.perf_counter() - t0
                done: list[RealRun] = []
                width = height = 0
                for k in range(int(runs)):
                    say(f"{size}: run {k + 1}/{runs} on {seconds:g} s")
                    first: list[float] = []

                    def progress(stage: str, frac: float, _first=first) -> None:
                        if stage == "render" and not _first:
                            _first.append(time.perf_counter())

                    _reset_peak_rss()
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    res = animate(photo, root / f"real_{size}.mp4", audio=recording, fps=fps,
                                  progress=progress, **opts)
                    wall = time.perf_counter() - t0
                    cpu = time.process_time() - c0
                    width, height = res.width, res.height
                    done.append(RealRun(wall_seconds=wall,
                                        first_frame_seconds=(first[0] - t0) if first else wall,
                                        peak_rss_mb=_peak_rss_mb(), timings=dict(res.timings),
                                        n_frames=res.n_frames,
                                        audio_seconds=res.n_frames / float(fps),
                                        cpu_seconds=cpu))
                cases.append(RealCase(size=size, width=width, height=height, runs=done,
                                      warmup_seconds=warm))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return RealReport(cases=cases, seconds=float(seconds), fps=float(fps), source=source,
                      real=not source.startswith("synthesized"), machine=machine_info(),
                      load=load)


def format_real_table(report: RealReport):
    """A rich table of the real-recording report: min / median / max of every figure per size."""
    from rich.table import Table

    m = report.machine
    n = len(report.cases[0].runs) if report.cases else 0
    load = (f" Load average before the first job: {report.load[0]:.2f} (1 min)."
            if report.load else "")
    table = Table(title=f"echomimic bench --real: {report.seconds:g} s at {report.fps:g} fps, "
                        f"{m.get('cores')} core(s) of {m.get('cpu') or 'an unknown CPU'}; "
                        f"{n} run(s) per size" + (", min / median / max" if n > 1 else ""),
                  title_justify="left",
                  caption=f"Audio: {report.source}. Wall: start of the job to the closed file. "
                          f"Stages in ms per frame; render and encode overlap.{load}",
                  caption_justify="left")
    table.add_column("")
    for c in report.cases:
        table.add_column(f"{c.size} ({c.width}x{c.height})", justify="right")

    def row(label, fn, fmt, **kw):
        cells = []
        for c in report.cases:
            lo, med, hi = c.stat(fn)
            cells.append(fmt.format(med) if n == 1 else
                         f"{fmt.format(lo)} / {fmt.format(med)} / {fmt.format(hi)}")
        table.add_row(label, *cells, **kw)

    row("wall (s)", lambda r: r.wall_seconds, "{:.2f}", style="bold")
    row("real-time factor", lambda r: r.realtime_factor, "{:.2f}x", style="bold")
    row("first frame to encoder (s)", lambda r: r.first_frame_seconds, "{:.2f}")
    row("CPU time, all threads (s)", lambda r: r.cpu_seconds, "{:.2f}")
    row("peak RSS (MB)", lambda r: r.peak_rss_mb, "{:.0f}", end_section=True)
    for key, label in STAGES:
        row(f"{label} (ms/frame)", lambda r, key=key: 1000.0 * r.timings.get(key, 0.0)
            / max(1, r.n_frames), "{:.2f}")
    table.add_row("warm-up job (s)", *(f"{c.warmup_seconds:.2f}" for c in report.cases))
    return table
