"""Motion files: versioned JSON for :class:`~echomimic.types.MotionTrack` (``echomimic.motion/1``).

A motion file looks like::

    {
      "schema": "echomimic.motion/1",
      "fps": 25,
      "channels": ["yaw", "pitch", ..., "jawOpen", ...],
      "meta": {...},
      "frames": [
        [0.1, -0.25, ..., 0.43, ...],
        ...
      ]
    }

A track with body channels (``body.<joint>.x`` / ``.y``, see :data:`~echomimic.types.BODY_CHANNELS`)
is written as ``"schema": "echomimic.motion/2"`` (``schemas/motion2.schema.json``), otherwise as
version 1, so files without a body stay readable by older readers; both versions load.

Values are written rounded to 6 decimals, one frame per line. :func:`quantize` applies the same
rounding to a track in memory, so a track rendered after ``quantize`` and the same track saved,
loaded and rendered give identical frames, and saving a loaded file again gives identical bytes.

Documents are validated against the JSON Schema shipped in the package
(``echomimic/schemas/motion.schema.json``, also in ``docs/motion.schema.json``) plus the rules a
schema cannot state (every frame as long as ``channels``); any problem raises
:class:`~echomimic.errors.MotionError`. Only JSON is read and written, never pickles.
"""

from __future__ import annotations

import functools
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from echomimic.errors import MotionError
from echomimic.types import MOTION_SCHEMA_ID, MOTION_SCHEMA_ID_V2, MotionTrack, is_body_channel

__all__ = ["save_motion", "load_motion", "motion_to_dict", "motion_from_dict", "motion_to_json",
           "motion_from_json", "quantize", "motion_schema", "DECIMALS", "MAX_FILE_BYTES"]

#: Decimals kept for every value.
DECIMALS = 6
#: Largest motion file :func:`load_motion` reads (bytes).
MAX_FILE_BYTES = 512 * 1024 * 1024


#: schema file of each version this module reads
_SCHEMA_FILES = {MOTION_SCHEMA_ID: "motion.schema.json", MOTION_SCHEMA_ID_V2: "motion2.schema.json"}


@functools.lru_cache(maxsize=2)
def _schema_text(version: str = MOTION_SCHEMA_ID) -> str:
    return resources.files("echomimic").joinpath("schemas", _SCHEMA_FILES[version]).read_text("utf-8")


def motion_schema(version: str = MOTION_SCHEMA_ID) -> dict[str, Any]:
    """The JSON Schema of motion files of ``version`` (a fresh copy). Version 1 holds face and
    head channels; version 2 (``echomimic.motion/2``) adds body channels (``body.*``)."""
    return json.loads(_schema_text(version))


@functools.lru_cache(maxsize=2)
def _validator(version: str = MOTION_SCHEMA_ID) -> jsonschema.protocols.Validator:
    schema = motion_schema(version)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _quantized_values(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to :data:`DECIMALS` decimals (idempotent; -0 becomes 0)."""
    q = np.round(np.asarray(values, np.float64), DECIMALS).astype(np.float32)
    return q + np.float32(0.0)


def quantize(track: MotionTrack) -> MotionTrack:
    """A copy of ``track`` with values rounded as a saved file holds them.

    Rendering ``quantize(track)`` gives the same frames as rendering ``load_motion`` of the
    saved track.
    """
    return MotionTrack(fps=float(track.fps), channels=list(track.channels),
                       values=_quantized_values(track.values), meta=dict(track.meta))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def _clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    try:
        text = json.dumps(meta or {}, default=_jsonable, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise MotionError(f"motion meta is not JSON-serializable: {exc}") from None
    return json.loads(text)


def _fps_value(fps: float) -> float | int:
    fps = float(fps)
    return int(fps) if fps.is_integer() else fps


def motion_to_dict(track: MotionTrack) -> dict[str, Any]:
    """The JSON document of ``track`` as a dict (values rounded to 6 decimals; validated)."""
    q = _quantized_values(track.values)
    frames = (np.round(q.astype(np.float64), DECIMALS) + 0.0).tolist()
    has_body = any(is_body_channel(str(c)) for c in track.channels)
    doc = {
        "schema": MOTION_SCHEMA_ID_V2 if has_body else MOTION_SCHEMA_ID,
        "fps": _fps_value(track.fps),
        "channels": [str(c) for c in track.channels],
        "meta": _clean_meta(track.meta),
        "frames": frames,
    }
    _validate(doc)
    return doc


def motion_to_json(track: MotionTrack) -> str:
    """The motion file text of ``track``: header lines, then one frame per line."""
    doc = motion_to_dict(track)
    lines = [
        "{",
        f'  "schema": {json.dumps(doc["schema"])},',
        f'  "fps": {json.dumps(doc["fps"])},',
        f'  "channels": {json.dumps(doc["channels"])},',
        f'  "meta": {json.dumps(doc["meta"], sort_keys=True, allow_nan=False)},',
        '  "frames": [',
    ]
    rows = [json.dumps(row, separators=(",", ":")) for row in doc["frames"]]
    lines.append(",\n".join("    " + r for r in rows))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_motion(track: MotionTrack, path: str | os.PathLike[str]) -> Path:
    """Write ``track`` as a motion file (UTF-8 JSON) at ``path``; returns the path.

    Raises:
        MotionError: the track cannot be represented (unknown channels, NaN, bad fps, ...).
    """
    text = motion_to_json(track)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MotionError(f"cannot write motion file {str(path)!r}: {exc.strerror or exc}") from None
    return path


def _reject_constant(name: str) -> float:
    raise MotionError(f"motion file contains {name}, which is not a valid value")


def motion_from_json(text: str | bytes) -> MotionTrack:
    """Parse and validate motion file text."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MotionError("motion file is not UTF-8 text") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MotionError(f"motion file is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg})") from None
    return motion_from_dict(doc)


