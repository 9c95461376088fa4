"""The ``echomimic`` command line: a thin skin over :func:`echomimic.animate` and friends.

The commands, by group, all on the one typer ``app`` of :mod:`._common`:

- :mod:`.render`: ``animate``, ``demo``, ``tts``, ``stream``, ``batch``;
- :mod:`.analysis`: ``evaluate``, ``extract-motion``, ``convert-poses``, ``extract-pose``,
  ``enroll``;
- :mod:`.info`: ``bench``, ``renderers``, ``verify``, ``version``;
- :mod:`.service`: ``serve``, ``worker``, ``keys``, ``cleanup``, ``ui``.

The options of ``animate`` are generated from the option table (:mod:`echomimic.options`), so the
command line, the Python API, the REST API and the UI always share one set of names (``max_side`` in Python is
``--max-side`` here). Errors a user can cause (:class:`~echomimic.errors.EchomimicError`) are
printed as one line, ``error: <message>``, with exit code 2; Ctrl-C exits with code 130.
"""

from __future__ import annotations

from . import analysis, info, render, service  # noqa: F401  (each registers its commands)
from ._common import (_HIDDEN_OPTIONS, EXIT_INTERRUPTED, EXIT_USER_ERROR,  # noqa: F401
                      OPTION_HELP, app, cli_name, main, native_stderr_silenced, option_fields)

__all__ = ["app", "main"]

#: The order of the commands in ``echomimic --help`` (the command groups live in separate
#: modules, so their import order alone does not give it); commands not named here come last.
_COMMAND_ORDER = ("animate", "demo", "tts", "evaluate", "bench", "extract-motion",
                  "convert-poses", "extract-pose", "stream", "enroll", "renderers", "verify",
                  "version", "serve", "worker", "batch", "cleanup", "ui")


def _help_position(command) -> int:
    return (_COMMAND_ORDER.index(command.name) if command.name in _COMMAND_ORDER
            else len(_COMMAND_ORDER))


app.registered_commands.sort(key=_help_position)
