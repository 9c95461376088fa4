"""Face-landmark sequences (EchoMimic V1-style "pose" driving) as motion.

EchoMimic V1 drives a portrait with a face-landmark sequence: one set of MediaPipe face-mesh
points per frame. This module reads such sequences from safe formats and turns them into a
:class:`~echomimic.types.MotionTrack` with the same retargeting as a driving video
(:mod:`echomimic.motion.video`): expressions relative to the sequence's own neutral, head pose,
One-Euro smoothing, missing frames held, frame-rate conversion and looping.

Accepted files (recognised by content):

* **JSON**: an object ``{"fps": 25, "width": 512, "height": 512, "landmarks": [...]}`` where
  ``landmarks`` (or ``lmks``, or ``frames``) holds one entry per frame: a list of ``[x, y]`` or
  ``[x, y, z]`` points, an object with such a list under ``landmarks`` / ``lmks``, or ``null``
  for a frame without a face. A bare list of frames is accepted too (25 fps).
* **NPZ** (``numpy.savez``): an array ``landmarks`` (or ``lmks``) of shape (frames, points, 2 or
  3), NaN rows for frames without a face, and optional scalars ``fps``, ``width``, ``height``.
* **NPY** with a plain numeric array of that shape.

Points are in MediaPipe face-mesh order (468 points, or 478 with the irises), in pixels or
normalized to [0, 1] (then multiplied by ``width`` and ``height``; z by ``width``, as MediaPipe
does). Without z, head yaw and pitch are estimated from 2D cues (approximate, relative only).

Files are read with ``allow_pickle=False``: pickled ``.npy`` files (as EchoMimic's own demo
folders hold) are refused, because loading a pickle runs code. Convert them on a trusted machine,
e.g. ``np.savez("pose.npz", landmarks=np.stack([d["lmks"] for d in frames]), fps=25)``.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from echomimic.errors import MotionError
from echomimic.types import MOTION_SCHEMA_ID, MotionTrack, Portrait

#: Schema of body-pose sequences (:mod:`echomimic.motion.body_pose`), told apart from these.
BODY_POSE_SCHEMA_ID = "echomimic.pose/1"

__all__ = ["LandmarkSequence", "load_landmark_sequence", "pose_track", "is_pose_file",
           "MAX_POSE_BYTES", "MAX_POSE_FRAMES"]

#: Largest pose file read (bytes).
MAX_POSE_BYTES = 512 * 1024 * 1024
#: Most frames in a pose sequence (an hour at 60 fps).
MAX_POSE_FRAMES = 216_000
#: Size assumed for normalized points when the file does not give one.
DEFAULT_SIZE = 512


@dataclass
class LandmarkSequence:
    """Per-frame face landmarks: ``landmarks`` (n, K, 2 or 3) float64 pixels, NaN rows where no
    face; ``fps``; ``size`` (width, height) of the frames."""

    landmarks: np.ndarray
    fps: float
    size: tuple[int, int]
    source: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.landmarks.shape[0])


def _read(src: Any) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), f"data ({len(src)} bytes)"
    try:
        path = os.fspath(src)
    except TypeError:
        raise MotionError(f"a pose file must be a path or bytes, got {type(src).__name__}") from None
    name = repr(path)
    if not os.path.isfile(path):
        raise MotionError(f"pose file not found: {path}")
    if os.path.getsize(path) > MAX_POSE_BYTES:
        raise MotionError(f"pose file {name} is larger than {MAX_POSE_BYTES // 2**20} MB")
    with open(path, "rb") as fh:
        return fh.read(), name


def _looks_json(data: bytes) -> bool:
    head = data.lstrip()[:1]
    return head in (b"{", b"[")


def is_pose_file(src: Any) -> bool:
    """True when ``src`` (path or bytes) is a landmark sequence rather than an
    ``echomimic.motion/1`` motion file (which :func:`echomimic.motion.load_motion` reads)."""
    try:
        data, _ = _read(src)
    except MotionError:
        return False
    if data[:6] == b"\x93NUMPY" or data[:4] == b"PK\x03\x04":
        return True
    if not _looks_json(data):
        return False
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    if isinstance(doc, dict):
        return doc.get("schema") not in (MOTION_SCHEMA_ID, BODY_POSE_SCHEMA_ID) and any(
            k in doc for k in ("landmarks", "lmks", "frames"))
    return isinstance(doc, list)


def _frame_points(entry: Any, i: int, name: str) -> np.ndarray | None:
    if entry is None:
        return None
    if isinstance(entry, dict):
        for key in ("landmarks", "lmks", "points"):
            if key in entry:
                return _frame_points(entry[key], i, name)
        raise MotionError(f"pose file {name}: frame {i} has no 'landmarks'")
    try:
        pts = np.asarray(entry, dtype=np.float64)
    except (TypeError, ValueError):
        raise MotionError(f"pose file {name}: frame {i} is not a list of numeric points") from None
    if pts.size == 0:
        return None
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise MotionError(f"pose file {name}: frame {i} must be a list of [x, y] or [x, y, z] "
                          f"points, got shape {pts.shape}")
    return pts


def _from_json(data: bytes, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MotionError(f"pose file {name} is not valid JSON ({exc})") from None
    meta: dict[str, Any] = {}
    if isinstance(doc, dict):
        if doc.get("schema") == MOTION_SCHEMA_ID:
            raise MotionError(f"{name} is a motion file, not a landmark sequence: load it with "
                              f"load_motion")
        if doc.get("schema") == BODY_POSE_SCHEMA_ID:
            raise MotionError(f"{name} is a body-pose sequence ({BODY_POSE_SCHEMA_ID}), not a "
                              f"face-landmark sequence: pass it as --pose")
        frames = next((doc[k] for k in ("landmarks", "lmks", "frames") if k in doc), None)
        if frames is None:
            raise MotionError(f"pose file {name} has no 'landmarks' list")
        meta = {k: doc[k] for k in ("fps", "width", "height", "normalized") if k in doc}
    elif isinstance(doc, list):
        frames = doc
    else:
        raise MotionError(f"pose file {name} must hold an object or a list of frames")
    if not isinstance(frames, list):
        raise MotionError(f"pose file {name}: 'landmarks' must be a list of frames")
    if len(frames) > MAX_POSE_FRAMES:
        raise MotionError(f"pose file {name} has more than {MAX_POSE_FRAMES} frames")
    pts = [_frame_points(f, i, name) for i, f in enumerate(frames)]
    shapes = {p.shape for p in pts if p is not None}
    if len(shapes) > 1:
        raise MotionError(f"pose file {name}: frames have different numbers of points "
                          f"({', '.join(str(s[0]) for s in sorted(shapes))})")
    if not shapes:
        shape = (478, 3)
    else:
        shape = shapes.pop()
    arr = np.full((len(pts),) + shape, np.nan)
    for i, p in enumerate(pts):
        if p is not None:
            arr[i] = p
    return arr, meta


def _scalar(z: Any, key: str, name: str) -> float | None:
    if key not in z:
        return None
    a = np.asarray(z[key])
    if a.size != 1 or not np.issubdtype(a.dtype, np.number):
        raise MotionError(f"pose file {name}: {key!r} must be a number")
    return float(a.reshape(()))


def _from_numpy(data: bytes, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise MotionError(f"pose file {name} is a pickle, which is never loaded (it can run "
                              f"code); save the landmarks with numpy.savez instead") from None
        raise MotionError(f"pose file {name} is not a readable NumPy file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MotionError(f"pose file {name} is not a readable NumPy file ({exc})") from None
    meta: dict[str, Any] = {}
    if isinstance(z, np.lib.npyio.NpzFile):
        with z:
            key = next((k for k in ("landmarks", "lmks") if k in z.files), None)
            if key is None and "body" in z.files:
                raise MotionError(f"{name} is a body-pose sequence ({BODY_POSE_SCHEMA_ID}), not "
                                  f"a face-landmark sequence: pass it as --pose")
            if key is None:
                raise MotionError(f"pose file {name} has no 'landmarks' array "
                                  f"(found: {', '.join(z.files) or 'nothing'})")
            try:
                arr = z[key]
                for k in ("fps", "width", "height"):
                    v = _scalar(z, k, name)
                    if v is not None:
                        meta[k] = v
            except ValueError as exc:     # an object array inside the archive
                raise MotionError(f"pose file {name} holds pickled objects, which are never "
                                  f"loaded ({exc})") from None
    else:
        arr = z
    if not np.issubdtype(np.asarray(arr).dtype, np.number):
        raise MotionError(f"pose file {name}: landmarks must be numbers")
    return np.asarray(arr, np.float64), meta


def load_landmark_sequence(src: Any, *, fps: float | None = None) -> LandmarkSequence:
    """Read a landmark sequence (JSON, NPZ or plain NPY; path or bytes).

    Args:
        src: the file.
        fps: frame rate when the file does not give one (default 25).

    Raises:
        MotionError: unreadable or malformed file, a pickle, wrong point count, too many frames.
    """
    data, name = _read(src)
    if not data:
        raise MotionError(f"pose file {name} is empty")
    if data[:6] == b"\x93NUMPY" or data[:4] == b"PK\x03\x04":
        arr, meta = _from_numpy(data, name)
    elif _looks_json(data):
        arr, meta = _from_json(data, name)
    else:
        raise MotionError(f"pose file {name} is neither JSON nor a NumPy .npz/.npy file")
    if arr.ndim != 3 or arr.shape[2] not in (2, 3):
        raise MotionError(f"pose file {name}: landmarks must have shape (frames, points, 2 or 3), "
                          f"got {arr.shape}")
    if arr.shape[1] not in (468, 478):
        raise MotionError(f"pose file {name}: expected MediaPipe face-mesh landmarks (468 or 478 "
                          f"points per frame), got {arr.shape[1]}")
    if arr.shape[0] == 0:
        raise MotionError(f"pose file {name} has no frames")
    if arr.shape[0] > MAX_POSE_FRAMES:
        raise MotionError(f"pose file {name} has more than {MAX_POSE_FRAMES} frames")
    if np.isinf(arr).any():
        raise MotionError(f"pose file {name} has infinite coordinates")
    rate = meta.get("fps", fps if fps is not None else 25.0)
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise MotionError(f"pose file {name}: fps must be a number") from None
    if not math.isfinite(rate) or not 0 < rate <= 240:
        raise MotionError(f"pose file {name}: fps must be in (0, 240], got {rate}")
    w = meta.get("width")
    h = meta.get("height")
    for key, v in (("width", w), ("height", h)):
        if v is not None and (not isinstance(v, (int, float)) or not 0 < float(v) <= 65536):
            raise MotionError(f"pose file {name}: {key} must be a positive number")
    finite = arr[np.isfinite(arr).all(axis=(1, 2))]
    normalized = meta.get("normalized")
    if normalized is None:
        normalized = bool(finite.size) and float(np.abs(finite[..., :2]).max()) <= 1.5
    W = float(w) if w is not None else float(DEFAULT_SIZE)
    H = float(h) if h is not None else (float(w) if w is not None else float(DEFAULT_SIZE))
    if normalized:
        arr = arr.copy()
        arr[..., 0] *= W
        arr[..., 1] *= H
        if arr.shape[2] == 3:
            arr[..., 2] *= W
    elif w is None and finite.size:
        # pixels without a frame size: the points' own extent, with room around them
        W = float(np.nanmax(finite[..., 0])) * 1.2 + 1
        H = float(np.nanmax(finite[..., 1])) * 1.2 + 1
    return LandmarkSequence(landmarks=arr, fps=rate, size=(int(round(W)), int(round(H))),
                            source=name)


def pose_track(src: Any, *, fps: float, n_frames: int | None = None, drive: str = "all",
               motion_scale: float = 1.0, relative: bool = True, loop: str = "pingpong",
               portrait: Portrait | None = None, expression_scale: float = 1.0,
               head_motion_scale: float = 1.0, source_fps: float | None = None) -> MotionTrack:
    """A motion track from a landmark-sequence file, retargeted as a driving video is (see
    :func:`echomimic.motion.video.video_track` for the arguments; ``source_fps`` is the
    sequence's frame rate when the file does not say).

    Raises:
        MotionError: a bad file. NoFaceFound: no usable face in any frame.
    """
    from echomimic.errors import VideoError
    from echomimic.motion.video import landmarks_track

    seq = load_landmark_sequence(src, fps=source_fps)
    try:
        track = landmarks_track(seq.landmarks, source_fps=seq.fps, fps=fps, n_frames=n_frames,
                                size=seq.size, drive=drive, motion_scale=motion_scale,
                                relative=relative, loop=loop, portrait=portrait,
                                expression_scale=expression_scale,
                                head_motion_scale=head_motion_scale, source=seq.source)
    except VideoError as exc:
        raise MotionError(str(exc)) from None
    track.meta["generator"] = "pose"
    return track
