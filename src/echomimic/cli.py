"""The ``echomimic`` command line: a thin skin over :func:`echomimic.animate` and friends.

Commands: ``animate``, ``demo``, ``tts``, ``evaluate``, ``bench``, ``renderers``, ``version``.

The options of ``animate`` are generated from the option table (:mod:`echomimic.options`), so the
command line, the Python API, the REST API and the UI always share one set of names (``max_side`` in Python is
``--max-side`` here). Errors a user can cause (:class:`~echomimic.errors.EchomimicError`) are
printed as one line, ``error: <message>``, with exit code 2; Ctrl-C exits with code 130.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from . import __version__
from .errors import (AudioError, EchomimicError, ImageError, InvalidOption, MotionError,
                     VideoError)
from .options import OPTION_HELP as _OPTION_HELP
from .options import cli_flag, limits_text, options_for

__all__ = ["app", "main"]

app = typer.Typer(
    name="echomimic",
    help="Talking portraits on an ordinary CPU: a photo and speech become an mp4 of that "
         "person speaking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Exit code for errors the user can fix (bad input, bad option); typer's usage errors use it too.
EXIT_USER_ERROR = 2
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------------------------------------
# error handling and output helpers
# ------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``error: message`` (one line) on stderr and return the Exit to raise."""
    sys.stderr.write(f"error: {_one_line(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def _handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line + exit 2, and Ctrl-C into one line + exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EchomimicError as exc:
            raise _fail(exc.message) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper


def _require_file(path: Path | None, what: str, error: type[EchomimicError]) -> None:
    """Fail fast (before any analysis) when an input file is missing or is a folder."""
    if path is None:
        return
    if not path.exists():
        raise error(f"{what} file {str(path)!r} not found")
    if path.is_dir():
        raise error(f"{what} {str(path)!r} is a directory, not a file")


def _jsonable(value: Any) -> Any:
    """``json.dumps`` default: paths, numpy scalars/arrays and tuples as plain JSON."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _clean_floats(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_floats(v) for v in value]
    return value


def _print_json(data: Any) -> None:
    text = json.dumps(_clean_floats(json.loads(json.dumps(data, default=_jsonable))), indent=2)
    sys.stdout.write(text + "\n")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


class _ProgressBar:
    """A rich progress bar fed by the pipeline's ``progress(stage, fraction)`` callback.

    Shown only on an interactive terminal (stderr) and when not ``quiet``; otherwise the
    callback does nothing.
    """

    def __init__(self, *, quiet: bool = False):
        self.enabled = not quiet and sys.stderr.isatty()
        self._progress = None
        self._task = None

    def __enter__(self) -> "_ProgressBar":
        if self.enabled:
            from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn)

            self._progress = Progress(
                TextColumn("[bold]{task.description:<8}"), BarColumn(), TaskProgressColumn(),
                TimeElapsedColumn(), console=_console(stderr=True), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("start", total=1.0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def __call__(self, stage: str, fraction: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=stage,
                                  completed=max(0.0, min(1.0, float(fraction))))


# ------------------------------------------------------------------------------------------------
# animate: options generated from the option table
# ------------------------------------------------------------------------------------------------

#: Help text of the shared options, from the option table (:mod:`echomimic.options`).
OPTION_HELP: dict[str, str] = dict(_OPTION_HELP)

#: Options accepted but left out of --help.
_HIDDEN_OPTIONS: frozenset[str] = frozenset()

_SHARED_PANEL = "Shared options (same names as the Python API)"


def option_fields() -> list[tuple[str, type, Any]]:
    """``(name, type, default)`` of every option of the table shown on the command line."""
    return [(o.name, o.type, o.default) for o in options_for("cli")]


def cli_name(field_name: str) -> str:
    """The command-line spelling of an option: ``max_side`` -> ``--max-side``."""
    return "--" + field_name.replace("_", "-")


def _option_help(opt: Any) -> str:
    """The table's help with its limits, as ``--help`` prints them: ``Output frame rate.
    (1-60)``."""
    limits = limits_text(opt)
    return f"{opt.help} ({limits})" if limits else opt.help


def _with_shared_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``fn`` (which takes ``**options``) one typer option per entry of the option table.

    Every generated option defaults to ``None`` ("not given"), so the pipeline's own defaults
    apply; the help shows them. Values are checked by the pipeline (one ``error:`` line).
    """
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    annotations = {p.name: p.annotation for p in params}
    for opt in options_for("cli"):
        default = opt.default
        show = (False if default is None else
                f"{default:g}" if isinstance(default, float) else str(default))
        typer_opt = typer.Option(
            cli_flag(opt), help=_option_help(opt), hidden=opt.name in _HIDDEN_OPTIONS,
            show_default=show, rich_help_panel=_SHARED_PANEL)
        ann = Annotated[Optional[opt.type], typer_opt]
        params.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=ann))
        annotations[opt.name] = ann

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        return fn(**kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = annotations
    del wrapper.__wrapped__  # typer must read the generated signature, not fn's
    return wrapper


def _summary_line(result: Any, wall: float) -> str:
    speed = result.duration / wall if wall > 0 else float("inf")
    return (f"wrote {result.output}: {result.width}x{result.height}, {result.n_frames} frames at "
            f"{result.fps:g} fps ({result.duration:.2f} s) in {wall:.1f} s "
            f"({speed:.2f}x real time)")


@app.command("animate")
@_with_shared_options
@_handles_errors
def animate_cmd(
    image: Annotated[Path, typer.Option("--image", "-i", help="The portrait photo.",
                                        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The video to write: .mp4, "
                                         ".webm, .mov or .gif.", show_default=False)],
    audio: Annotated[Optional[Path], typer.Option(
        "--audio", "-a", help="Speech audio (any format FFmpeg reads).")] = None,
    text: Annotated[Optional[str], typer.Option(
        "--text", "-t", help="Text to speak (offline TTS with espeak-ng).")] = None,
    motion: Annotated[Optional[Path], typer.Option(
        "--motion", "-m", help="A motion file (JSON), or a face-landmark sequence (JSON/npz), "
        "to drive the portrait.")] = None,
    video: Annotated[Optional[Path], typer.Option(
        "--video", "-v", help="A driving video: its face and head motion is copied onto the "
        "portrait (its sound is kept unless --audio or --text is given).")] = None,
    transcript: Annotated[Optional[str], typer.Option(
        "--transcript", help="The words of --audio (text or a .txt file): aligned to the "
        "recording, they drive the mouth instead of blind recognition.")] = None,
    prompt: Annotated[Optional[str], typer.Option(
        "--prompt", "-p", help='Directed actions and emotion, e.g. "smiles, then nods twice; '
        'looks left at the end" or "微笑并点头".')] = None,
    pose: Annotated[Optional[Path], typer.Option(
        "--pose", help="A body-pose sequence (echomimic.pose/1 JSON or NPZ): the arms and hands "
        "of a half-body photo follow it (see docs/halfbody.md).")] = None,
    motion_out: Annotated[Optional[Path], typer.Option(
        "--motion-out", help="Also save the rendered motion track (JSON).")] = None,
    preview: Annotated[Optional[Path], typer.Option(
        "--preview", help="Also save a contact sheet of frames (PNG).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the result summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no summary.")]
    = False,
    persona: Annotated[Optional[Path], typer.Option(
        "--persona", help="A .persona file (from `echomimic enroll`): the person's own mouth "
        "interiors, articulation, blinks and head motion.")] = None,
    **options: Any,
) -> None:
    """Animate a portrait with speech audio, text or a motion file."""
    import time

    from .pipeline import animate

    if sum(x is not None for x in (audio, text)) > 1:
        raise InvalidOption("give either --audio or --text, not both")
    if audio is None and text is None and motion is None and video is None and pose is None:
        raise InvalidOption("nothing drives the portrait: give --audio, --text, --video, --pose "
                            "or --motion")
    _require_file(image, "image", ImageError)
    _require_file(audio, "audio", AudioError)
    _require_file(motion, "motion", MotionError)
    _require_file(video, "video", VideoError)
    if pose is not None:
        from .errors import PoseError

        _require_file(pose, "pose", PoseError)
        options["pose"] = pose
    if persona is not None:
        from .errors import PersonaError

        _require_file(persona, "persona", PersonaError)
    opts = {k: v for k, v in options.items() if v is not None}
    t0 = time.perf_counter()
    with _ProgressBar(quiet=quiet or as_json) as bar:
        result = animate(image, output, audio=audio, text=text, motion=motion, video=video,
                         transcript=transcript, prompt=prompt,
                         motion_out=motion_out, preview=preview, progress=bar,
                         **({"persona": persona} if persona is not None else {}), **opts)
    wall = time.perf_counter() - t0
    for w in result.meta.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    if as_json:
        summary = result.summary()
        summary["wall_seconds"] = wall
        _print_json(summary)
    elif not quiet:
        _console().print(_summary_line(result, wall), soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------


@app.command("demo")
@_handles_errors
def demo_cmd(
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="The mp4 to write (default: FOLDER/demo.mp4).")] = None,
    preview: Annotated[Optional[Path], typer.Option(
        "--preview", help="Contact sheet to write (default: FOLDER/demo.png).")] = None,
    folder: Annotated[Path, typer.Option(
        "--folder", help="Where the demo inputs (photo, speech) are written.")] = Path("demo"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Make a demo offline (a photo and synthesized speech) and animate it."""
    from .demo import run_demo

    con = _console()
    with _ProgressBar(quiet=quiet) as bar:
        res = run_demo(folder, output=output, preview=preview, progress=bar)
    con.print(f"photo:   {res.image}", soft_wrap=True)
    con.print(f"speech:  {res.audio} ({res.audio_seconds:.1f} s)", soft_wrap=True)
    con.print(f"video:   {res.video}", soft_wrap=True)
    con.print(f"preview: {res.preview}", soft_wrap=True)
    con.print(_summary_line(res.result, res.wall_seconds), soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# tts
# ------------------------------------------------------------------------------------------------


@app.command("tts")
@_handles_errors
def tts_cmd(
    text: Annotated[str, typer.Argument(help="The text to speak.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The WAV file to write.")]
    = Path("speech.wav"),
    lang: Annotated[str, typer.Option("--lang", help="Language code, e.g. en, zh, ja.")] = "en",
    voice: Annotated[Optional[str], typer.Option(
        "--voice", help="espeak-ng voice (overrides --lang), e.g. en-us+f3.")] = None,
    rate: Annotated[int, typer.Option("--rate", help="Words per minute.")] = 175,
    pitch: Annotated[int, typer.Option("--pitch", help="Base pitch, 0-99.")] = 50,
) -> None:
    """Speak text offline with espeak-ng and save it as a WAV file."""
    from .speech.tts import synthesize, write_wav

    if output.suffix.lower() != ".wav":
        raise InvalidOption(f"the output must be a .wav file, got {output.name!r}")
    if not output.parent.exists():
        raise InvalidOption(f"the output folder {str(output.parent)!r} does not exist")
    audio, phones = synthesize(text, lang=lang, voice=voice, rate=rate, pitch=pitch)
    write_wav(output, audio)
    _console().print(f"wrote {output}: {audio.duration:.2f} s at {audio.sample_rate} Hz, "
                     f"{len(phones)} phonemes", soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.3f}"
    return str(value)


@app.command("evaluate")
@_handles_errors
def evaluate_cmd(
    video: Annotated[Path, typer.Argument(help="The mp4 to evaluate.", show_default=False)],
    image: Annotated[Optional[Path], typer.Option(
        "--image", "-i", help="The source photo (adds identity figures).")] = None,
    audio: Annotated[Optional[Path], typer.Option(
        "--audio", "-a", help="Speech to compare with (default: the video's own audio).")]
    = None,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", "-r", help="A real video of someone speaking this audio: compare the "
        "mouth tracks (correlation, LMD).")] = None,
    phones: Annotated[Optional[Path], typer.Option(
        "--phones", help="Phone timeline JSON ([{start, end, label}]): truth-curve, vowel and "
        "p/b/m figures.")] = None,
    motion: Annotated[Optional[Path], typer.Option(
        "--motion", "-m", help="The motion file that was rendered (render fidelity).")] = None,
    identity: Annotated[bool, typer.Option(
        "--identity/--no-identity", help="Compare faces with the photo (dlib).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure a talking-portrait video: lip-sync, mouth closure and shapes, identity,
    stability and render fidelity (see docs/quality.md)."""
    from .errors import VideoError
    from .quality.evaluate import LABELS, evaluate_video

    _require_file(video, "video", VideoError)
    _require_file(image, "image", ImageError)
    _require_file(audio, "audio", AudioError)
    _require_file(reference, "reference video", VideoError)
    _require_file(phones, "phone timeline", InvalidOption)
    _require_file(motion, "motion file", MotionError)
    res = evaluate_video(video, image=image, audio=audio, reference=reference, phones=phones,
                         motion=motion, identity=identity and image is not None)
    if as_json:
        _print_json(res)
        return
    from rich.table import Table

    table = Table(title=f"quality of {video}", title_justify="left")
    table.add_column("figure")
    table.add_column("key", style="dim")
    table.add_column("value", justify="right")
    keys = [k for k in LABELS if k in res] + [k for k in res if k not in LABELS]
    for k in keys:
        table.add_row(LABELS.get(k, k), k, _fmt(res[k]))
    _console().print(table)


# ------------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------------


@app.command("bench")
@_handles_errors
def bench_cmd(
    seconds: Annotated[Optional[float], typer.Option(
        "--seconds", help="Length of the speech timed (default 10; 60 with --real).")] = None,
    sizes: Annotated[str, typer.Option(
        "--sizes", help="Comma-separated sizes: N (face crop NxN) or Np (16:9 frame N high).")]
    = "512,1080p",
    fps: Annotated[float, typer.Option("--fps", help="Output frame rate.")] = 25.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    quality: Annotated[bool, typer.Option(
        "--quality", help="Run the lip-sync evaluation set instead (held-out split; minutes).")]
    = False,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Measure live sessions instead: latency, A/V sync and drift, dropped "
                         "frames, concurrent sessions (see docs/streaming.md).")] = False,
    minutes: Annotated[float, typer.Option(
        "--minutes", help="With --stream: length of the drift session.")] = 1.0,
    halfbody: Annotated[Optional[Path], typer.Option(
        "--halfbody", help="A half-body photo: adds a 768x768 case with moving arms.")] = None,
    real: Annotated[bool, typer.Option(
        "--real", help="Time whole jobs on a real recording (the media folder's recordings "
                       "joined; synthesized speech when absent): wall, real-time factor, first "
                       "frame, peak memory, stages.")] = False,
    runs: Annotated[int, typer.Option(
        "--runs", help="With --real: timed jobs per size (min / median / max).")] = 1,
    media: Annotated[Optional[Path], typer.Option(
        "--media", help="With --real: the media folder (default: $ECHOMIMIC_MEDIA, else "
                        "../shared/media).")] = None,
) -> None:
    """Time the pipeline per stage (ms/frame) and the real-time factor, or, with --quality,
    measure lip-sync on the synthesized evaluation set."""
    from .bench import format_table, parse_sizes, run_bench

    quiet = as_json or not sys.stderr.isatty()
    con = _console(stderr=True)

    def note(msg: str) -> None:
        if not quiet:
            con.print(f"[dim]{msg}[/dim]")

    if stream:
        from .stream.bench import format_stream_report, run_stream_bench

        figures = run_stream_bench(minutes=minutes, fps=fps, log=note)
        if as_json:
            _print_json(figures)
        else:
            sys.stdout.write(format_stream_report(figures) + "\n")
        return
    if quality:
        from .quality.evalset import build_items, format_summary, run_items, summarize

        rows = run_items(build_items("heldout"), ("acoustic", "recognizer", "auto"), log=note)
        summary = summarize(rows)
        if as_json:
            _print_json({"summary": summary, "items": rows})
        else:
            sys.stdout.write(format_summary(summary) + "\n")
        return

    if real:
        from .bench import format_real_table, run_real_bench

        real_report = run_real_bench(seconds=60.0 if seconds is None else seconds,
                                     sizes=parse_sizes(sizes), runs=runs, fps=fps, media=media,
                                     log=note)
        if as_json:
            _print_json(real_report.to_dict())
        else:
            _console().print(format_real_table(real_report))
        return

    report = run_bench(seconds=10.0 if seconds is None else seconds, sizes=parse_sizes(sizes),
                       fps=fps, log=note, halfbody=halfbody)
    if as_json:
        _print_json(report.to_dict())
    else:
        _console().print(format_table(report))


