"""Face identity distance with dlib's face recognition network (128-d descriptors).

Uses dlib (the ``dlib-bin`` wheel) with the model files of ``face-recognition-models``: the
5-point shape predictor aligns the face, the ResNet turns it into a 128-d descriptor, and two
faces belong to the same person when their Euclidean distance is below about 0.6
(:data:`SAME_PERSON`). Install with ``pip install "echomimic[quality]"``.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np

from ..errors import ImageError

__all__ = ["IdentityModel", "SAME_PERSON"]

#: dlib's distance threshold under which two descriptors are the same person.
SAME_PERSON = 0.6

_EXTRA_HINT = 'install the quality extra: pip install "echomimic[quality]"'


def _load_dlib():
    """Import dlib and the model files, or raise ImportError naming the extra."""
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"identity metrics need dlib ({_EXTRA_HINT})") from exc
    try:
        with warnings.catch_warnings():
            # face_recognition_models imports pkg_resources, which warns on import.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            import face_recognition_models as frm
    except ImportError as exc:
        raise ImportError(
            f"identity metrics need face-recognition-models and setuptools<82 ({_EXTRA_HINT})"
        ) from exc
    return dlib, frm


def _as_rgb(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
        raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a[:, :, :3])


class IdentityModel:
    """128-d face descriptors and distances between the largest faces of images.

    Args:
        num_jitters: dlib's re-sampling count per descriptor (1 = fastest; more is steadier).
        detect_side: images whose longer side exceeds this are searched for faces on a
            downscaled copy (the face box is mapped back; the descriptor uses full resolution).
    """

    #: Detections scoring under this share of the best detection's score are ignored.
    MIN_RELATIVE_SCORE = 0.5

    def __init__(self, *, num_jitters: int = 1, detect_side: int = 800):
        dlib, frm = _load_dlib()
        self._dlib = dlib
        self.num_jitters = int(num_jitters)
        self.detect_side = int(detect_side)
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def face_box(self, img: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the largest face in full-image pixels, or ``None``."""
        rgb = _as_rgb(img)
        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        if max(h, w) > self.detect_side:
            import cv2

            scale = self.detect_side / float(max(h, w))
            small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(small, 0, 0.0)
        if len(rects) == 0:
            rects, scores, _ = self._detector.run(small, 1, 0.0)   # small faces: upsample once
        if len(rects) == 0:
            return None
        # The largest face among the confident detections (weak ones are often not faces).
        floor = self.MIN_RELATIVE_SCORE * max(scores)
        cands = [r for r, sc in zip(rects, scores) if sc >= floor] or list(rects)
        r = max(cands, key=lambda r: r.width() * r.height())
        return (int(round(r.left() / scale)), int(round(r.top() / scale)),
                int(round(r.right() / scale)), int(round(r.bottom() / scale)))

    def descriptor(self, img: np.ndarray) -> np.ndarray | None:
        """128-d float64 descriptor of the largest face in ``img`` (RGB uint8), or ``None``."""
        rgb = _as_rgb(img)
        box = self.face_box(rgb)
        if box is None:
            return None
        rect = self._dlib.rectangle(*box)
        shape = self._shape(rgb, rect)
        desc = self._encoder.compute_face_descriptor(rgb, shape, self.num_jitters)
        return np.asarray(desc, dtype=np.float64)

    def distance(self, a_img: np.ndarray, b_img: np.ndarray) -> float:
        """Euclidean descriptor distance of the largest faces (NaN if either has none)."""
        a = self.descriptor(a_img)
        b = self.descriptor(b_img)
        if a is None or b is None:
            return float("nan")
        return float(np.linalg.norm(a - b))

    def distances(self, photo: np.ndarray, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Distance of each frame's face to the photo's (NaN where a face is missing)."""
        ref = self.descriptor(photo)
        out = []
        for f in frames:
            d = None if ref is None else self.descriptor(f)
            out.append(float("nan") if d is None else float(np.linalg.norm(d - ref)))
        return np.asarray(out, dtype=np.float64)
