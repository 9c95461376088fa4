"""Portrait analysis: face detection, 478-point face mesh on a crop, person segmentation.

Everything runs on MediaPipe 0.10.21's bundled models (no downloads):

1. Detect faces with the full-range face detector on a downscaled copy; when nothing is found
   (a small face in a big photo), again on overlapping tiles at a higher resolution.
2. Pick the face (largest first; ``face_index`` counts down the sizes).
3. Run the face mesh (refined, 478 points) on a square crop around that face, resized to a size
   the mesh model likes, and map the points back to the photo's pixels.
4. Segment the person (selfie segmentation) on a crop around the head and shoulders.

The result, :class:`FaceAnalysis`, is in the photo's own pixel coordinates and is cached by the
photo's content hash (see :mod:`echomimic.analysis.cache`). :func:`prepare_portrait` turns it into
the :class:`~echomimic.types.Portrait` of the frame that will be rendered (after crop/downscale).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InvalidOption, NoFaceFound
from ..types import Portrait

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ANALYSIS_VERSION = 2

_MESH_INPUT = 512          # side of the crop the mesh runs on
_lock = threading.Lock()   # the MediaPipe graphs are not re-entrant
_models: dict[str, object] = {}


def _mp():
    import mediapipe as mp  # heavy import, done once on first use

    return mp


def _model(name: str):
    if name not in _models:
        mp = _mp()
        if name == "detector":
            _models[name] = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=0.5)
        elif name == "mesh":
            _models[name] = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=True, max_num_faces=1,
                min_detection_confidence=0.3)
        elif name == "segmenter":
            _models[name] = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        else:  # pragma: no cover
            raise KeyError(name)
    return _models[name]


def load_models() -> None:
    """Make the face models (detector, mesh, segmenter) now, under the analysis lock, so that the
    first analysis does not pay for it (a server or the web UI calls this while idle)."""
    with _lock:
        for name in ("detector", "mesh", "segmenter"):
            _model(name)


@dataclass
class FaceAnalysis:
    """Analysis of one photo, in that photo's pixel coordinates."""

    width: int
    height: int
    landmarks: np.ndarray                 # (478, 3) float32
    face_box: tuple[int, int, int, int]
    face_boxes: list[tuple[int, int, int, int]]
    face_index: int
    person_mask: np.ndarray               # (H, W) uint8 0..255
    content_hash: str = ""
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# detection
# ----------------------------------------------------------------------------------------------