# ------------------------------------------------------------------------------------------------
# renderers, version
# ------------------------------------------------------------------------------------------------


@app.command("extract-motion")
@_handles_errors
def extract_motion_cmd(
    video: Annotated[Path, typer.Argument(help="The video to take the motion from.",
                                          show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The motion file (JSON) to write.",
                                         show_default=False)],
    fps: Annotated[Optional[float], typer.Option(
        "--fps", help="Frame rate of the motion file (default: the video's).")] = None,
    relative: Annotated[bool, typer.Option(
        "--relative/--absolute", help="Head pose relative to the video's first pose.")] = True,
) -> None:
    """Save a video's face and head motion as a reusable motion file (replay with --motion)."""
    from .errors import VideoError
    from .motion import save_motion
    from .motion.video import extract_motion

    _require_file(video, "video", VideoError)
    if fps is not None and not (1 <= fps <= 60):
        raise InvalidOption(f"fps must be between 1 and 60, got {fps:g}")
    track = extract_motion(video, fps=fps, relative=relative)
    save_motion(track, output)
    _console().print(f"wrote {output}: {track.n_frames} frames at {track.fps:g} fps "
                     f"({track.duration:.2f} s), {len(track.channels)} channels", soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# pose files (echomimic.pose/1): convert-poses, extract-pose
# ------------------------------------------------------------------------------------------------


def _pose_summary(seq: Any, output: Path) -> str:
    hands = seq.hands[:, :, 0, 2] > 0
    return (f"wrote {output}: {seq.n_frames} frames at {seq.fps:g} fps ({seq.duration:.2f} s), "
            f"{seq.width}x{seq.height}; body in {int((seq.body[:, 1, 2] > 0).sum())}, left hand "
            f"in {int(hands[:, 0].sum())}, right hand in {int(hands[:, 1].sum())} frames")


@app.command("convert-poses")
@_handles_errors
def convert_poses_cmd(
    folder: Annotated[Path, typer.Argument(
        help="EchoMimic V2 pose folder (0.npy, 1.npy, ... pickled DWPose dicts), or an "
             "echomimic.pose/1 file (JSON or NPZ) to convert to the other format.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The pose file to write (.npz or .json).", show_default=False)],
    fps: Annotated[float, typer.Option("--fps", help="Frame rate of the poses (V2 demos: 24).",
                                       min=1, max=240)] = 24.0,
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Read the pickled .npy files (loading a pickle can run code: "
        "only for a local folder you trust).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Convert an EchoMimic V2 pose folder into a safe echomimic.pose/1 file (NPZ or JSON)."""
    from .motion.body_pose import convert_v2_folder, load_pose_sequence, save_pose_sequence

    if folder.is_dir():
        with _ProgressBar(quiet=quiet) as bar:
            seq = convert_v2_folder(folder, trust_pickle=trust_pickle, fps=fps, progress=bar)
    else:
        seq = load_pose_sequence(folder)          # JSON <-> NPZ; never a pickle
    save_pose_sequence(seq, output)
    _console().print(_pose_summary(seq, output), soft_wrap=True)


@app.command("extract-pose")
@_handles_errors
def extract_pose_cmd(
    video: Annotated[Path, typer.Argument(help="The video of a person.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The pose file to write (.json or .npz).", show_default=False)],
    face: Annotated[bool, typer.Option("--face/--no-face",
                                       help="Also the 68 face points.")] = True,
    smooth: Annotated[bool, typer.Option("--smooth/--raw",
                                         help="One-Euro smoothing over time.")] = True,
    max_frames: Annotated[Optional[int], typer.Option(
        "--max-frames", help="Stop after this many frames.", min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Body, hand and face poses of the person in a video, as an echomimic.pose/1 file."""
    from .motion.body_pose import extract_pose, save_pose_sequence

    _require_file(video, "video", VideoError)
    with _ProgressBar(quiet=quiet) as bar:
        seq = extract_pose(video, face=face, smooth=smooth, max_frames=max_frames, progress=bar)
    save_pose_sequence(seq, output)
    _console().print(_pose_summary(seq, output), soft_wrap=True)


@app.command("stream")
@_handles_errors
def stream_cmd(
    image: Annotated[Path, typer.Option("--image", "-i", help="The portrait photo.",
                                        show_default=False)],
    rtmp: Annotated[Optional[str], typer.Option(
        "--rtmp", help="Push the live portrait to this RTMP URL (OBS, SRS, nginx-rtmp, a "
        "platform's ingest with its stream key).")] = None,
    audio: Annotated[Optional[Path], typer.Option(
        "--audio", "-a", help="Speech audio, paced in real time.")] = None,
    text_stdin: Annotated[bool, typer.Option(
        "--text-stdin", help="Speak each line typed on stdin (offline TTS).")] = False,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate.")] = 25.0,
    size: Annotated[int, typer.Option("--size", help="Side of the face-centred square.")] = 512,
    lang: Annotated[str, typer.Option("--lang", help="Language of the spoken text.")] = "auto",
    voice: Annotated[Optional[str], typer.Option("--voice", help="TTS voice.")] = None,
    emotion: Annotated[str, typer.Option("--emotion", help="Expression bias.")] = "neutral",
    seed: Annotated[int, typer.Option("--seed", help="Randomness of idle life.")] = 0,
) -> None:
    """A live talking portrait without the server: RTMP out, audio or typed text in."""
    from .stream.run import run_stream

    _require_file(image, "image", ImageError)
    if audio is not None:
        _require_file(audio, "audio", AudioError)
    con = _console(stderr=True)
    info = run_stream(image, rtmp=rtmp, audio=audio, text_stdin=text_stdin,
                      log=lambda m: con.print(f"[dim]{m}[/dim]"), fps=fps, crop="face",
                      size=size, lang=lang, voice=voice, emotion=emotion, seed=seed)
    _print_json(info)


@app.command("enroll")
@_handles_errors
def enroll_cmd(
    video: Annotated[Path, typer.Argument(help="A video of the person talking (at least 5 s; "
                                          "a phone clip will do).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .persona file to write.",
                                         show_default=False)],
    start: Annotated[float, typer.Option("--start", help="Use the video from this second.")]
    = 0.0,
    end: Annotated[Optional[float], typer.Option(
        "--end", help="Use the video up to this second (default: its end).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no summary.")]
    = False,
) -> None:
    """Learn a persona (mouth interiors, articulation, blinks, head motion) from a video of the
    person talking; use it with `animate --persona`."""
    from .errors import PersonaError, VideoError
    from .persona import enroll, save_persona

    _require_file(video, "video", VideoError)
    if output.suffix.lower() != ".persona":
        raise PersonaError(f"the output must be a .persona file, got {output.name!r}")
    with _ProgressBar(quiet=quiet or as_json) as bar:
        persona = enroll(video, start=start, end=end, progress=bar)
    save_persona(persona, output)
    summary = {"output": str(output), "atlas_entries": persona.n_entries,
               "opening": persona.opening, "blink_rate": persona.blink_rate,
               "head_motion": persona.head_motion, "speech_fit": persona.speech_fit,
               "frames": persona.source.get("frames"), "bytes": output.stat().st_size}
    if as_json:
        _print_json(summary)
    elif not quiet:
        _console().print(f"wrote {output}: {persona.n_entries} mouth interiors from "
                         f"{persona.source.get('frames')} frames "
                         f"({persona.source.get('duration', 0):.1f} s)", soft_wrap=True)


@app.command("renderers")
@_handles_errors
def renderers_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the renderer plugins, whether each can run here, and why not."""
    from .render import available_renderers

    found = available_renderers()
    if as_json:
        _print_json(found)
        return
    from rich.table import Table

    table = Table()
    table.add_column("renderer")
    table.add_column("available")
    table.add_column("plugin", style="dim")
    table.add_column("reason")
    for name, info in found.items():
        table.add_row(name, "yes" if info["available"] else "no", info["target"],
                      info.get("reason") or "")
    _console().print(table)


@app.command("verify")
@_handles_errors
def verify_cmd(
    video: Annotated[Path, typer.Argument(help="The video (or picture) to check.",
                                          show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Say whether a video was made by echomimic: its AI-generated label (file tags) and its
    invisible watermark (frames). Exit code 0: made here; 1: no mark found; 2: unreadable."""
    from .errors import VideoError
    from .safety import verify

    _require_file(video, "video", VideoError)
    found = verify(video)
    if as_json:
        _print_json(found.to_dict())
    else:
        sys.stdout.write(found.line() + "\n")
    raise typer.Exit(0 if found.made_here else 1)


@app.command("version")
def version_cmd() -> None:
    """Print the version of echomimic."""
    sys.stdout.write(f"echomimic {__version__}\n")


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native libraries write straight to file descriptor 2 to ``/dev/null``.

    MediaPipe's TFLite and absl print start-up chatter ("Created TensorFlow Lite XNNPACK
    delegate", feedback-manager warnings) on the process's stderr, which would bury the one-line
    messages of the command line. Python's ``sys.stderr`` keeps writing to the real stderr.
    Set ``ECHOMIMIC_NATIVE_LOGS=1`` to see the native messages.
    """
    if os.environ.get("ECHOMIMIC_NATIVE_LOGS", "") not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    old_stderr = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        sys.stderr = io.TextIOWrapper(os.fdopen(saved, "wb", buffering=0, closefd=False),
                                      encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                                      errors="backslashreplace", line_buffering=True)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> None:
    """Run the command line (the ``echomimic`` script and ``python -m echomimic``)."""
    try:
        with native_stderr_silenced():
            app(args=argv, prog_name="echomimic")
    except EchomimicError as exc:  # raised outside a command (should not happen)
        sys.stderr.write(f"error: {_one_line(exc.message)}\n")
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


# ------------------------------------------------------------------------------------------------
# service: serve, keys
# ------------------------------------------------------------------------------------------------


def _service_settings(data_dir: Path | None):
    """Service settings from the environment, with the command line's data folder."""
    try:
        from .service.settings import Settings
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    settings = Settings.from_env()
    return settings.with_(data_dir=data_dir) if data_dir is not None else settings


def _job_store(settings):
    try:
        from .service.store import JobStore
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return JobStore(settings.database_url, max_attempts=settings.max_attempts)


DataDirOption = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder of the jobs, results and SQLite database "
                       "(default: $ECHOMIMIC_DATA_DIR or ./echomimic-data).")]


@app.command("serve")
@_handles_errors
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Jobs run at once by the Celery worker threads of "
                                              "this process (0: API only; `echomimic worker` "
                                              "processes run the jobs).", min=0, max=64)] = 1,
    data_dir: DataDirOption = None,
) -> None:
    """Run the REST API (FastAPI + uvicorn) with embedded Celery workers."""
    import logging

    settings = _service_settings(data_dir)
    try:
        import uvicorn

        from .service.app import create_app
        from .service.queue import background_work
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not settings.auth and host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: authentication is off and the server listens on {host}\n")
    application = create_app(settings)
    # a running job is re-queued by the reaper of the next server or of a worker
    with background_work(application, workers):
        uvicorn.run(application, host=host, port=port, log_level="info")


@app.command("worker")
@_handles_errors
def worker_cmd(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once.", min=1, max=64)] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (processes), threads or solo "
                                           "(one job at a time in this process).")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    data_dir: DataDirOption = None,
) -> None:
    """Run jobs of the REST service from its queue ($ECHOMIMIC_BROKER_URL: Redis or RabbitMQ
    across machines; by default the SQLite broker in the data folder, this machine only)."""
    settings = _service_settings(data_dir)
    if pool not in ("prefork", "threads", "solo"):
        raise InvalidOption(f"--pool must be prefork, threads or solo, got {pool!r}")
    try:
        from .service.queue import run_worker
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    run_worker(settings, concurrency=concurrency, pool=pool, loglevel=loglevel.upper())


keys_app = typer.Typer(help="Create, list and revoke API keys of the REST service.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@_handles_errors
def keys_create_cmd(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    data_dir: DataDirOption = None,
) -> None:
    """Create a key; the key itself is printed once, on the last line."""
    if not name.strip():
        raise InvalidOption("the key needs a --name")
    store = _job_store(_service_settings(data_dir))
    key, secret = store.create_key(name.strip())
    sys.stdout.write(f"created key {key.id} ({key.name}); keep it secret, it is not shown again:\n")
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
@_handles_errors
def keys_list_cmd(data_dir: DataDirOption = None) -> None:
    """List keys (id, start of the key, name, created, revoked)."""
    from datetime import datetime, timezone

    def when(t):
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M") if t else "-"

    for k in _job_store(_service_settings(data_dir)).list_keys():
        sys.stdout.write(f"{k.id}  {k.prefix}…  {k.name}  created {when(k.created_at)}  "
                         f"revoked {when(k.revoked_at)}\n")


@keys_app.command("revoke")
@_handles_errors
def keys_revoke_cmd(
    key_id: Annotated[str, typer.Argument(help="The key's id (or a unique start of it).")],
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    if not _job_store(_service_settings(data_dir)).revoke_key(key_id.strip()):
        raise InvalidOption(f"no single active key with id {key_id!r}")
    sys.stdout.write(f"revoked {key_id}\n")


# ------------------------------------------------------------------------------------------------
# batch, cleanup
# ------------------------------------------------------------------------------------------------


@app.command("batch")
@_handles_errors
def batch_cmd(
    jobs_file: Annotated[Path, typer.Argument(help="JSONL file: one JSON object a line with the "
                                                   "inputs and options of a video.")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the videos, batch_status.json "
                                                    "and batch_report.jsonl.")],
    server: Annotated[Optional[str], typer.Option(help="Submit the jobs to this echomimic "
                                                       "server (e.g. http://127.0.0.1:8000) "
                                                       "instead of running them here.")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Jobs at a time "
                                                "(default: half the cores here, 4 with "
                                                "--server).")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key for --server (default: "
                                                        "$ECHOMIMIC_API_KEY).")] = None,
) -> None:
    """Make many videos from a JSONL file; a rerun skips the ones already made.

    Exit code 0 when every job succeeded, 1 when some failed (see DIR/batch_report.jsonl),
    2 when the file cannot be used.
    """
    from .batch import run_batch

    def note(o) -> None:
        if o.status == "failed":
            who = f" ({o.name})" if o.name else ""
            sys.stderr.write(f"line {o.line}{who}: failed: {o.error['code']}: "
                             f"{_one_line(o.error['message'])}\n")
        else:
            sys.stderr.write(f"line {o.line} ({o.name}): "
                             f"{'done' if o.status == 'done' else 'already done'}\n")
        sys.stderr.flush()

    summary = run_batch(jobs_file, out, server=server, jobs=jobs,
                        api_key=api_key or os.environ.get("ECHOMIMIC_API_KEY") or None,
                        on_outcome=note)
    sys.stdout.write(summary.line() + "\n")
    raise typer.Exit(summary.exit_code)


@app.command("cleanup")
@_handles_errors
def cleanup_cmd(
    days: Annotated[Optional[float], typer.Option(help="Delete jobs finished more than this many "
                                                       "days ago (default: "
                                                       "$ECHOMIMIC_RETENTION_DAYS).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be "
                                                            "deleted.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete the inputs, results and records of old finished jobs of the REST service."""
    settings = _service_settings(data_dir)
    from .service.retention import cleanup
    from .service.storage import make_storage

    days = settings.retention_days if days is None else days
    if not days or days <= 0:
        raise InvalidOption("give --days or set ECHOMIMIC_RETENTION_DAYS (above 0)")
    report = cleanup(_job_store(settings), make_storage(settings), older_than_days=days,
                     dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    sys.stdout.write(f"{verb} {len(report.jobs)} finished jobs and {len(report.orphans)} "
                     f"orphaned file sets older than {days:g} days\n")


# ------------------------------------------------------------------------------------------------
# ui: the web page (Gradio)
# ------------------------------------------------------------------------------------------------


@app.command("ui")
@_handles_errors
def ui_cmd(
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 7860,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine "
                                           "only).")] = "127.0.0.1",
    server: Annotated[Optional[str], typer.Option(
        "--server", help="Run the jobs on this echomimic REST server (e.g. "
        "http://127.0.0.1:8000) instead of in this process; its API key comes from "
        "$ECHOMIMIC_API_KEY or the page.")] = None,
) -> None:
    """Serve the web UI (Gradio): upload a photo, give speech, a video or text, get the video."""
    try:
        import gradio  # noqa: F401
    except ImportError:  # the extra is not installed
        raise _fail("the web UI needs its extra: pip install 'echomimic[ui]'") from None
    from .ui import launch

    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: the web UI has no login and listens on {host}\n")
    launch(host=host, port=port, server=server)


if __name__ == "__main__":  # pragma: no cover
    main()
