"""Commands that measure videos or take motion from them: ``evaluate``, ``extract-motion``,
``convert-poses``, ``extract-pose`` and ``enroll``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import AudioError, ImageError, InvalidOption, MotionError, VideoError
from ._common import _console, _handles_errors, _print_json, _ProgressBar, _require_file, app


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
    from ..errors import VideoError
    from ..quality.evaluate import LABELS, evaluate_video

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
# extract-motion
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
    from ..errors import VideoError
    from ..motion import save_motion
    from ..motion.video import extract_motion

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
    from ..motion.body_pose import convert_v2_folder, load_pose_sequence, save_pose_sequence

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
    from ..motion.body_pose import extract_pose, save_pose_sequence

    _require_file(video, "video", VideoError)
    with _ProgressBar(quiet=quiet) as bar:
        seq = extract_pose(video, face=face, smooth=smooth, max_frames=max_frames, progress=bar)
    save_pose_sequence(seq, output)
    _console().print(_pose_summary(seq, output), soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# enroll
# ------------------------------------------------------------------------------------------------


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
    from ..errors import PersonaError, VideoError
    from ..persona import enroll, save_persona

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