def _detect_once(rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
    h, w = rgb.shape[:2]
    res = _model("detector").process(np.ascontiguousarray(rgb))
    out = []
    for d in res.detections or []:
        bb = d.location_data.relative_bounding_box
        x0, y0 = bb.xmin * w, bb.ymin * h
        out.append((x0, y0, x0 + bb.width * w, y0 + bb.height * h, float(d.score[0])))
    return out


def _nms(boxes: list[tuple[float, ...]], iou: float = 0.3) -> list[tuple[float, ...]]:
    boxes = sorted(boxes, key=lambda b: -b[4])
    keep: list[tuple[float, ...]] = []
    for b in boxes:
        ok = True
        for k in keep:
            ix = max(0.0, min(b[2], k[2]) - max(b[0], k[0]))
            iy = max(0.0, min(b[3], k[3]) - max(b[1], k[1]))
            inter = ix * iy
            union = (b[2] - b[0]) * (b[3] - b[1]) + (k[2] - k[0]) * (k[3] - k[1]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            keep.append(b)
    return keep


def detect_faces(rgb: np.ndarray, *, want: int = 1) -> list[tuple[int, int, int, int]]:
    """Face boxes (x0, y0, x1, y1) in pixels, largest first.

    The whole image is searched at a moderate size; when fewer than ``want`` faces turn up (small
    faces in a big photo), it is searched again in overlapping tiles at a higher resolution.
    """
    h, w = rgb.shape[:2]
    found: list[tuple[float, ...]] = []
    # whole image at a moderate size
    s = min(1.0, 1024.0 / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    for b in _detect_once(small):
        found.append((b[0] / s, b[1] / s, b[2] / s, b[3] / s, b[4]))
    if len(_nms(found)) < want and max(h, w) > 448:
        # tiles: small faces in big photos (the detector sees each tile at 192x192)
        s2 = min(1.0, 3072.0 / max(h, w))
        big = cv2.resize(rgb, (round(w * s2), round(h * s2)), interpolation=cv2.INTER_AREA) if s2 < 1 else rgb
        bh, bw = big.shape[:2]
        tile, step = 448, 320
        for y in range(0, max(1, bh - tile + step), step):
            for x in range(0, max(1, bw - tile + step), step):
                crop = big[y:y + tile, x:x + tile]
                for b in _detect_once(crop):
                    found.append(((b[0] + x) / s2, (b[1] + y) / s2, (b[2] + x) / s2, (b[3] + y) / s2, b[4]))
    found = _nms(found)
    boxes = []
    for b in found:
        x0, y0, x1, y1 = max(0, b[0]), max(0, b[1]), min(w, b[2]), min(h, b[3])
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            boxes.append((int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))))
    boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    return boxes


# ----------------------------------------------------------------------------------------------
# mesh
# ----------------------------------------------------------------------------------------------


def _square_crop(box, scale: float, w: int, h: int) -> tuple[int, int, int]:
    """Top-left corner and side of a square of ``scale`` times the box size around its centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * scale
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return x0, y0, int(round(side))


def _crop_padded(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    return rgb[y0:y0 + side, x0:x0 + side]


def _mesh_on_crop(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray | None:
    crop = _crop_padded(rgb, x0, y0, side)
    inp = cv2.resize(crop, (_MESH_INPUT, _MESH_INPUT),
                     interpolation=cv2.INTER_AREA if side > _MESH_INPUT else cv2.INTER_CUBIC)
    res = _model("mesh").process(np.ascontiguousarray(inp))
    if not res.multi_face_landmarks:
        return None
    lm = res.multi_face_landmarks[0].landmark
    pts = np.array([(p.x, p.y, p.z) for p in lm], np.float64) * side
    pts[:, 0] += x0
    pts[:, 1] += y0
    return pts.astype(np.float32)


def face_mesh(rgb: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray | None:
    """478 refined landmarks (pixels) for the face in ``box`` (or the whole image when None)."""
    h, w = rgb.shape[:2]
    if box is None:
        side = max(h, w)
        return _mesh_on_crop(rgb, (w - side) // 2, (h - side) // 2, side)
    for scale in (1.9, 2.4, 1.5, 3.0):
        x0, y0, side = _square_crop(box, scale, w, h)
        pts = _mesh_on_crop(rgb, x0, y0, side)
        if pts is None:
            continue
        # a second pass centred on the mesh itself tightens the crop and steadies the points
        mx0, my0 = pts[:, 0].min(), pts[:, 1].min()
        mx1, my1 = pts[:, 0].max(), pts[:, 1].max()
        x0, y0, side = _square_crop((mx0, my0, mx1, my1), 1.6, w, h)
        pts2 = _mesh_on_crop(rgb, x0, y0, side)
        return pts2 if pts2 is not None else pts
    return None


# ----------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------

# face-oval indices of the mesh, in order around the face
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]


def person_mask(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Person mask (uint8 0..255, photo size) from selfie segmentation on a head-and-shoulders crop,
    united with the face oval so that stylized faces the segmenter misses are still covered."""
    h, w = rgb.shape[:2]
    fx0, fy0 = landmarks[:, 0].min(), landmarks[:, 1].min()
    fx1, fy1 = landmarks[:, 0].max(), landmarks[:, 1].max()
    fs = max(fx1 - fx0, fy1 - fy0)
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2 + 0.6 * fs
    side = int(round(fs * 4.2))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    crop = rgb[cy0:cy1, cx0:cx1]
    s = min(1.0, 512.0 / max(crop.shape[:2]))
    small = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                       interpolation=cv2.INTER_AREA) if s < 1 else crop
    res = _model("segmenter").process(np.ascontiguousarray(small))
    m = res.segmentation_mask
    if m is None:
        m = np.zeros(small.shape[:2], np.float32)
    m = cv2.resize(m.astype(np.float32), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((h, w), np.uint8)
    mask[cy0:cy1, cx0:cx1] = np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # the face oval (slightly enlarged towards the forehead) always belongs to the person
    oval = landmarks[FACE_OVAL, :2].astype(np.float64)
    c = oval.mean(axis=0)
    oval = c + (oval - c) * 1.08
    cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 255)
    return mask


# ----------------------------------------------------------------------------------------------
# top level
# ----------------------------------------------------------------------------------------------


