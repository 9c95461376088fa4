"""Renderers: plugins that turn a Portrait and per-frame motion into frames.

A renderer class is registered under the ``echomimic.renderers`` entry-point group. It is built
with ``Renderer(portrait, **options)`` and has ``render(motion: dict[str, float]) -> ndarray``
returning an RGB uint8 frame of the portrait's size. A renderer driven by the speech itself
(``echomimic-v1``) also has ``prepare(track, *, audio, fps, seed, progress)``, which the pipeline
calls once before the first ``render``; ``render`` then returns the clip's frames in order.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Protocol

import numpy as np

from ..errors import RendererUnavailable
from ..types import Portrait

#: Built-in renderers, used when the package's entry points are not installed (a source tree).
_BUILTIN = {"warp": "echomimic.render.warp:WarpRenderer",
            "echomimic-v1": "echomimic.render.neural:EchoMimicV1Renderer",
            "echomimic-v2": "echomimic.render.neural:EchoMimicV2Renderer"}


class Renderer(Protocol):
    name: str

    def __init__(self, portrait: Portrait, **options: Any) -> None: ...

    def render(self, motion: dict[str, float]) -> np.ndarray: ...


def _entry_points() -> dict[str, str]:
    found = dict(_BUILTIN)
    try:
        for ep in metadata.entry_points(group="echomimic.renderers"):
            found[ep.name] = ep.value
    except Exception:  # pragma: no cover - broken metadata must not break rendering
        pass
    return found


def _load(target: str):
    mod, _, attr = target.partition(":")
    module = __import__(mod, fromlist=[attr])
    return getattr(module, attr)


def available_renderers() -> dict[str, dict[str, Any]]:
    """Name -> {"target", "available", "reason"} for every registered renderer."""
    out: dict[str, dict[str, Any]] = {}
    for name, target in sorted(_entry_points().items()):
        try:
            cls = _load(target)
            check = getattr(cls, "availability", None)
            ok, why = check() if callable(check) else (True, "")
        except Exception as exc:  # an optional dependency missing, etc.
            ok, why = False, f"{type(exc).__name__}: {exc}"
        out[name] = {"target": target, "available": ok, "reason": why}
    return out


def get_renderer(name: str):
    """The renderer class registered as ``name``."""
    eps = _entry_points()
    if name not in eps:
        raise RendererUnavailable(
            f"unknown renderer {name!r}; available: {', '.join(sorted(eps))}")
    try:
        return _load(eps[name])
    except ImportError as exc:
        raise RendererUnavailable(f"renderer {name!r} cannot be loaded: {exc}") from None
