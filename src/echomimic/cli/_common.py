"""What every command shares: the typer ``app``, error handling and exit codes, JSON output,
the progress bar, the options generated from the option table, and the entry point ``main``.

Errors a user can cause (:class:`~echomimic.errors.EchomimicError`) are printed as one line,
``error: <message>``, with exit code 2; Ctrl-C exits with code 130.
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

from ..errors import EchomimicError
from ..options import OPTION_HELP as _OPTION_HELP
from ..options import cli_flag, limits_text, options_for

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
# shared options: generated from the option table
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
