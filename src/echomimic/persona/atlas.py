"""The canonical mouth frame: where a mouth interior lives in a persona's atlas.

A mouth interior is stored as a small image whose column ``u`` runs from the left inner-lip
corner (``u = -1``) to the right one (``u = 1``) along the line through the corners, and whose
row ``t`` runs from the upper inner lip (``t = 0``) to the lower inner lip (``t = 1``) in that
column. Any open mouth maps onto this rectangle and back, so an interior cut from one frame can
be painted into another mouth of another size, opening and tilt.

The inner-lip contours are the face mesh's (MediaPipe indices, corner to corner).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ATLAS_SIZE", "UPPER_INNER", "LOWER_INNER", "inner_contours", "mouth_figures",
           "MouthAxes", "to_canonical", "trim_lip_band", "lip_colour"]

#: (width, height) of an atlas entry in pixels (u columns, t rows): about the inner width of a
#: mouth in a 1024 face crop, so large faces get sharp teeth
ATLAS_SIZE = (256, 128)
#: at most this share of an entry's rows, at its top and at its bottom, is cut as lip
MAX_LIP_BAND = 0.25

UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]


def inner_contours(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) inner-lip contours, (11, 2) pixels each, corner to corner."""
    lm = np.asarray(lm, np.float64)
    return lm[UPPER_INNER, :2].copy(), lm[LOWER_INNER, :2].copy()


