"""Body-pose sequences (``echomimic.pose/1``): the DWPose/OpenPose layout in JSON or NPZ.

A pose sequence is one set of 2D keypoints per frame in the layout DWPose, ControlNet's OpenPose,
EchoMimic V2 and MimicMotion use: 18 body points (COCO-18), 2 x 21 hand points (the person's
left hand first) and 68 face points, each ``(x, y, score)`` with x and y as fractions of the
frame's width and height and score 0 for a missing point (see :mod:`echomimic.analysis.body`
for the point order). It is **not** the face-landmark sequence of :mod:`echomimic.motion.pose_io`
(MediaPipe face-mesh points, EchoMimic V1's driving format); :func:`is_body_pose_file` tells the
two apart and each loader refuses the other kind with a line saying which is which.

JSON::

    {"schema": "echomimic.pose/1", "fps": 24, "width": 768, "height": 768, "layout": "dwpose",
     "frames": [{"body": [[x, y, s] x 18],
                 "hands": [[[x, y, s] x 21], [[x, y, s] x 21]],
                 "face": [[x, y, s] x 68]}, ...]}

NPZ (``numpy.savez``, plain numeric arrays, no pickles): ``body`` (F, 18, 3), ``hands``
(F, 2, 21, 3), ``face`` (F, 68, 3), scalars ``fps``, ``width``, ``height`` and optionally the
strings ``schema`` and ``layout``.

Limits: at most :data:`MAX_POSE_FRAMES` frames and :data:`MAX_POSE_BYTES` bytes (also for the
unpacked arrays of an NPZ); x, y in [-1, 2] (a joint just outside the picture), score in [0, 1],
every number finite, fps in (0, 240], width and height 1-65536. Anything else raises
:class:`~echomimic.errors.PoseError` with one line. Pickles are never loaded here (they can run
code): EchoMimic V2's demo folders of pickled ``.npy`` dicts are converted once, on a trusted
machine, by ``echomimic convert-poses DIR --trust-pickle`` (:func:`convert_v2_folder`).

:func:`extract_pose` makes a sequence from any video (MediaPipe Pose + Hands, One-Euro smoothed).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from echomimic.errors import PoseError

__all__ = ["PoseSequence", "load_pose_sequence", "save_pose_sequence", "validate_pose_sequence",
           "is_body_pose_file", "pose_schema", "convert_v2_folder", "extract_pose",
           "POSE_SCHEMA_ID", "POSE_LAYOUT", "MAX_POSE_FRAMES", "MAX_POSE_BYTES", "COORD_RANGE"]

#: Format identifier and version written in every file.
POSE_SCHEMA_ID = "echomimic.pose/1"
#: The point layout (the only one of this version).
POSE_LAYOUT = "dwpose"
#: Most frames in a pose sequence (an hour at 30 fps).
MAX_POSE_FRAMES = 108_000
#: Largest pose file read, and largest total of the arrays inside an NPZ (bytes).
MAX_POSE_BYTES = 128 * 1024 * 1024
#: Allowed range of x and y (fractions of the frame; points slightly outside the picture occur).
COORD_RANGE = (-1.0, 2.0)
#: Decimals written to JSON (1e-5 of a 4K frame is 0.04 pixel).
DECIMALS = 5

_SHAPES = {"body": (18, 3), "hands": (2, 21, 3), "face": (68, 3)}
_HOW_TO_CONVERT = ("convert EchoMimic V2 pickled poses once on a trusted machine with "
                   "'echomimic convert-poses DIR -o poses.npz --trust-pickle'")


@dataclass
class PoseSequence:
    """A body-pose sequence.

    ``body`` (F, 18, 3), ``hands`` (F, 2, 21, 3) and ``face`` (F, 68, 3) float32 arrays of
    ``(x, y, score)``: x, y as fractions of ``width`` x ``height``, score 0 for a missing point.
    ``fps`` is the frame rate; ``meta`` free-form information (source, generator).
    """

    body: np.ndarray
    hands: np.ndarray
    face: np.ndarray
    fps: float
    width: int
    height: int
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.body.shape[0])

    @property
    def duration(self) -> float:
        return self.n_frames / float(self.fps)

    @classmethod
    def empty(cls, n_frames: int, *, fps: float, width: int, height: int) -> "PoseSequence":
        """A sequence of ``n_frames`` frames with every point missing."""
        n = int(n_frames)
        return cls(np.zeros((n, 18, 3), np.float32), np.zeros((n, 2, 21, 3), np.float32),
                   np.zeros((n, 68, 3), np.float32), float(fps), int(width), int(height))

    def pixels(self, part: str = "body") -> np.ndarray:
        """The points of ``part`` (``body``, ``hands`` or ``face``) with x, y in pixels."""
        arr = np.array(getattr(self, part), np.float32, copy=True)
        arr[..., 0] *= self.width
        arr[..., 1] *= self.height
        return arr


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("echomimic").joinpath("schemas", "pose.schema.json").read_text("utf-8")


def pose_schema() -> dict[str, Any]:
    """The JSON Schema of ``echomimic.pose/1`` JSON files (a fresh copy)."""
    return json.loads(_schema_text())


def _check_header(fps: Any, width: Any, height: Any, name: str) -> tuple[float, int, int]:
    try:
        rate = float(fps)
    except (TypeError, ValueError):
        raise PoseError(f"{name}: fps must be a number, got {fps!r}") from None
    if isinstance(fps, bool) or not math.isfinite(rate) or not 0 < rate <= 240:
        raise PoseError(f"{name}: fps must be in (0, 240], got {fps!r}")
    out = []
    for key, v in (("width", width), ("height", height)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise PoseError(f"{name}: {key} must be a whole number of pixels, got {v!r}") from None
        if isinstance(v, bool) or not math.isfinite(f) or f != round(f) or not 1 <= f <= 65536:
            raise PoseError(f"{name}: {key} must be a whole number of pixels in 1-65536, got {v!r}")
        out.append(int(f))
    return rate, out[0], out[1]


def _check_points(arr: np.ndarray, part: str, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        f = int(np.argwhere(bad)[0][0])
        raise PoseError(f"{name}: {part} of frame {f} holds NaN or infinity")
    lo, hi = COORD_RANGE
    xy = arr[..., :2]
    out = (xy < lo) | (xy > hi)
    if out.any():
        idx = np.argwhere(out)[0]
        raise PoseError(f"{name}: {part} of frame {int(idx[0])} has a coordinate "
                        f"{float(xy[tuple(idx)]):g} outside [{lo:g}, {hi:g}] (x and y are "
                        f"fractions of the frame's width and height)")
    s = arr[..., 2]
    out = (s < 0) | (s > 1)
    if out.any():
        idx = np.argwhere(out)[0]
        raise PoseError(f"{name}: {part} of frame {int(idx[0])} has a score "
                        f"{float(s[tuple(idx)]):g} outside [0, 1]")


def validate_pose_sequence(seq: PoseSequence, name: str = "pose sequence") -> PoseSequence:
    """Check shapes, limits and values of ``seq`` (raises :class:`PoseError`); returns it with
    float32 arrays."""
    if not isinstance(seq, PoseSequence):
        raise PoseError(f"{name}: expected a PoseSequence, got {type(seq).__name__}")
    seq.fps, seq.width, seq.height = _check_header(seq.fps, seq.width, seq.height, name)
    n = None
    for part, shape in _SHAPES.items():
        arr = getattr(seq, part)
        try:
            arr = np.asarray(arr)
        except (TypeError, ValueError):
            raise PoseError(f"{name}: {part} is not an array of numbers") from None
        if arr.dtype.kind not in "iuf":
            raise PoseError(f"{name}: {part} must hold numbers, got {arr.dtype}")
        if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
            want = ", ".join(map(str, shape))
            raise PoseError(f"{name}: {part} must have shape (frames, {want}), "
                            f"got {tuple(arr.shape)}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise PoseError(f"{name}: body, hands and face have different numbers of frames")
        setattr(seq, part, arr.astype(np.float32, copy=False))
    if n == 0:
        raise PoseError(f"{name} has no frames")
    if n > MAX_POSE_FRAMES:
        raise PoseError(f"{name} has {n} frames; the limit is {MAX_POSE_FRAMES}")
    for part in _SHAPES:
        _check_points(np.asarray(getattr(seq, part), np.float64), part, name)
    return seq


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def _read(src: Any) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if len(data) > MAX_POSE_BYTES:
            raise PoseError(f"pose data is larger than {MAX_POSE_BYTES // 2**20} MB")
        return data, "pose data"
    try:
        path = os.fspath(src)
    except TypeError:
        raise PoseError(f"a pose file must be a path or bytes, got {type(src).__name__}") from None
    name = f"pose file {str(path)!r}"
    if os.path.isdir(path):
        raise PoseError(f"{name} is a folder; EchoMimic V2 pose folders of pickled .npy files "
                        f"must be converted first: {_HOW_TO_CONVERT}")
    try:
        size = os.path.getsize(path)
        if size > MAX_POSE_BYTES:
            raise PoseError(f"{name} is larger than {MAX_POSE_BYTES // 2**20} MB")
        with open(path, "rb") as fh:
            return fh.read(), name
    except FileNotFoundError:
        raise PoseError(f"pose file not found: {str(path)!r}") from None
    except OSError as exc:
        raise PoseError(f"cannot read {name}: {exc.strerror or exc}") from None


def _reject_constant(value: str) -> float:
    raise PoseError(f"holds {value}, which is not a valid number")


def _describe(error, name: str) -> str:
    path = list(error.absolute_path)
    where = path[0] if path else "the document"
    for p in path[1:]:
        where = f"{where}[{p}]"
    if error.validator == "const" and path == ["schema"]:
        return (f"{name}: unsupported pose schema {error.instance!r} (this version reads "
                f"{POSE_SCHEMA_ID!r})")
    if error.validator == "const" and path == ["layout"]:
        return f"{name}: unsupported layout {error.instance!r} (only {POSE_LAYOUT!r})"
    if error.validator == "required":
        return f"{name} lacks {error.message.split(' is a required')[0]} at {where}"
    if error.validator == "maxItems" and path == ["frames"]:
        return f"{name} has {len(error.instance)} frames; the limit is {MAX_POSE_FRAMES}"
    if error.validator in ("minItems", "maxItems") and len(path) >= 3:
        return f"{name}: wrong number of points at {where}: {error.message}"
    return f"{name}: invalid at {where}: {error.message}"


def _part_array(frames: list, part: str, name: str) -> np.ndarray:
    shape = _SHAPES[part]
    n = len(frames)
    out = np.zeros((n,) + shape, np.float64)
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise PoseError(f"{name}: frame {i} is not an object with 'body', 'hands', 'face'")
        v = fr.get(part)
        if v is None:
            if part == "body":
                raise PoseError(f"{name}: frame {i} has no 'body'")
            continue                                # hands or face absent: all missing
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise PoseError(f"{name}: {part} of frame {i} is not a nested list of numbers "
                            f"with shape {shape}") from None
        if a.shape != shape:
            raise PoseError(f"{name}: {part} of frame {i} has shape {a.shape}, expected {shape}")
        out[i] = a
    return out


def _from_json(data: bytes, name: str) -> PoseSequence:
    import jsonschema

    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except PoseError as exc:
        raise PoseError(f"{name} {exc}") from None
    except UnicodeDecodeError:
        raise PoseError(f"{name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PoseError(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg})") from None
    if not isinstance(doc, dict):
        raise PoseError(f"{name} must hold a JSON object with \"schema\": {POSE_SCHEMA_ID!r}")
    schema = doc.get("schema")
    if schema == "echomimic.motion/1":
        raise PoseError(f"{name} is a motion file (echomimic.motion/1), not a body-pose "
                        f"sequence: pass it as --motion")
    if schema is None and any(k in doc for k in ("landmarks", "lmks")):
        raise PoseError(f"{name} is a face-landmark sequence (EchoMimic V1 style), not a "
                        f"body-pose sequence: pass it as --motion")
    frames = doc.get("frames")
    if isinstance(frames, list) and len(frames) > MAX_POSE_FRAMES:
        raise PoseError(f"{name} has {len(frames)} frames; the limit is {MAX_POSE_FRAMES}")
    probe = dict(doc)
    if isinstance(frames, list):
        probe["frames"] = frames[:1]               # bulk checks below, with numpy
    validator = jsonschema.Draft202012Validator(pose_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(probe))
    if error is not None:
        raise PoseError(_describe(error, name))
    arrays = {part: _part_array(frames, part, name) for part in _SHAPES}
    meta = doc.get("meta") or {}
    return PoseSequence(arrays["body"], arrays["hands"], arrays["face"], doc["fps"], doc["width"],
                        doc["height"], meta=dict(meta))


def _refuse_pickle(name: str) -> PoseError:
    return PoseError(f"{name} is a pickle, which is never loaded (loading it can run code); "
                     f"{_HOW_TO_CONVERT}")


def _npz_scalar(z, key: str, name: str, kind: str = "number") -> Any:
    a = z[key]
    if a.size != 1:
        raise PoseError(f"{name}: {key!r} must be a single {kind}")
    if kind == "string":
        if a.dtype.kind != "U":
            raise PoseError(f"{name}: {key!r} must be a string")
        return str(a.reshape(()))
    if a.dtype.kind not in "iuf":
        raise PoseError(f"{name}: {key!r} must be a number")
    return a.reshape(()).item()


def _from_numpy(data: bytes, name: str) -> PoseSequence:
    if data[:6] == b"\x93NUMPY":
        try:
            np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise _refuse_pickle(name) from None
            raise PoseError(f"{name} is not a readable NumPy file ({exc})") from None
        except (OSError, EOFError) as exc:
            raise PoseError(f"{name} is not a readable NumPy file ({exc})") from None
        raise PoseError(f"{name} is a single .npy array; a pose sequence is an NPZ with the "
                        f"arrays body, hands, face, fps, width and height (or JSON)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PoseError(f"{name} is not a readable NPZ file ({exc})") from None
    if total > MAX_POSE_BYTES:
        raise PoseError(f"{name} unpacks to more than {MAX_POSE_BYTES // 2**20} MB")
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise PoseError(f"{name} is not a readable NPZ file ({exc})") from None
    with z:
        files = set(z.files)
        if "landmarks" in files or "lmks" in files:
            raise PoseError(f"{name} is a face-landmark sequence (EchoMimic V1 style), not a "
                            f"body-pose sequence: pass it as --motion")
        missing = [k for k in ("body", "fps", "width", "height") if k not in files]
        if missing:
            raise PoseError(f"{name} lacks the array(s) {', '.join(missing)} (an echomimic.pose/1 "
                            f"NPZ holds body, hands, face, fps, width and height)")
        try:
            if "schema" in files:
                schema = _npz_scalar(z, "schema", name, "string")
                if schema != POSE_SCHEMA_ID:
                    raise PoseError(f"{name}: unsupported pose schema {schema!r} (this version "
                                    f"reads {POSE_SCHEMA_ID!r})")
            if "layout" in files:
                layout = _npz_scalar(z, "layout", name, "string")
                if layout != POSE_LAYOUT:
                    raise PoseError(f"{name}: unsupported layout {layout!r} (only {POSE_LAYOUT!r})")
            fps = _npz_scalar(z, "fps", name)
            width = _npz_scalar(z, "width", name)
            height = _npz_scalar(z, "height", name)
            body = z["body"]
            n = body.shape[0] if body.ndim else 0
            if n > MAX_POSE_FRAMES:
                raise PoseError(f"{name} has {n} frames; the limit is {MAX_POSE_FRAMES}")
            hands = z["hands"] if "hands" in files else np.zeros((n, 2, 21, 3), np.float32)
            face = z["face"] if "face" in files else np.zeros((n, 68, 3), np.float32)
        except ValueError as exc:                 # an object array inside the archive
            if "pickle" in str(exc).lower():
                raise _refuse_pickle(name) from None
            raise PoseError(f"{name} is not a readable NPZ file ({exc})") from None
    return PoseSequence(body, hands, face, fps, width, height)


def is_body_pose_file(src: Any) -> bool:
    """True when ``src`` (path or bytes) looks like an ``echomimic.pose/1`` file (JSON with that
    schema, or an NPZ holding a ``body`` array); False for anything else, including EchoMimic V1
    face-landmark sequences and motion files. Reads, never raises."""
    try:
        data, _ = _read(src)
    except PoseError:
        return False
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return "body.npy" in zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
    head = data.lstrip()[:1]
    if head != b"{":
        return False
    # the schema string is near the start of files we write; parse fully only when needed
    if POSE_SCHEMA_ID.encode() not in data[:4096] and POSE_SCHEMA_ID.encode() not in data:
        return False
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("schema") == POSE_SCHEMA_ID


def load_pose_sequence(src: Any) -> PoseSequence:
    """Read and validate an ``echomimic.pose/1`` file (JSON or NPZ, recognised by content; a
    path or bytes). This is the one reader used by every front (CLI, Python, REST).

    Raises:
        PoseError: missing/unreadable/too large file, a pickle, wrong schema or layout, wrong
            shapes, NaN or infinity, values out of range, too many frames.
    """
    data, name = _read(src)
    if not data:
        raise PoseError(f"{name} is empty")
    if data[:6] == b"\x93NUMPY" or data[:4] == b"PK\x03\x04":
        seq = _from_numpy(data, name)
    elif data[:1] == b"\x80":
        raise _refuse_pickle(name)                # a bare pickle stream (protocol 2+)
    elif data.lstrip()[:1] in (b"{", b"["):
        seq = _from_json(data, name)
    else:
        raise PoseError(f"{name} is neither JSON nor NPZ (an echomimic.pose/1 file is one of "
                        f"those)")
    seq = validate_pose_sequence(seq, name)
    seq.meta.setdefault("source", name)
    return seq


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def _rows(arr: np.ndarray) -> list:
    return np.round(arr.astype(np.float64), DECIMALS).tolist()


def pose_to_dict(seq: PoseSequence) -> dict[str, Any]:
    """The JSON document of ``seq`` (validated)."""
    seq = validate_pose_sequence(seq)
    frames = [{"body": b, "hands": h, "face": f}
              for b, h, f in zip(_rows(seq.body), _rows(seq.hands), _rows(seq.face))]
    doc: dict[str, Any] = {"schema": POSE_SCHEMA_ID, "fps": seq.fps, "width": seq.width,
                           "height": seq.height, "layout": POSE_LAYOUT}
    meta = {k: v for k, v in (seq.meta or {}).items() if k != "source"}
    if meta:
        doc["meta"] = meta
    doc["frames"] = frames
    return doc


def save_pose_sequence(seq: PoseSequence, path: str | os.PathLike[str]) -> Path:
    """Write ``seq`` to ``path``: NPZ when the name ends in ``.npz``, else JSON (one frame per
    line). The file appears atomically. Returns the path.

    Raises:
        PoseError: the sequence is invalid or the file cannot be written.
    """
    path = Path(path)
    seq = validate_pose_sequence(seq)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.suffix.lower() == ".npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh, schema=np.array(POSE_SCHEMA_ID), layout=np.array(POSE_LAYOUT),
                    body=seq.body.astype(np.float32), hands=seq.hands.astype(np.float32),
                    face=seq.face.astype(np.float32), fps=np.float64(seq.fps),
                    width=np.int64(seq.width), height=np.int64(seq.height))
        else:
            doc = pose_to_dict(seq)
            frames = doc.pop("frames")
            head = json.dumps(doc, ensure_ascii=False)[:-1]
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(head + ', "frames": [\n')
                for i, fr in enumerate(frames):
                    fh.write(json.dumps(fr, separators=(",", ":")))
                    fh.write(",\n" if i + 1 < len(frames) else "\n")
                fh.write("]}\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PoseError(f"cannot write pose file {str(path)!r}: {exc.strerror or exc}") from None
    return path


# ----------------------------------------------------------------------------------------------
# EchoMimic V2 demo folders (pickled per-frame .npy dicts) -> PoseSequence
# ----------------------------------------------------------------------------------------------

#: DWPose's visibility threshold: points below it are not drawn by EchoMimic V2 / ControlNet.
V2_MIN_SCORE = 0.3


def _v2_frame(d: Any, fname: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One V2 pose dict -> (body, hands, face) in the frame's normalised coordinates, and the
    side of the square canvas the pose is drawn on."""
    if not isinstance(d, dict):
        raise PoseError(f"{fname} does not hold a pose dict")
    try:
        bodies = d["bodies"]
        cand = np.asarray(bodies["candidate"], np.float64).reshape(-1, 2)
        subset = np.asarray(bodies["subset"], np.float64).reshape(-1, 18)
        bscore = np.asarray(bodies.get("score", np.ones_like(subset)), np.float64).reshape(-1, 18)
        hands = np.asarray(d["hands"], np.float64).reshape(-1, 21, 2)
        hscore = np.asarray(d.get("hands_score", np.ones(hands.shape[:2])), np.float64)
        hscore = hscore.reshape(-1, 21)
        faces = np.asarray(d["faces"], np.float64).reshape(-1, 68, 2)
        fscore = np.asarray(d.get("faces_score", np.ones(faces.shape[:2])), np.float64)
        fscore = fscore.reshape(-1, 68)
        params = d.get("draw_pose_params")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PoseError(f"{fname} is not an EchoMimic V2 / DWPose pose dict ({exc})") from None
    # the person with the highest mean score (V2 keeps one, as its own code does)
    k = int(np.argmax(bscore.mean(axis=1))) if len(bscore) > 1 else 0
    if len(cand) < 18 * (k + 1) or len(hands) < 2 * (k + 1) or len(faces) < 1:
        raise PoseError(f"{fname}: the body, hands or face arrays are too short")
    body = np.zeros((18, 3))
    body[:, :2] = cand[18 * k:18 * (k + 1)]
    body[:, 2] = np.where(subset[k] >= 0, np.clip(bscore[k], 0, 1), 0.0)
    hand = np.zeros((2, 21, 3))
    hand[:, :, :2] = hands[2 * k:2 * k + 2]
    hs = hscore[2 * k:2 * k + 2] if len(hscore) >= 2 * (k + 1) else np.ones((2, 21))
    hand[:, :, 2] = np.where(hs >= V2_MIN_SCORE, np.clip(hs, 0, 1), 0.0)
    face = np.zeros((68, 3))
    face[:, :2] = faces[0]
    fs = fscore[0] if len(fscore) else np.ones(68)
    face[:, 2] = np.where(fs >= V2_MIN_SCORE, np.clip(fs, 0, 1), 0.0)
    # DWPose marks undetected points with x = y = -1
    for arr in (body, hand, face):
        gone = (arr[..., 0] < 0) & (arr[..., 1] < 0) & np.isclose(arr[..., 0], -1)
        arr[gone] = 0.0
    side = 0
    if params is not None:
        # [imh, imw, rb, re, cb, ce]: the pose is drawn at imh x imw and pasted at rows rb:re,
        # columns cb:ce of a square canvas (one of the two spans is the whole side)
        try:
            imh, imw, rb, re_, cb, ce = (float(v) for v in params)
        except (TypeError, ValueError):
            raise PoseError(f"{fname}: draw_pose_params must be six numbers") from None
        side = int(max(re_, ce))
        if side <= 0 or imh <= 0 or imw <= 0:
            raise PoseError(f"{fname}: draw_pose_params {list(params)} are not a valid rectangle")
        for arr in (body, hand, face):
            seen = arr[..., 2] > 0
            arr[..., 0] = np.where(seen, (cb + arr[..., 0] * imw) / side, 0.0)
            arr[..., 1] = np.where(seen, (rb + arr[..., 1] * imh) / side, 0.0)
    for arr in (body, hand, face):
        arr[arr[..., 2] <= 0, :2] = 0.0
    return body, hand, face, side


