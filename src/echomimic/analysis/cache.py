"""Content-addressed cache of portrait analyses.

A second job on the same photo skips detection, mesh and segmentation. Entries are ``.npz``
files (never pickles) named by the sha256 of the photo's bytes, the face index and the analysis
version, in ``$ECHOMIMIC_CACHE_DIR`` (default ``~/.cache/echomimic``)/analysis. Writes are atomic
(temp file + rename), so several workers can share one directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .face import ANALYSIS_VERSION, FaceAnalysis


def cache_dir() -> Path:
    root = os.environ.get("ECHOMIMIC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "echomimic")
    return Path(root) / "analysis"


def _path(content_hash: str, face_index: int) -> Path:
    return cache_dir() / f"{content_hash}-f{face_index}-v{ANALYSIS_VERSION}.npz"


def load(content_hash: str, face_index: int) -> FaceAnalysis | None:
    """The cached analysis, or None (missing or unreadable entries are ignored)."""
    if not content_hash or os.environ.get("ECHOMIMIC_CACHE", "1") == "0":
        return None
    p = _path(content_hash, face_index)
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return FaceAnalysis(
                width=int(meta["width"]), height=int(meta["height"]),
                landmarks=z["landmarks"].astype(np.float32),
                face_box=tuple(meta["face_box"]), face_boxes=[tuple(b) for b in meta["face_boxes"]],
                face_index=int(meta["face_index"]), person_mask=z["mask"].astype(np.uint8),
                content_hash=content_hash, meta={"cached": True})
    except (OSError, KeyError, ValueError):
        return None


def store(fa: FaceAnalysis) -> None:
    if not fa.content_hash or os.environ.get("ECHOMIMIC_CACHE", "1") == "0":
        return
    p = _path(fa.content_hash, fa.face_index)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"width": fa.width, "height": fa.height, "face_box": list(fa.face_box),
                           "face_boxes": [list(b) for b in fa.face_boxes],
                           "face_index": fa.face_index})
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, landmarks=fa.landmarks, mask=fa.person_mask, meta=np.array(meta))
        os.replace(tmp, p)
    except OSError:
        pass  # a cache that cannot be written is only slower


def analyze_cached(rgb: np.ndarray, *, content_hash: str, face_index: int = 0) -> FaceAnalysis:
    """:func:`~echomimic.analysis.face.analyze_face` with the content-hash cache in front."""
    from .face import analyze_face

    hit = load(content_hash, face_index)
    if hit is not None and (hit.width, hit.height) == (rgb.shape[1], rgb.shape[0]):
        return hit
    fa = analyze_face(rgb, face_index=face_index, content_hash=content_hash)
    store(fa)
    return fa
