"""Mouth-crop figures: how much a generated mouth looks like the real one, frame by frame.

Used with a real reference video of the same motion (self-reenactment: the first frame of a
real clip is the portrait, the clip drives it). Only frames where the **real** mouth is open
count: the real inner-lip gap (landmarks 13-14) exceeds :data:`OPEN_GAP` of the outer eye-corner
distance (33-263).

* ``mouth_ssim``: mean SSIM (scikit-image, ``data_range=255``) between square grey crops of the
  generated and the real frame. The crop is placed on the **real** mouth: centre = midpoint of
  the mouth corners (61, 291), side = :data:`CROP_SCALE` x the corner distance, resized to
  :data:`CROP_SIZE` x :data:`CROP_SIZE`. Geometry counts as much as texture: a mouth drawn in
  the wrong place scores low.
* ``mouth_ssim_still``: the same crops of the real video's first frame, the "nothing moves"
  baseline. An animated mouth should beat it.
* ``mouth_dark_share`` / ``mouth_dark_share_reference``: share of pixels with grey level below
  :data:`DARK_LEVEL` inside the inner-lip polygon (each video's own landmarks), pooled over the
  open frames. A real mouth is rarely black; a painted hole is.

Everything here works on in-memory frames and landmarks (so a benchmark can measure frames before
encoding); :func:`echomimic.quality.evaluate_video` applies it to files with ``reference=``.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

__all__ = [
    "OPEN_GAP", "CROP_SCALE", "CROP_SIZE", "DARK_LEVEL", "INNER_LIP_POLYGON",
    "grey", "mouth_box", "mouth_crop", "mouth_open", "inner_lip_dark", "crop_ssim",
    "mouth_figures",
]

#: A real frame counts when its inner-lip gap (13-14) exceeds this share of the eye distance.
OPEN_GAP = 0.06
#: Side of the crop, in mouth-corner distances (61-291).
CROP_SCALE = 1.6
#: The crop is resized to this many pixels a side.
CROP_SIZE = 96
#: Grey level under which a pixel inside the lips counts as dark.
DARK_LEVEL = 30
#: The inner-lip contour of the face mesh, as one closed polygon (upper lip left to right, then
#: lower lip right to left).
INNER_LIP_POLYGON = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
                     324, 318, 402, 317, 14, 87, 178, 88, 95)


def grey(frame: np.ndarray) -> np.ndarray:
    """Grey levels (uint8) of an RGB uint8 frame (ITU-R 601 weights, as OpenCV)."""
    f = np.asarray(frame)
    if f.ndim == 2:
        return f.astype(np.uint8, copy=False)
    return cv2.cvtColor(np.ascontiguousarray(f[..., :3]), cv2.COLOR_RGB2GRAY)


def mouth_box(landmarks: np.ndarray) -> tuple[float, float, float] | None:
    """``(cx, cy, side)`` of the mouth crop from one frame's landmarks (pixels); None when the
    landmarks are missing."""
    lm = np.asarray(landmarks, np.float64)
    a, b = lm[61, :2], lm[291, :2]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    side = CROP_SCALE * float(np.linalg.norm(b - a))
    if side < 2:
        return None
    c = 0.5 * (a + b)
    return float(c[0]), float(c[1]), side


def mouth_crop(frame: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
    """The ``CROP_SIZE`` square grey crop of ``frame`` around ``box`` (edges replicated where the
    box leaves the frame)."""
    g = grey(frame)
    cx, cy, side = box
    n = max(2, int(round(side)))
    x0 = int(round(cx - n / 2))
    y0 = int(round(cy - n / 2))
    h, w = g.shape
    pad = max(0, -x0, -y0, x0 + n - w, y0 + n - h)
    if pad:
        g = cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = g[y0:y0 + n, x0:x0 + n]
    interp = cv2.INTER_AREA if n >= CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=interp)


def mouth_open(landmarks: np.ndarray) -> np.ndarray:
    """(n,) bool: frames whose inner-lip gap (13-14) exceeds ``OPEN_GAP`` of the eye distance
    (False where no face)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.linalg.norm(lm[:, 13, :2] - lm[:, 14, :2], axis=1)
        eye = np.linalg.norm(lm[:, 33, :2] - lm[:, 263, :2], axis=1)
        r = gap / eye
    return np.isfinite(r) & (r > OPEN_GAP)