def convert_v2_folder(folder: str | os.PathLike[str], *, trust_pickle: bool = False,
                      fps: float = 24.0, size: int | None = None,
                      progress: Callable[[str, float], None] | None = None) -> PoseSequence:
    """Convert an EchoMimic V2 pose folder (``0.npy``, ``1.npy``, … pickled DWPose dicts with
    ``bodies`` {candidate, subset, score}, ``hands``, ``hands_score``, ``faces``,
    ``faces_score``, ``draw_pose_params``) into a :class:`PoseSequence`.

    The files are pickles: loading them can run any code. They are read only when
    ``trust_pickle`` is True and ``folder`` is a local folder you trust (such as the demo poses
    of the official repository); otherwise :class:`PoseError` is raised before anything is read.

    Coordinates are mapped from V2's drawing rectangle (``draw_pose_params``) to its square
    canvas (768 x 768 for the demo poses) and normalised to it; scores above 1 (DWPose's raw
    confidences) are clipped to 1, points DWPose considers invisible (below 0.3) get score 0.

    Args:
        folder: the folder.
        trust_pickle: you vouch for the files (required).
        fps: their frame rate (V2 does not store one; its demos are 24 fps).
        size: canvas side in pixels when the files lack ``draw_pose_params`` (default 768).
    """
    if not trust_pickle:
        raise PoseError("EchoMimic V2 pose folders are pickles, which can run code when loaded; "
                        "convert only a local folder you trust, with --trust-pickle")
    path = Path(folder)
    if not path.is_dir():
        raise PoseError(f"not a folder: {str(path)!r} (convert-poses reads a local folder of "
                        f"0.npy, 1.npy, ... files)")
    files = [p for p in path.iterdir() if p.suffix == ".npy" and p.stem.isdigit()]
    if not files:
        raise PoseError(f"no numbered .npy pose files (0.npy, 1.npy, ...) in {str(path)!r}")
    files.sort(key=lambda p: int(p.stem))
    if len(files) > MAX_POSE_FRAMES:
        raise PoseError(f"{str(path)!r} has {len(files)} frames; the limit is {MAX_POSE_FRAMES}")
    idx = [int(p.stem) for p in files]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise PoseError(f"the pose files of {str(path)!r} are not numbered consecutively")
    n = len(files)
    body = np.zeros((n, 18, 3), np.float32)
    hands = np.zeros((n, 2, 21, 3), np.float32)
    face = np.zeros((n, 68, 3), np.float32)
    sides = set()
    for i, p in enumerate(files):
        try:
            obj = np.load(p, allow_pickle=True)   # trusted by the caller (trust_pickle)
            d = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object else obj
        except Exception as exc:                  # noqa: BLE001 - any unpickling failure
            raise PoseError(f"cannot read {p.name}: {type(exc).__name__}: {exc}") from None
        b, h, f, side = _v2_frame(d, p.name)
        body[i], hands[i], face[i] = b, h, f
        if side:
            sides.add(side)
        if progress is not None:
            progress("convert", (i + 1) / n)
    if len(sides) > 1:
        raise PoseError(f"the pose files of {str(path)!r} use different canvas sizes "
                        f"({', '.join(map(str, sorted(sides)))})")
    side = sides.pop() if sides else int(size or 768)
    seq = PoseSequence(body, hands, face, float(fps), side, side,
                       meta={"generator": "convert-poses", "source": "EchoMimic V2 pose folder"})
    return validate_pose_sequence(seq, f"converted {str(path)!r}")


