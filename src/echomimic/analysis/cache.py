"""Content-addressed cache of portrait analyses.

A second job on the same photo skips detection, mesh and segmentation. Entries are ``.npz``
archives (never pickles) named by the sha256 of the photo's bytes, the face index and the analysis
version. Two backends:

* on disk (the default): files in ``$ECHOMIMIC_CACHE_DIR`` (default ``~/.cache/echomimic``)
  /analysis; writes are atomic (temp file + rename), so several workers can share one folder;
* Redis, when ``ECHOMIMIC_CACHE_URL=redis://host:6379/0`` (or ``rediss://``, ``unix://``) is set,
  shared by workers on several machines; entries expire after ``ECHOMIMIC_CACHE_TTL`` seconds
  (default 30 days). A Redis server that cannot be reached only makes the cache miss.

``ECHOMIMIC_CACHE=0`` turns the cache off. :func:`stats` counts hits and misses in this process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .face import ANALYSIS_VERSION, FaceAnalysis

log = logging.getLogger("echomimic.analysis.cache")

_STATS = {"hits": 0, "misses": 0, "body_hits": 0, "body_misses": 0}
_STATS_LOCK = threading.Lock()
_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()
_REDIS_DOWN_UNTIL = {"t": 0.0}
DEFAULT_TTL = 30 * 24 * 3600


def stats() -> dict[str, int]:
    """Hits and misses of :func:`analyze_cached` (``hits``, ``misses``) and of
    :func:`body_cached` (``body_hits``, ``body_misses``) in this process."""
    with _STATS_LOCK:
        return dict(_STATS)


def _count(key: str) -> None:
    with _STATS_LOCK:
        _STATS[key] += 1


def _enabled() -> bool:
    return os.environ.get("ECHOMIMIC_CACHE", "1") != "0"


def cache_url() -> str:
    """The Redis URL of the cache (``ECHOMIMIC_CACHE_URL``), or ``""`` for the disk cache."""
    return os.environ.get("ECHOMIMIC_CACHE_URL", "").strip()


def _redis():
    """The Redis client for ``ECHOMIMIC_CACHE_URL`` (one per URL), or None when unset, not
    installed, or failing lately (it is tried again after 30 s)."""
    url = cache_url()
    if not url or time.monotonic() < _REDIS_DOWN_UNTIL["t"]:
        return None
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(url)
        if client is None:
            try:
                import redis
            except ImportError:
                log.warning("ECHOMIMIC_CACHE_URL is set but redis-py is not installed; "
                            "using the disk cache")
                return None
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            _CLIENTS[url] = client
        return client


def _redis_failed(exc: Exception) -> None:
    log.warning("analysis cache: Redis unavailable (%s); continuing without it", exc)
    _REDIS_DOWN_UNTIL["t"] = time.monotonic() + 30.0


def _key(content_hash: str, face_index: int) -> str:
    return f"{content_hash}-f{face_index}-v{ANALYSIS_VERSION}"


def redis_key(content_hash: str, face_index: int) -> str:
    """The Redis key of an entry."""
    return f"echomimic:analysis:{_key(content_hash, face_index)}"


def cache_dir() -> Path:
    root = os.environ.get("ECHOMIMIC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "echomimic")
    return Path(root) / "analysis"


def _path(content_hash: str, face_index: int) -> Path:
    return cache_dir() / f"{_key(content_hash, face_index)}.npz"


def _encode(fa: FaceAnalysis) -> bytes:
    meta = json.dumps({"width": fa.width, "height": fa.height, "face_box": list(fa.face_box),
                       "face_boxes": [list(b) for b in fa.face_boxes],
                       "face_index": fa.face_index})
    buf = io.BytesIO()
    np.savez_compressed(buf, landmarks=fa.landmarks, mask=fa.person_mask, meta=np.array(meta))
    return buf.getvalue()


def _decode(source, content_hash: str) -> FaceAnalysis | None:
    try:
        with np.load(source, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return FaceAnalysis(
                width=int(meta["width"]), height=int(meta["height"]),
                landmarks=z["landmarks"].astype(np.float32),
                face_box=tuple(meta["face_box"]), face_boxes=[tuple(b) for b in meta["face_boxes"]],
                face_index=int(meta["face_index"]), person_mask=z["mask"].astype(np.uint8),
                content_hash=content_hash, meta={"cached": True})
    except (OSError, KeyError, ValueError, EOFError):
        return None


def load(content_hash: str, face_index: int) -> FaceAnalysis | None:
    """The cached analysis, or None (missing or unreadable entries are ignored)."""
    if not content_hash or not _enabled():
        return None
    if cache_url():
        client = _redis()
        if client is None:
            return None
        try:
            blob = client.get(redis_key(content_hash, face_index))
        except Exception as exc:  # connection refused, timeout: a miss
            _redis_failed(exc)
            return None
        return _decode(io.BytesIO(blob), content_hash) if blob else None
    return _decode(_path(content_hash, face_index), content_hash)


def store(fa: FaceAnalysis) -> None:
    """Keep an analysis (a cache that cannot be written is only slower)."""
    if not fa.content_hash or not _enabled():
        return
    if cache_url():
        client = _redis()
        if client is None:
            return
        try:
            ttl = int(os.environ.get("ECHOMIMIC_CACHE_TTL", "") or DEFAULT_TTL)
        except ValueError:
            ttl = DEFAULT_TTL
        try:
            client.set(redis_key(fa.content_hash, fa.face_index), _encode(fa), ex=max(1, ttl))
        except Exception as exc:  # connection refused, timeout
            _redis_failed(exc)
        return
    p = _path(fa.content_hash, fa.face_index)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(_encode(fa))
        os.replace(tmp, p)
    except OSError:
        pass  # a cache that cannot be written is only slower


def analyze_cached(rgb: np.ndarray, *, content_hash: str, face_index: int = 0) -> FaceAnalysis:
    """:func:`~echomimic.analysis.face.analyze_face` with the content-hash cache in front."""
    from .face import analyze_face

    hit = load(content_hash, face_index)
    if hit is not None and (hit.width, hit.height) == (rgb.shape[1], rgb.shape[0]):
        _count("hits")
        return hit
    _count("misses")
    fa = analyze_face(rgb, face_index=face_index, content_hash=content_hash)
    store(fa)
    return fa


# --------------------------------------------------------------------------------------------
# body skeletons (DWPose layout), cached beside the face analyses
# --------------------------------------------------------------------------------------------

BODY_CACHE_VERSION = 1


def body_cached(rgb: np.ndarray):
    """:func:`~echomimic.analysis.body.detect_body` of an image, cached on disk by the sha256 of
    its pixels (the photo as it is rendered: after any crop or resize). Returns a
    :class:`~echomimic.analysis.body.BodyPose`."""
    import hashlib

    from .body import BodyPose, detect_body

    img = np.ascontiguousarray(rgb)
    h = hashlib.sha256(img.tobytes() + repr(img.shape).encode()).hexdigest()
    p = cache_dir() / f"{h}-body-v{BODY_CACHE_VERSION}.npz"
    if _enabled():
        try:
            with np.load(p, allow_pickle=False) as z:
                pose = BodyPose(z["body"], z["hands"], z["face"], int(z["width"]), int(z["height"]),
                                meta={"cached": True})
                _count("body_hits")
                return pose
        except (OSError, KeyError, ValueError, EOFError):
            pass
    _count("body_misses")
    pose = detect_body(img)
    if _enabled():
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, body=pose.body, hands=pose.hands, face=pose.face,
                                    width=np.int64(pose.width), height=np.int64(pose.height))
            os.replace(tmp, p)
        except OSError:
            pass
    return pose
