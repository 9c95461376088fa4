"""Hand-pose pictures for EchoMimic V2, drawn exactly as the official code draws them.

EchoMimic V2's pose encoder sees, per frame, a picture of the two 21-point hands (the OpenPose
hand tree) on black; nothing else of the body or face is drawn. The official drawing
(``draw_pose_select_v2`` with ``ref_w=800``) is reproduced here pixel for pixel:

1. a black canvas whose shorter side is 800 px (``sr = 800 / min(H, W)``, 1 when it already is);
2. hands in array order: the 20 edges as 2-px cv2 lines coloured ``hsv(e/20, 1, 1) * score`` with
   ``score = int(s_a * s_b * 255)``, then the 21 points as radius-4 discs ``(0, 0, int(s*255))``;
   a line or point is drawn only when its integer pixel coordinates are all >= 1; cv2 rounds the
   float colours half to even and saturates (scores above 1 saturate);
3. ``cv2.resize`` (bilinear) to (H, W), then the BGR->RGB swap (so points end up red and edge
   colours reversed).

Coordinates are normalised to the picture ([0, 1] across its width and height); scores in [0, 1].
The official code paints points and edges of score 0 in black over earlier strokes;
``skip_unscored=True`` (what the renderer uses) leaves them out instead, which changes nothing
for detected hands (their scores are never 0) and keeps a missing finger from erasing another.
"""

from __future__ import annotations

import cv2
import numpy as np

#: The OpenPose hand tree (wrist 0; thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20).
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
    (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
REF_SIDE = 800
_EPS = 0.01


def _hue(h: float) -> np.ndarray:
    """RGB (float64) of hsv(h, 1, 1), with matplotlib's ``hsv_to_rgb`` arithmetic."""
    s = v = 1.0
    i = int(h * 6.0)
    f = (h * 6.0) - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6])


_EDGE_RGB = [_hue(ie / float(len(HAND_EDGES))) for ie in range(len(HAND_EDGES))]


def _split(hands, scores) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(hands, dtype=np.float64)
    if scores is None:
        if h.shape[-1] != 3:
            raise ValueError("hands without scores must be (..., 21, 3): x, y, score")
        return h[..., :2], h[..., 2]
    return h[..., :2], np.asarray(scores, dtype=np.float64)


def draw_hands_canvas(hands, scores, canvas_hw: tuple[int, int], skip_unscored: bool = False) -> np.ndarray:
    """The official ``draw_handpose`` on a zero canvas of ``canvas_hw`` (channels as drawn, "BGR").

    Args:
        hands: (n, 21, 2) normalised x, y (or (n, 21, 3) with the score last when ``scores`` is None).
        scores: (n, 21) confidences.
        canvas_hw: (rows, cols).
        skip_unscored: leave out edges and points with a score <= 0 or a non-finite coordinate.
    """
    pts, sc = _split(hands, scores)
    H, W = int(canvas_hw[0]), int(canvas_hw[1])
    canvas = np.zeros((H, W, 3), np.uint8)
    for peaks, s in zip(pts.reshape(-1, 21, 2), sc.reshape(-1, 21)):
        ok = np.isfinite(peaks).all(axis=1) & (s > 0) if skip_unscored else np.ones(21, bool)
        if skip_unscored:
            peaks = np.where(np.isfinite(peaks), peaks, -1.0)
        for ie, (a, b) in enumerate(HAND_EDGES):
            if not (ok[a] and ok[b]):
                continue
            x1, y1 = int(peaks[a, 0] * W), int(peaks[a, 1] * H)
            x2, y2 = int(peaks[b, 0] * W), int(peaks[b, 1] * H)
            score = int(s[a] * s[b] * 255)
            if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
                color = _EDGE_RGB[ie] * score
                cv2.line(canvas, (x1, y1), (x2, y2), tuple(float(c) for c in color), thickness=2)
        for i in range(21):
            if not ok[i]:
                continue
            x, y = int(peaks[i, 0] * W), int(peaks[i, 1] * H)
            if x > _EPS and y > _EPS:
                cv2.circle(canvas, (x, y), 4, (0, 0, int(s[i] * 255)), thickness=-1)
    return canvas


def canvas_size(height: int, width: int, ref_w: int = REF_SIDE) -> tuple[int, int]:
    """(rows, cols) of the drawing canvas for an (height, width) picture."""
    sr = 1 if min(height, width) == ref_w else ref_w / min(height, width)
    return int(height * sr), int(width * sr)


