"""Commands that make audio and video: ``animate``, ``demo``, ``tts``, ``stream`` and ``batch``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import AudioError, ImageError, InvalidOption, MotionError, VideoError
from ._common import (_console, _handles_errors, _one_line, _print_json, _ProgressBar,
                      _require_file, _with_shared_options, app)

# ------------------------------------------------------------------------------------------------
# animate: options generated from the option table
# ------------------------------------------------------------------------------------------------


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

    from ..pipeline import animate

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
        from ..errors import PoseError

        _require_file(pose, "pose", PoseError)
        options["pose"] = pose
    if persona is not None:
        from ..errors import PersonaError

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
    from ..demo import run_demo

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
    from ..speech.tts import synthesize, write_wav

    if output.suffix.lower() != ".wav":
        raise InvalidOption(f"the output must be a .wav file, got {output.name!r}")
    if not output.parent.exists():
        raise InvalidOption(f"the output folder {str(output.parent)!r} does not exist")
    audio, phones = synthesize(text, lang=lang, voice=voice, rate=rate, pitch=pitch)
    write_wav(output, audio)
    _console().print(f"wrote {output}: {audio.duration:.2f} s at {audio.sample_rate} Hz, "
                     f"{len(phones)} phonemes", soft_wrap=True)



# ------------------------------------------------------------------------------------------------
# stream
# ------------------------------------------------------------------------------------------------


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
    from ..stream.run import run_stream

    _require_file(image, "image", ImageError)
    if audio is not None:
        _require_file(audio, "audio", AudioError)
    con = _console(stderr=True)
    info = run_stream(image, rtmp=rtmp, audio=audio, text_stdin=text_stdin,
                      log=lambda m: con.print(f"[dim]{m}[/dim]"), fps=fps, crop="face",
                      size=size, lang=lang, voice=voice, emotion=emotion, seed=seed)
    _print_json(info)


# ------------------------------------------------------------------------------------------------
# batch
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
    from ..batch import run_batch

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