def inner_lip_dark(frame: np.ndarray, landmarks: np.ndarray) -> tuple[int, int]:
    """``(dark, inside)``: pixels with grey < ``DARK_LEVEL`` inside the inner-lip polygon, and
    all pixels inside it."""
    lm = np.asarray(landmarks, np.float64)
    poly = lm[list(INNER_LIP_POLYGON), :2]
    if not np.isfinite(poly).all():
        return 0, 0
    g = grey(frame)
    h, w = g.shape
    x0 = max(0, int(np.floor(poly[:, 0].min())))
    y0 = max(0, int(np.floor(poly[:, 1].min())))
    x1 = min(w, int(np.ceil(poly[:, 0].max())) + 1)
    y1 = min(h, int(np.ceil(poly[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return 0, 0
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [np.round(poly - [x0, y0]).astype(np.int32)], 1)
    inside = m.astype(bool)
    n = int(inside.sum())
    if n == 0:
        return 0, 0
    return int((g[y0:y1, x0:x1][inside] < DARK_LEVEL).sum()), n


def crop_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two grey crops (scikit-image, 7x7 window, ``data_range=255``)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=255))


def _fit(frame: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray | None, float]:
    """``(frame at the reference's size, scale applied)``: as is, resized when only the scale
    differs, or ``(None, 0)`` when the aspect ratios differ."""
    if frame.shape[:2] == tuple(shape[:2]):
        return frame, 1.0
    h, w = frame.shape[:2]
    H, W = shape[:2]
    if abs(w / h - W / H) > 0.01 * (W / H):
        return None, 0.0
    return cv2.resize(np.ascontiguousarray(frame), (W, H), interpolation=cv2.INTER_AREA), W / w


def mouth_figures(generated: Iterable[np.ndarray], real: Iterable[np.ndarray],
                  generated_landmarks: np.ndarray, real_landmarks: np.ndarray, *,
                  keep_crops: int = 0) -> dict:
    """The mouth-crop figures of a generated clip against the real one (frames in step).

    ``generated`` and ``real`` are iterables of RGB uint8 frames (streamed: lists, or frame
    generators of two videos); ``*_landmarks`` are (n, 478, 2+) pixel landmarks of each (NaN rows
    where no face). Frame ``i`` of one is compared with frame ``i`` of the other, up to the
    shorter. Generated frames of another size but the same aspect ratio are resized to the
    real one's size first.

    Returns ``mouth_ssim``, ``mouth_ssim_still``, ``mouth_dark_share``,
    ``mouth_dark_share_reference`` and ``mouth_frames`` (open real frames used; the figures are
    NaN when there are none). With ``keep_crops`` > 0 the dict also has ``crops``: up to that
    many ``(frame index, real crop, generated crop, still crop)`` of the open frames, evenly
    spread (for contact sheets).
    """
    gl = np.asarray(generated_landmarks, np.float64)
    rl = np.asarray(real_landmarks, np.float64)
    n = min(len(gl), len(rl))
    open_ = mouth_open(rl[:n]) if n else np.zeros(0, bool)
    keep: set[int] = set()
    idx = np.flatnonzero(open_)
    if keep_crops > 0 and len(idx):
        keep = set(idx[np.unique(np.linspace(0, len(idx) - 1, keep_crops).round().astype(int))].tolist())
    ssim, ssim_still = [], []
    dark = {"gen": [0, 0], "real": [0, 0]}
    crops: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    still = None
    for i, (g, r) in enumerate(zip(generated, real)):
        if i >= n:
            break
        r = np.asarray(r)
        if still is None:
            still = r
        if not open_[i]:
            continue
        g, scale = _fit(np.asarray(g), r.shape)
        box = mouth_box(rl[i])
        if g is None or box is None:
            continue
        cr, cg, cs = mouth_crop(r, box), mouth_crop(g, box), mouth_crop(still, box)
        ssim.append(crop_ssim(cg, cr))
        ssim_still.append(crop_ssim(cs, cr))
        for key, frame, lm in (("gen", g, gl[i, :, :2] * scale), ("real", r, rl[i, :, :2])):
            if np.isfinite(lm).all():
                d, t = inner_lip_dark(frame, lm)
                dark[key][0] += d
                dark[key][1] += t
        if i in keep:
            crops.append((i, cr, cg, cs))
    nan = float("nan")

    def share(k: str) -> float:
        d, t = dark[k]
        return d / t if t else nan

    out = {
        "mouth_ssim": float(np.mean(ssim)) if ssim else nan,
        "mouth_ssim_still": float(np.mean(ssim_still)) if ssim_still else nan,
        "mouth_dark_share": share("gen"),
        "mouth_dark_share_reference": share("real"),
        "mouth_frames": len(ssim),
    }
    if keep_crops > 0:
        out["crops"] = crops
    return out