# ----------------------------------------------------------------------------------------------
# any video -> PoseSequence
# ----------------------------------------------------------------------------------------------

#: One-Euro parameters for extracted points (coordinates in units of the frame's longer side).
SMOOTH_MIN_CUTOFF = 1.5
SMOOTH_BETA = 8.0


def smooth_poses(seq: PoseSequence, *, min_cutoff: float = SMOOTH_MIN_CUTOFF,
                 beta: float = SMOOTH_BETA) -> PoseSequence:
    """One-Euro smoothing of every point over time, run separately over each stretch of frames
    where the point is present; missing points stay missing. Returns a new sequence."""
    from echomimic.motion.smoothing import one_euro

    n = seq.n_frames
    s = float(max(seq.width, seq.height))
    scale = np.array([seq.width / s, seq.height / s])
    out = {}
    for part in _SHAPES:
        arr = np.array(getattr(seq, part), np.float64)
        flat = arr.reshape(n, -1, 3)
        present = flat[:, :, 2] > 0                     # (n, points)
        # points that share a presence pattern are filtered together (a hand's 21 points)
        groups: dict[bytes, list[int]] = {}
        for j in range(flat.shape[1]):
            groups.setdefault(np.packbits(present[:, j]).tobytes(), []).append(j)
        for cols in groups.values():
            mask = present[:, cols[0]]
            if not mask.any():
                continue
            edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
            for a, b in zip(edges[::2], edges[1::2]):
                xy = flat[a:b, cols, :2] * scale            # (run, k, 2) isotropic units
                sm = one_euro(xy.reshape(b - a, -1), seq.fps, min_cutoff=min_cutoff, beta=beta)
                flat[a:b, cols, :2] = sm.reshape(b - a, len(cols), 2) / scale
        out[part] = flat.reshape(arr.shape).astype(np.float32)
    return PoseSequence(out["body"], out["hands"], out["face"], seq.fps, seq.width, seq.height,
                        meta=dict(seq.meta))