def analyze_face(rgb: np.ndarray, *, face_index: int = 0, content_hash: str = "") -> FaceAnalysis:
    """Detect, mesh and segment. Raises :class:`NoFaceFound` when no face can be meshed."""
    h, w = rgb.shape[:2]
    with _lock:
        boxes = detect_faces(rgb, want=face_index + 1)
        if face_index < 0:
            raise InvalidOption(f"face_index must be >= 0, got {face_index}")
        if boxes and face_index >= len(boxes):
            raise InvalidOption(
                f"face_index {face_index} is out of range: {len(boxes)} face(s) found "
                f"(0 is the largest)")
        pts = face_mesh(rgb, boxes[face_index] if boxes else None)
        if pts is None and not boxes:
            # no detection: the mesh's own detector sometimes still finds a stylized face
            pts = face_mesh(rgb, None)
        if pts is None:
            raise NoFaceFound("no face found in the image (a clear, front-facing face of at least "
                              "about 80 pixels is needed)")
        if face_index and not boxes:
            raise InvalidOption(f"face_index {face_index} is out of range: 1 face found")
        if not boxes:
            x0, y0 = pts[:, 0].min(), pts[:, 1].min()
            x1, y1 = pts[:, 0].max(), pts[:, 1].max()
            boxes = [(int(x0), int(y0), int(x1), int(y1))]
        mask = person_mask(rgb, pts)
    eye = float(np.linalg.norm(pts[33, :2] - pts[263, :2]))
    if eye < 12:
        raise NoFaceFound(f"the face is too small ({eye:.0f} px between the eyes; at least 12 needed)")
    return FaceAnalysis(width=w, height=h, landmarks=pts, face_box=boxes[face_index],
                        face_boxes=boxes, face_index=face_index, person_mask=mask,
                        content_hash=content_hash)


# ----------------------------------------------------------------------------------------------
# frame geometry
# ----------------------------------------------------------------------------------------------


def frame_transform(fa: FaceAnalysis, *, crop: str = "none", size: int = 512,
                    max_side: int = 1920) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2x3 affine (photo -> output frame) and the output (width, height)."""
    if crop == "face":
        if size < 64 or size > 4096:
            raise InvalidOption(f"size must be between 64 and 4096, got {size}")
        lm = fa.landmarks
        x0, y0 = lm[:, 0].min(), lm[:, 1].min()
        x1, y1 = lm[:, 0].max(), lm[:, 1].max()
        side = max(x1 - x0, y1 - y0) * 2.0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.05 * side
        side = min(side, fa.width, fa.height) if side > min(fa.width, fa.height) else side
        ox = float(np.clip(cx - side / 2, 0, max(0, fa.width - side)))
        oy = float(np.clip(cy - side / 2, 0, max(0, fa.height - side)))
        s = size / side
        m = np.array([[s, 0, -ox * s], [0, s, -oy * s]], np.float64)
        return m, (size, size)
    if crop != "none":
        raise InvalidOption(f"crop must be 'none' or 'face', got {crop!r}")
    if max_side < 0:
        raise InvalidOption("max_side must be >= 0")
    s = 1.0
    if max_side and max(fa.width, fa.height) > max_side:
        s = max_side / max(fa.width, fa.height)
    w, h = max(2, round(fa.width * s)), max(2, round(fa.height * s))
    w -= w % 2
    h -= h % 2  # H.264 4:2:0 wants even sides
    m = np.array([[w / fa.width, 0, 0], [0, h / fa.height, 0]], np.float64)
    return m, (w, h)


def prepare_portrait(rgb: np.ndarray, fa: FaceAnalysis, *, crop: str = "none", size: int = 512,
                     max_side: int = 1920) -> Portrait:
    """The :class:`Portrait` of the output frame: the photo cropped/resized, points mapped."""
    m, (w, h) = frame_transform(fa, crop=crop, size=size, max_side=max_side)
    sx = float(np.hypot(m[0, 0], m[1, 0]))
    if np.allclose(m, [[1, 0, 0], [0, 1, 0]]) and (w, h) == (fa.width, fa.height):
        img = rgb
        mask = fa.person_mask
    else:
        interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_CUBIC
        img = cv2.warpAffine(rgb, m, (w, h), flags=interp, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpAffine(fa.person_mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    lm = fa.landmarks.astype(np.float64).copy()
    xy = lm[:, :2] @ m[:, :2].T + m[:, 2]
    lm[:, :2] = xy
    lm[:, 2] *= sx
    boxes = []
    for b in fa.face_boxes:
        p = np.array([[b[0], b[1]], [b[2], b[3]]], np.float64) @ m[:, :2].T + m[:, 2]
        boxes.append((int(p[0, 0]), int(p[0, 1]), int(p[1, 0]), int(p[1, 1])))
    return Portrait(image=np.ascontiguousarray(img), landmarks=lm.astype(np.float32),
                    face_box=boxes[fa.face_index] if boxes else (0, 0, w, h),
                    person_mask=mask.astype(np.float32) / 255.0, face_boxes=boxes,
                    face_index=fa.face_index, content_hash=fa.content_hash)