class MouthAxes:
    """The mouth's own frame from its inner-lip contours: ``s`` along the corner line (pixels
    from the midpoint, left corner negative), ``v`` across it (pixels, down the face)."""

    def __init__(self, upper: np.ndarray, lower: np.ndarray):
        upper = np.asarray(upper, np.float64)[:, :2]
        lower = np.asarray(lower, np.float64)[:, :2]
        c0, c1 = upper[0], upper[-1]
        if c0[0] > c1[0]:
            upper, lower = upper[::-1], lower[::-1]
            c0, c1 = c1, c0
        d = c1 - c0
        self.half = max(0.5 * float(np.hypot(*d)), 1e-6)
        self.a = d / (2 * self.half)
        self.n = np.array([-self.a[1], self.a[0]])
        self.origin = 0.5 * (c0 + c1)
        su, vu = self.local(upper)
        sl, vl = self.local(lower)
        ou, ol = np.argsort(su), np.argsort(sl)
        self.su, self.vu = su[ou], vu[ou]
        self.sl, self.vl = sl[ol], vl[ol]

    def local(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.asarray(p, np.float64)[..., :2] - self.origin
        return r @ self.a, r @ self.n

    def lips_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(v of the upper inner lip, v of the lower inner lip) at positions ``s``; the lower
        never above the upper."""
        vu = np.interp(s, self.su, self.vu)
        vl = np.interp(s, self.sl, self.vl)
        return vu, np.maximum(vl, vu)

    def gap(self) -> float:
        """Largest inner-lip gap (pixels)."""
        s = np.linspace(-self.half, self.half, 33)
        vu, vl = self.lips_at(s)
        return float((vl - vu).max())


def mouth_figures(upper: np.ndarray, lower: np.ndarray) -> tuple[float, float]:
    """(opening, width): the largest inner-lip gap over the inner mouth width, and that width
    (pixels, corner to corner)."""
    ax = MouthAxes(upper, lower)
    return ax.gap() / (2 * ax.half), 2 * ax.half


def to_canonical(img: np.ndarray, upper: np.ndarray, lower: np.ndarray,
                 size: tuple[int, int] = ATLAS_SIZE) -> np.ndarray:
    """The mouth interior between the inner lips of ``img`` resampled into the canonical frame:
    an (H, W, 3) uint8 image (``size`` = (W, H))."""
    W, H = size
    ax = MouthAxes(upper, lower)
    u = (np.arange(W, dtype=np.float64) + 0.5) / W * 2 - 1
    t = (np.arange(H, dtype=np.float64) + 0.5) / H
    s = u * ax.half
    vu, vl = ax.lips_at(s)
    v = vu[None, :] + t[:, None] * (vl - vu)[None, :]
    x = ax.origin[0] + s[None, :] * ax.a[0] + v * ax.n[0]
    y = ax.origin[1] + s[None, :] * ax.a[1] + v * ax.n[1]
    # a large mouth is shrunk: blur first so the samples do not alias
    step = 2 * ax.half / W
    src = img
    if step > 1.5:
        x0 = max(0, int(x.min()) - 8)
        y0 = max(0, int(y.min()) - 8)
        x1 = min(img.shape[1], int(x.max()) + 9)
        y1 = min(img.shape[0], int(y.max()) + 9)
        if x1 - x0 > 2 and y1 - y0 > 2:
            roi = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), 0.45 * step)
            x, y, src = x - x0, y - y0, roi
    return cv2.remap(src, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def trim_lip_band(entry: np.ndarray, lip_rgb: np.ndarray) -> np.ndarray:
    """The entry without the band of lip surface at its top and bottom.

    The face mesh's inner-lip contour lies a little on the lips, so a crop between the contours
    starts and ends with rows of lip, usually in shadow. A row (its median over the middle three
    fifths of the columns, CIE Lab with lightness counted a quarter: the shade of a lip changes
    its lightness more than its colour) counts as lip when it is nearer the lip colour than the
    mouth's middle third is, and no lighter than the lips (teeth are). Such rows are cut from the
    top and the bottom (at most :data:`MAX_LIP_BAND` of the rows each) and the rest is stretched
    back to the entry's size."""
    H, W = entry.shape[:2]
    wl = np.array([0.25, 1.0, 1.0], np.float32)
    lab = cv2.cvtColor(np.ascontiguousarray(entry), cv2.COLOR_RGB2LAB).astype(np.float32)
    rows = np.median(lab[:, W // 5: W - W // 5], axis=1)
    lip = cv2.cvtColor(np.clip(np.asarray(lip_rgb, np.float32), 0, 255).astype(np.uint8)[None, None],
                       cv2.COLOR_RGB2LAB)[0, 0].astype(np.float32)
    core = np.median(rows[H // 3: H - H // 3], axis=0)
    if float(np.linalg.norm((core - lip) * wl)) < 6.0:     # the inside looks like the lips
        return entry
    d_lip = np.linalg.norm((rows - lip) * wl, axis=1)
    d_core = np.linalg.norm((rows - core) * wl, axis=1)
    is_lip = (d_lip < d_core) & (rows[:, 0] <= lip[0] + 8.0)
    most = int(MAX_LIP_BAND * H)
    top = 0
    while top < most and is_lip[top]:
        top += 1
    bot = H
    while H - bot < most and is_lip[bot - 1]:
        bot -= 1
    if top == 0 and bot == H:
        return entry
    return cv2.resize(np.ascontiguousarray(entry[top:bot]), (W, H), interpolation=cv2.INTER_LINEAR)


def lip_colour(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Median RGB of the lips (between the outer and the inner lip contours), float32 (3,)."""
    lm = np.asarray(lm, np.float64)
    outer = np.concatenate([lm[UPPER_OUTER, :2], lm[LOWER_OUTER[::-1][1:-1], :2]])
    inner = np.concatenate([lm[UPPER_INNER, :2], lm[LOWER_INNER[::-1][1:-1], :2]])
    h, w = img.shape[:2]
    x0 = max(0, int(np.floor(outer[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(outer[:, 1].min())) - 1)
    x1 = min(w, int(np.ceil(outer[:, 0].max())) + 2)
    y1 = min(h, int(np.ceil(outer[:, 1].max())) + 2)
    if x1 - x0 < 3 or y1 - y0 < 3:
        p = np.clip(np.round(outer).astype(int), 0, [w - 1, h - 1])
        return np.median(img[p[:, 1], p[:, 0]].astype(np.float32), axis=0)
    om = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(om, [np.round(outer - [x0, y0]).astype(np.int32)], 1)
    im = np.zeros_like(om)
    cv2.fillPoly(im, [np.round(inner - [x0, y0]).astype(np.int32)], 1)
    ring = (cv2.erode(om, np.ones((3, 3), np.uint8)) > 0) & (cv2.dilate(im, np.ones((3, 3), np.uint8)) == 0)
    crop = img[y0:y1, x0:x1]
    if ring.sum() < 5:
        ring = om > 0
    if ring.sum() < 1:
        return np.median(crop.reshape(-1, 3).astype(np.float32), axis=0)
    return np.median(crop[ring].astype(np.float32), axis=0)