def extract_pose(video: Any, *, face: bool = True, smooth: bool = True,
                 max_frames: int | None = None,
                 progress: Callable[[str, float], None] | None = None) -> PoseSequence:
    """Body, hand (and face) poses of the person in every frame of ``video``.

    MediaPipe Pose and Hands track the person (:class:`echomimic.analysis.body.BodyTracker`);
    the points are smoothed over time with a One-Euro filter. A frame without a person has every
    score 0, a hand the hand model does not find has score 0: nothing is filled in.

    Args:
        video: path or bytes of any video FFmpeg reads.
        face: also the 68 face points (from MediaPipe's face mesh; a little slower).
        smooth: One-Euro smoothing (see :func:`smooth_poses`).
        max_frames: stop after this many frames.
        progress: ``progress(stage, fraction)`` callback.

    Raises:
        VideoError: unreadable video. PoseError: more than :data:`MAX_POSE_FRAMES` frames.
    """
    from echomimic.analysis.body import BodyTracker
    from echomimic.media.video import iter_video_frames, probe_video

    info = probe_video(video)
    total = info["n_frames"] if max_frames is None else min(info["n_frames"], max_frames)
    if total > MAX_POSE_FRAMES:
        raise PoseError(f"the video has {total} frames; a pose sequence holds at most "
                        f"{MAX_POSE_FRAMES} (use max_frames)")
    fps = info["fps"] if info["fps"] and 0 < info["fps"] <= 240 else 25.0
    body, hands, faces = [], [], []
    width = height = 0
    limit = MAX_POSE_FRAMES if max_frames is None else min(max_frames, MAX_POSE_FRAMES)
    with BodyTracker(face=face) as tracker:
        for i, rgb in enumerate(iter_video_frames(video, max_frames=limit)):
            p = tracker(rgb)
            height, width = rgb.shape[:2]
            body.append(p.body)
            hands.append(p.hands)
            faces.append(p.face)
            if progress is not None and total:
                progress("pose", min(1.0, (i + 1) / total))
    seq = PoseSequence(np.stack(body), np.stack(hands), np.stack(faces), float(fps), width,
                       height, meta={"generator": "extract-pose"})
    if smooth:
        seq = smooth_poses(seq)
    return validate_pose_sequence(seq, "extracted pose")
