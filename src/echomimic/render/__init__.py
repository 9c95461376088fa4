"""Renderers: plugins that turn a Portrait and per-frame motion into frames.

A renderer class is registered under the ``echomimic.renderers`` entry-point group. It is built
with ``Renderer(portrait, **options)`` and has ``render(motion: dict[str, float]) -> ndarray``
returning an RGB uint8 frame of the portrait's size. A renderer driven by the speech itself
(``echomimic-v1``) also has ``prepare(track, *, audio, fps, seed, progress)``, which the pipeline
calls once before the first ``render``; ``render`` then returns the clip's frames in order.
"""

from __future__ import annotations

import contextlib
import os
import threading
from importlib import metadata
from typing import Any, Iterator, Protocol

import numpy as np

from ..errors import RendererUnavailable
from ..types import Portrait

#: Built-in renderers, used when the package's entry points are not installed (a source tree).
_BUILTIN = {"warp": "echomimic.render.warp:WarpRenderer",
            "echomimic-v1": "echomimic.render.neural:EchoMimicV1Renderer",
            "echomimic-v2": "echomimic.render.neural:EchoMimicV2Renderer"}


#: OpenCV worker threads while frames are rendered (``ECHOMIMIC_OPENCV_THREADS``; 0 leaves
#: OpenCV's own default, one per core). One is the default: the renderer's remaps and resizes are
#: small, and OpenCV's workers then compete for the same cores with the encoder thread, the
#: speech analysis and other sessions. On two cores one thread renders as fast (wall time) and
#: spends 25-30 % less CPU per frame (benchmarks/README.md, "OpenCV threads"). The BLAS library
#: under NumPy (the speech stage's small matrix products) gets the same count: its idle workers
#: wait by spinning, which took the CPU that live sessions side by side needed.
OPENCV_THREADS_DEFAULT = 1

_cv_lock = threading.Lock()
_cv_users = 0
_cv_saved: int | None = None
_blas_limiter: Any = None


def opencv_threads_setting() -> int:
    """The OpenCV thread count rendering uses (0: OpenCV's default)."""
    raw = os.environ.get("ECHOMIMIC_OPENCV_THREADS", "").strip()
    try:
        return max(0, int(raw)) if raw else OPENCV_THREADS_DEFAULT
    except ValueError:
        return OPENCV_THREADS_DEFAULT


@contextlib.contextmanager
def rendering_threads() -> Iterator[None]:
    """Run the body with OpenCV's and the BLAS library's thread counts set for rendering (see
    :data:`OPENCV_THREADS_DEFAULT`); the process's previous settings come back when the last
    job inside such a block ends (both settings are process-wide, so jobs running side by side
    share them)."""
    global _cv_users, _cv_saved, _blas_limiter
    n = opencv_threads_setting()
    if n == 0:
        yield
        return
    import cv2

    with _cv_lock:
        if _cv_users == 0:
            _cv_saved = cv2.getNumThreads()
            cv2.setNumThreads(n)
            from threadpoolctl import threadpool_limits

            _blas_limiter = threadpool_limits(limits=n, user_api="blas")
        _cv_users += 1
    try:
        yield
    finally:
        with _cv_lock:
            _cv_users -= 1
            if _cv_users == 0 and _cv_saved is not None:
                cv2.setNumThreads(_cv_saved)
                _cv_saved = None
                if _blas_limiter is not None:
                    _blas_limiter.restore_original_limits()
                    _blas_limiter = None


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