def draw_hands(hands, scores, height: int, width: int, skip_unscored: bool = False,
               ref_w: int = REF_SIDE) -> np.ndarray:
    """(height, width, 3) RGB uint8 hand picture, as ``draw_pose_select_v2`` returns it (HWC)."""
    canvas = draw_hands_canvas(hands, scores, canvas_size(height, width, ref_w), skip_unscored)
    canvas = cv2.resize(canvas, (int(width), int(height)))
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def pose_picture(hands, scores, height: int, width: int, params=None,
                 skip_unscored: bool = False) -> np.ndarray:
    """The pose-encoder input picture (height, width, 3) uint8.

    ``params`` = (imh, imw, rb, re, cb, ce) places an (imh, imw) drawing at rows rb:re, columns
    cb:ce of a black picture, as the official demos do with their preprocessed
    ``draw_pose_params``; None draws over the whole picture (the coordinates are then normalised
    to it), which is what the renderer does at any size and aspect ratio."""
    if params is None:
        return draw_hands(hands, scores, height, width, skip_unscored)
    imh, imw, rb, re, cb, ce = (int(v) for v in params)
    out = np.zeros((int(height), int(width), 3), np.uint8)
    out[rb:re, cb:ce] = draw_hands(hands, scores, imh, imw, skip_unscored)
    return out


def pictures_to_tensor(images: np.ndarray):
    """(F, H, W, 3) uint8 pictures -> (1, 3, F, H, W) float32 in [0, 1] (true division by 255)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32) / 255.0
    return x.permute(3, 0, 1, 2)[None]


def read_hands(path) -> tuple[np.ndarray, float | None]:
    """Hands of an ``echomimic.pose/1`` file: ``((F, 2, 21, 3) float64 x, y, score, fps or None)``.

    Uses :func:`echomimic.motion.body_pose.load_pose_sequence` when that module is installed
    (it validates the whole format); otherwise reads the hands from safe formats only: JSON with
    ``"frames": [{"hands": [2][21][3], ...}, ...]`` (or a flat ``"hands": [F][2][21][3]``) and an
    optional ``fps``, or an NPZ with an array ``hands`` (F, 2, 21, 3) and an optional scalar ``fps``
    (``allow_pickle=False``). Coordinates are fractions of the photo's width and height, score 0
    for a missing point; the body and face points are not used by V2."""
    import json
    import zipfile
    from pathlib import Path

    from ...errors import MotionError

    try:
        from ...motion.body_pose import load_pose_sequence
    except ImportError:
        load_pose_sequence = None
    if load_pose_sequence is not None:
        seq = load_pose_sequence(path)
        return np.asarray(seq.hands, dtype=np.float64), float(seq.fps) if seq.fps else None
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise MotionError(f"cannot read pose file {str(p)!r}: {exc.strerror or exc}") from None
    fps = None
    try:
        if raw[:2] == b"PK":
            import io

            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                if "hands" not in z:
                    raise MotionError(f"pose file {str(p)!r} has no 'hands' array")
                hands = np.asarray(z["hands"], dtype=np.float64)
                if "fps" in z:
                    fps = float(z["fps"])
        else:
            doc = json.loads(raw.decode("utf-8"))
            if isinstance(doc, dict) and isinstance(doc.get("frames"), list):
                hands = np.asarray([f["hands"] for f in doc["frames"]], dtype=np.float64)
            elif isinstance(doc, dict) and "hands" in doc:
                hands = np.asarray(doc["hands"], dtype=np.float64)
            else:
                raise MotionError(f"pose file {str(p)!r} is not an echomimic.pose/1 document with hands")
            fps = float(doc["fps"]) if doc.get("fps") else None
    except MotionError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
        raise MotionError(f"cannot read pose file {str(p)!r}: {type(exc).__name__}: {exc}") from None
    if hands.ndim != 4 or hands.shape[1:] != (2, 21, 3) or hands.shape[0] == 0:
        raise MotionError(f"pose file {str(p)!r}: hands must be (frames, 2, 21, 3), got {hands.shape}")
    if not np.isfinite(hands).all():
        raise MotionError(f"pose file {str(p)!r}: hands hold non-finite numbers")
    if fps is not None and not (0 < fps <= 240):
        raise MotionError(f"pose file {str(p)!r}: fps must be in (0, 240], got {fps}")
    return hands, fps
