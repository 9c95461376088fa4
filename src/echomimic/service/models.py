"""Model versions: the renderers a server can run, their weight folders, and what a job names.

Renderers are the plugins of :mod:`echomimic.render` (entry-point group
``echomimic.renderers``). A renderer that needs weights finds its versions as folders under the
models folder (``ECHOMIMIC_MODELS_DIR``, default ``<data>/models``)::

    <models>/<renderer>/<version>/...        e.g. models/echomimic-v1/1.0/  models/echomimic-v1/acc/

A renderer without weights (``warp``) has one version, ``builtin``. A job may name
``renderer`` and ``model_version``; :func:`resolve` checks both before the job is queued and
gives the weight folder the pipeline loads (the job's ``weights``, which a client never gives
directly). Without ``model_version`` a renderer with weights uses its newest version (by name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidOption, RendererUnavailable
from .settings import Settings

__all__ = ["BUILTIN", "ModelVersion", "check_folder", "models_dir", "list_models", "resolve"]

#: The version name of a renderer that needs no weights.
BUILTIN = "builtin"
#: Renderers that render from the photo alone (no weight folder).
_NO_WEIGHTS = {"warp"}
#: Renderers whose version folder is checked file by file before a job is queued (the layout
#: of :mod:`echomimic.render.neural.weights`: ``"v1"`` or ``"v2"``).
_CHECKED_FOLDERS = {"echomimic-v1": "v1", "echomimic-v2": "v2"}


@dataclass(frozen=True)
class ModelVersion:
    version: str
    weights: str | None           # the folder, None for a built-in renderer


def models_dir(settings: Settings) -> Path:
    """The folder of the weight folders (``ECHOMIMIC_MODELS_DIR`` or ``<data>/models``)."""
    raw = os.environ.get("ECHOMIMIC_MODELS_DIR", "").strip()
    return Path(raw) if raw else Path(settings.data_dir) / "models"


def _versions(settings: Settings, renderer: str) -> list[ModelVersion]:
    if renderer in _NO_WEIGHTS:
        return [ModelVersion(BUILTIN, None)]
    folder = models_dir(settings) / renderer
    if not folder.is_dir():
        return []
    return [ModelVersion(p.name, str(p)) for p in sorted(folder.iterdir())
            if p.is_dir() and not p.name.startswith(".")]


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every registered renderer: its versions (with weight folders), whether it can run here
    and why not (``GET /api/v1/models``)."""
    from ..render import available_renderers

    out = []
    for name, info in available_renderers().items():
        versions = _versions(settings, name)
        needs = name not in _NO_WEIGHTS
        ready = bool(info["available"]) and (not needs or bool(versions))
        reason = info.get("reason") or ""
        if info["available"] and needs and not versions:
            reason = f"no weight folder under {models_dir(settings) / name}"
        out.append({"renderer": name, "ready": ready, "reason": reason or None,
                    "needs_weights": needs,
                    "default_version": versions[-1].version if versions else None,
                    "versions": [{"version": v.version, "weights": v.weights, **_folder_state(name, v)}
                                 for v in versions]})
    return out


def check_folder(renderer: str, version: ModelVersion, *, accelerated: bool = False) -> None:
    """Refuse an incomplete weights folder of a neural renderer before its job is queued:
    :class:`~echomimic.render.neural.weights.WeightsError` (``422 weights_invalid``) naming the
    missing file and where it goes. ``accelerated``: the ``_acc`` weights are needed too."""
    model = _CHECKED_FOLDERS.get(renderer)
    if model is None or not version.weights:
        return
    from ..render.neural.weights import resolve as resolve_weights

    resolve_weights(version.weights, "acc" if accelerated else (None if model == "v1" else ""), model)


def _folder_state(renderer: str, version: ModelVersion) -> dict[str, Any]:
    """``complete`` and, when not, the ``problem`` (the missing files) of a checked folder."""
    if renderer not in _CHECKED_FOLDERS or not version.weights:
        return {}
    try:
        check_folder(renderer, version)
    except RendererUnavailable as exc:
        return {"complete": False, "problem": str(exc)}
    return {"complete": True, "problem": None}


def resolve(settings: Settings, renderer: str, model_version: str | None, *,
            accelerated: bool = False) -> ModelVersion:
    """The version a job runs with; :class:`InvalidOption` for an unknown renderer or version,
    :class:`RendererUnavailable` when the renderer cannot run here or its version's weights
    folder is incomplete (see :func:`check_folder`)."""
    from ..render import available_renderers

    found = available_renderers()
    if renderer not in found:
        raise InvalidOption(f"unknown renderer {renderer!r}; available: {', '.join(found)}")
    versions = _versions(settings, renderer)
    if model_version in (None, ""):
        if not versions:
            raise RendererUnavailable(f"renderer {renderer!r} has no weights on this server")
        chosen = versions[-1]
    else:
        match = [v for v in versions if v.version == model_version]
        if not match:
            names = ", ".join(v.version for v in versions) or "none"
            raise InvalidOption(f"renderer {renderer!r} has no version {model_version!r}; "
                                f"versions: {names}")
        chosen = match[0]
    check_folder(renderer, chosen, accelerated=accelerated)
    if not found[renderer]["available"]:
        raise RendererUnavailable(f"renderer {renderer!r} cannot run here: "
                                  f"{found[renderer].get('reason') or 'unavailable'}")
    return chosen
