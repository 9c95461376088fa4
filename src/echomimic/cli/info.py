"""Commands that report on this installation and on videos: ``bench``, ``renderers``,
``verify`` and ``version``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ._common import _console, _handles_errors, _print_json, _require_file, app


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
    from ..bench import format_table, parse_sizes, run_bench

    quiet = as_json or not sys.stderr.isatty()
    con = _console(stderr=True)

    def note(msg: str) -> None:
        if not quiet:
            con.print(f"[dim]{msg}[/dim]")

    if stream:
        from ..stream.bench import format_stream_report, run_stream_bench

        figures = run_stream_bench(minutes=minutes, fps=fps, log=note)
        if as_json:
            _print_json(figures)
        else:
            sys.stdout.write(format_stream_report(figures) + "\n")
        return
    if quality:
        from ..quality.evalset import build_items, format_summary, run_items, summarize

        rows = run_items(build_items("heldout"), ("acoustic", "recognizer", "auto"), log=note)
        summary = summarize(rows)
        if as_json:
            _print_json({"summary": summary, "items": rows})
        else:
            sys.stdout.write(format_summary(summary) + "\n")
        return

    if real:
        from ..bench import format_real_table, run_real_bench

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
# renderers, verify, version
# ------------------------------------------------------------------------------------------------


@app.command("renderers")
@_handles_errors
def renderers_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the renderer plugins, whether each can run here, and why not."""
    from ..render import available_renderers

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
    from ..errors import VideoError
    from ..safety import verify

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