def load_motion(path: str | os.PathLike[str]) -> MotionTrack:
    """Read and validate a motion file.

    Raises:
        MotionError: the file is missing, unreadable, too large, not JSON, or not a valid
            ``echomimic.motion/1`` document.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise MotionError(f"motion path is not a file: {str(path)!r}")
        if size > MAX_FILE_BYTES:
            raise MotionError(f"motion file is too large ({size} bytes; the limit is "
                              f"{MAX_FILE_BYTES} bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise MotionError(f"motion file not found: {str(path)!r}") from None
    except OSError as exc:
        raise MotionError(f"cannot read motion file {str(path)!r}: {exc.strerror or exc}") from None
    return motion_from_json(data)


def _path_text(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if not parts:
        return "the document"
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]"
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    where = _path_text(error)
    if error.validator == "const" and list(error.absolute_path) == ["schema"]:
        return (f"unsupported motion schema {error.instance!r} "
                f"(this version reads {MOTION_SCHEMA_ID!r} and {MOTION_SCHEMA_ID_V2!r})")
    if (error.validator in ("enum", "anyOf", "pattern")
            and list(error.absolute_path)[:1] == ["channels"] and len(error.absolute_path) == 2):
        if isinstance(error.instance, str) and is_body_channel(error.instance):
            return f"unknown body channel name {error.instance!r} at {where}"
        return f"unknown channel name {error.instance!r} at {where}"
    if error.validator == "required":
        return f"motion document lacks {error.message.split(' is a required')[0]}"
    if error.validator == "additionalProperties":
        return f"motion document has an unexpected field: {error.message}"
    if error.validator == "maxItems" and list(error.absolute_path) == ["frames"]:
        return (f"motion has too many frames ({len(error.instance)}; the limit is "
                f"{error.validator_value})")
    if error.validator == "exclusiveMinimum" and list(error.absolute_path) == ["fps"]:
        return f"fps must be greater than 0, got {error.instance!r}"
    return f"invalid motion document at {where}: {error.message}"


def _validate(doc: Any) -> None:
    """Validate a motion document, raising :class:`MotionError` with a one-line reason.

    The schema checks the header and the first frame (checking every number of a long clip with
    a schema validator would take seconds); the remaining frames get the same checks in bulk.
    """
    if not isinstance(doc, dict):
        raise MotionError("motion document must be a JSON object")
    frames = doc.get("frames")
    probe = dict(doc)
    version = MOTION_SCHEMA_ID_V2 if doc.get("schema") == MOTION_SCHEMA_ID_V2 else MOTION_SCHEMA_ID
    validator = _validator(version)
    if isinstance(frames, list):
        limit = validator.schema["properties"]["frames"]["maxItems"]
        if len(frames) > limit:
            raise MotionError(f"motion has too many frames ({len(frames)}; the limit is {limit})")
        probe["frames"] = frames[:1]
    error = jsonschema.exceptions.best_match(validator.iter_errors(probe))
    if error is not None:
        raise MotionError(_describe(error))
    n_channels = len(doc["channels"])
    for i, row in enumerate(frames):
        if not isinstance(row, list):
            raise MotionError(f"frame {i} is not an array of numbers")
        if len(row) != n_channels:
            raise MotionError(f"frame {i} has {len(row)} values, expected {n_channels} "
                              f"(one per channel)")
    kinds = {type(v) for row in frames for v in row}
    if not kinds <= {int, float}:
        bad = next(t for t in kinds if t not in (int, float))
        raise MotionError(f"frames must hold numbers only, found a {_json_type(bad)}")
    values = np.asarray(frames, dtype=np.float64).reshape(len(frames), n_channels)
    if not np.isfinite(values).all():
        raise MotionError("frames hold a non-finite value")
    if np.abs(values).max(initial=0.0) > np.finfo(np.float32).max:
        raise MotionError("frames hold a value too large for a motion channel")


def _json_type(t: type) -> str:
    return {str: "string", bool: "boolean", type(None): "null", dict: "object",
            list: "array"}.get(t, t.__name__)


def motion_from_dict(doc: Any) -> MotionTrack:
    """Validate a motion document (as parsed from JSON) and build its :class:`MotionTrack`."""
    _validate(doc)
    channels = list(doc["channels"])
    values = np.asarray(doc["frames"], dtype=np.float64).reshape(len(doc["frames"]), len(channels))
    fps = float(doc["fps"])
    if not math.isfinite(fps):
        raise MotionError(f"fps must be a finite number, got {doc['fps']!r}")
    return MotionTrack(fps=fps, channels=channels, values=values.astype(np.float32),
                       meta=dict(doc.get("meta") or {}))
