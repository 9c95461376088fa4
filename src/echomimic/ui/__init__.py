"""The web UI (Gradio): ``echomimic ui`` serves it, ``pip install 'echomimic[ui]'`` installs it.

The page runs the same pipeline as the command line, :func:`echomimic.pipeline.animate`, in this
process, or on an echomimic REST server (``echomimic ui --server URL``). See ``docs/ui.md``.

Gradio is imported only when the page is built, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "launch"]


def build_app(backend: Any = None):
    """The Gradio Blocks of the page (see :func:`echomimic.ui.app.build_app`)."""
    from .app import build_app as _build

    return _build(backend)


def launch(*, host: str = "127.0.0.1", port: int = 7860, server: str | None = None,
           api_key: str | None = None, block: bool = True, quiet: bool = False):
    """Serve the page (see :func:`echomimic.ui.app.launch`)."""
    from .app import launch as _launch

    return _launch(host=host, port=port, server=server, api_key=api_key, block=block,
                   quiet=quiet)
