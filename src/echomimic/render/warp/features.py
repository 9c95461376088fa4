"""Eyes and mouth interior for the warp renderer.

* :class:`EyeLids` closes an eye the way a lid does: the upper lid slides down over the eyeball
  (the skin between the crease and the lid margin stretches), the lower lid rises a little, and
  the eyeball is covered rather than squashed. It edits the backward map, so the lashes at the
  lid margin travel with the lid and the closed eye shows the person's own lid skin.
* :class:`MouthInterior` paints what an opening mouth shows (a dark cavity with depth shading,
  upper teeth, a hint of lower teeth and the tongue) inside the inner-lip contour, with
  anti-aliased lip edges, tinted from this person's lips and skin.
"""

from __future__ import annotations

import cv2
import numpy as np

from .rig import smoothstep


#: how much more the lid skin stretches near the crease than at the lashes (0 = evenly)
LID_CURVE = 1.2


class EyeLids:
    """Analytic lid motion of one eye, in the rest image's pixel coordinates."""

    def __init__(self, upper: np.ndarray, lower: np.ndarray, brow: np.ndarray | None = None):
        upper = np.asarray(upper, np.float64)[:, :2]
        lower = np.asarray(lower, np.float64)[:, :2]
        c0, c1 = upper[0], upper[-1]
        if c0[0] > c1[0]:
            c0, c1 = c1, c0
        self.origin = c0
        a = c1 - c0
        self.length = float(np.linalg.norm(a))
        self.a = a / max(self.length, 1e-6)
        self.n = np.array([-self.a[1], self.a[0]])           # points down the face
        uu, uv = self._uv(upper)
        lu, lv = self._uv(lower)
        ou, lo = np.argsort(uu), np.argsort(lu)
        self.up_u, self.up_v = uu[ou], uv[ou]
        self.lo_u, self.lo_v = lu[lo], lv[lo]
        grid = np.linspace(0, self.length, 64)
        h = np.interp(grid, self.lo_u, self.lo_v) - np.interp(grid, self.up_u, self.up_v)
        self.hmax = float(max(h.max(), 1.0))
        self.crease = 1.4 * self.hmax          # lid skin above the margin that stretches
        if brow is not None and len(brow):
            bu, bv = self._uv(np.asarray(brow, np.float64)[:, :2])
            gap = np.interp(bu, self.up_u, self.up_v) - bv          # lid to brow, per brow point
            gap = gap[(bu > 0) & (bu < self.length)]
            if gap.size:
                self.crease = float(np.clip(0.7 * gap.min(), 0.6 * self.hmax, 1.4 * self.hmax))
        self.below = 0.9 * self.hmax           # skin under the lower lid that stretches
        pts = np.concatenate([upper, lower])
        pad = np.array([0.0, 0.0])
        self.box_min = pts.min(0) - [0.05 * self.length, self.crease + 2] - pad
        self.box_max = pts.max(0) + [0.05 * self.length, self.below + 2] + pad

    def _uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = p - self.origin
        return r @ self.a, r @ self.n

    def remap(self, mx: np.ndarray, my: np.ndarray, blink: float, squint: float = 0.0,
              look_x: float = 0.0, look_y: float = 0.0, wide: float = 0.0) -> None:
        """Edit backward-map arrays in place (positions in the rest image).

        ``blink``/``squint``/``wide`` in [0, 1]; ``look_x`` > 0 moves the iris towards the
        image's right, ``look_y`` > 0 down (the upper lid follows the gaze a little).
        """
        blink = float(np.clip(blink, 0.0, 1.0))
        squint = float(np.clip(squint, 0.0, 1.0))
        wide = float(np.clip(wide, 0.0, 1.0)) * (1.0 - blink)
        look_x = float(np.clip(look_x, -1.0, 1.0))
        look_y = float(np.clip(look_y, -1.0, 1.0))
        if max(blink, squint, wide, abs(look_x), abs(look_y)) < 1e-3:
            return
        sel = ((mx >= self.box_min[0]) & (mx <= self.box_max[0])
               & (my >= self.box_min[1]) & (my <= self.box_max[1]))
        if not sel.any():
            return
        px, py = mx[sel].astype(np.float64), my[sel].astype(np.float64)
        rx, ry = px - self.origin[0], py - self.origin[1]
        u = rx * self.a[0] + ry * self.a[1]
        v = rx * self.n[0] + ry * self.n[1]
        inside = (u > 0) & (u < self.length)
        y_up = np.interp(u, self.up_u, self.up_v)
        y_lo = np.interp(u, self.lo_u, self.lo_v)
        h = np.maximum(y_lo - y_up, 0.0)
        # the lids: lower rises a little (more with a squint), upper comes down to meet it, or
        # up for wide eyes; the upper lid follows the gaze a little
        y_lo2 = y_lo - (0.12 * blink + 0.3 * squint) * h
        y_m = y_up + blink * (y_lo2 - y_up) - (0.28 * wide - 0.15 * look_y * (1 - blink)) * h
        y_m = np.minimum(y_m, y_lo2)
        y_cr = y_up - self.crease
        y_ls = y_lo + self.below
        vs = v.copy()
        a = (v >= y_cr) & (v < y_m) & inside
        den = np.maximum(y_m - y_cr, 1e-6)
        # the lid skin stretches more near the crease than at the lashes, which stay a thin line
        t = (v[a] - y_cr[a]) / den[a]
        k = 1.0 + LID_CURVE * blink * np.clip(h[a] / self.hmax, 0.0, 1.0) ** 2
        vs[a] = y_cr[a] + (y_up[a] - y_cr[a]) * t ** k
        b = (v > y_lo2) & (v <= y_ls) & inside
        den2 = np.maximum(y_ls - y_lo2, 1e-6)
        vs[b] = y_ls[b] - (y_ls[b] - v[b]) * (y_ls[b] - y_lo[b]) / den2[b]
        vis = (v >= y_m) & (v <= y_lo2) & inside
        # a raised lid shows more of the eye: the aperture stretches over the eye, not the lid
        up_more = vis & (y_m < y_up)
        if up_more.any():
            s0 = (v[up_more] - y_m[up_more]) / np.maximum(y_lo2[up_more] - y_m[up_more], 1e-6)
            vs[up_more] = y_up[up_more] + s0 * (y_lo[up_more] - y_up[up_more])
        us = u.copy()
        taper = np.clip(h / self.hmax, 0, 1) ** 1.5
        if abs(look_x) > 1e-3:
            us[vis] = u[vis] - look_x * 0.18 * self.length * taper[vis]
        if abs(look_y) > 1e-3:
            vs[vis] = vs[vis] - look_y * 0.22 * h[vis] * taper[vis]
        nx = self.origin[0] + us * self.a[0] + vs * self.n[0]
        ny = self.origin[1] + us * self.a[1] + vs * self.n[1]
        mx[sel] = nx.astype(mx.dtype)
        my[sel] = ny.astype(my.dtype)


def _chaikin(p: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner-cutting subdivision of an open polyline (end points kept)."""
    for _ in range(iterations):
        q = 0.75 * p[:-1] + 0.25 * p[1:]
        r = 0.25 * p[:-1] + 0.75 * p[1:]
        mid = np.empty((2 * len(q), p.shape[1]))
        mid[0::2], mid[1::2] = q, r
        p = np.concatenate([p[:1], mid[1:-1], p[-1:]])
    return p


#: closed-lip line: thickness (x eye distance), opacity, share of the pixel kept, share of the
#: mouth's dark lip colour added
LIP_LINE = [0.013, 0.9, 0.3, 0.25]


class MouthInterior:
    """Paints the inside of an open mouth between the inner-lip contours."""

    def __init__(self, rest_image: np.ndarray, lip_points: np.ndarray, eye_dist: float):
        self.E = float(eye_dist)
        pts = np.round(lip_points[:, :2]).astype(int)
        h, w = rest_image.shape[:2]
        pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
        lip = rest_image[pts[:, 1], pts[:, 0]].astype(np.float32)
        self.lip = np.median(lip, axis=0)
        lum = float(np.clip(0.299 * self.lip[0] + 0.587 * self.lip[1] + 0.114 * self.lip[2], 40, 220))
        self.light = float(np.clip(lum / 140.0, 0.6, 1.25))
        self.cavity = np.clip(self.lip * 0.30 + np.array([14, 3, 4]), 0, 255)
        self.teeth = np.array([226, 218, 204], np.float32) * min(1.0, 0.75 * self.light + 0.25)
        self.tongue = np.clip(self.lip * 0.8 + np.array([18, -4, -2]), 0, 255)

    def lip_line(self, img: np.ndarray, upper: np.ndarray, lower: np.ndarray, strength: float = 1.0) -> None:
        """The soft shadow where closed lips meet (what a closed mouth shows, and what a face
        tracker reads as closed)."""
        mid = 0.5 * (upper + lower)
        h, w = img.shape[:2]
        th = max(0.8, LIP_LINE[0] * self.E)
        x0 = max(0, int(mid[:, 0].min() - 2 * th))
        x1 = min(w, int(mid[:, 0].max() + 2 * th) + 1)
        y0 = max(0, int(mid[:, 1].min() - 2 * th))
        y1 = min(h, int(mid[:, 1].max() + 2 * th) + 1)
        if x1 - x0 < 2 or y1 - y0 < 1:
            return
        S = 4
        m = np.zeros(((y1 - y0) * S, (x1 - x0) * S), np.uint8)
        pts = np.round((mid - [x0, y0]) * S + (S - 1) / 2).astype(np.int32)
        cv2.polylines(m, [pts], False, 255, thickness=max(1, int(round(th * S))), lineType=cv2.LINE_AA)
        a = cv2.resize(m, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        a = cv2.GaussianBlur(a, (0, 0), max(0.6, 0.35 * th))
        xs = np.arange(x0, x1, dtype=np.float64)
        xc = 0.5 * (upper[0, 0] + upper[-1, 0])
        half = max(0.5 * abs(upper[-1, 0] - upper[0, 0]), 1.0)
        taper = np.clip(1.0 - np.abs((xs - xc) / half) ** 4, 0.0, 1.0)[None, :]
        alpha = (LIP_LINE[1] * strength) * np.clip(a * 1.4, 0, 1) * taper
        roi = img[y0:y1, x0:x1].astype(np.float32)
        dark = roi * LIP_LINE[2] + self.cavity[None, None, :] * LIP_LINE[3]
        roi += (dark - roi) * alpha[..., None]
        img[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)

    def paint(self, img: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
        """``upper``/``lower``: inner-lip contours (corner to corner, same corners), pixels in
        ``img``'s coordinates. Paints in place."""
        upper = np.asarray(upper, np.float64)
        lower = np.asarray(lower, np.float64).copy()
        lower[:, 1] = np.maximum(lower[:, 1], upper[:, 1])      # never a crossed contour
        upper, lower = _chaikin(upper), _chaikin(lower)
        poly = np.concatenate([upper, lower[::-1][1:-1]])
        x0 = int(np.floor(poly[:, 0].min())) - 2
        x1 = int(np.ceil(poly[:, 0].max())) + 3
        y0 = int(np.floor(poly[:, 1].min())) - 2
        y1 = int(np.ceil(poly[:, 1].max())) + 3
        h, w = img.shape[:2]
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        gap = lower[1:-1, 1] - upper[1:-1, 1]
        gmax = float(gap.max()) if gap.size else 0.0
        if gap.size == 0 or gmax < 0.35:
            return
        S = 4  # supersampled polygon for clean edges
        bw, bh = x1 - x0, y1 - y0
        m = np.zeros((bh * S, bw * S), np.uint8)
        pp = np.round((poly - [x0, y0]) * S + (S - 1) / 2).astype(np.int32)
        cv2.fillPoly(m, [pp], 255, lineType=cv2.LINE_8)
        mask = cv2.resize(m, (bw, bh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        if float(mask.max()) <= 0:
            return
        xs = np.arange(x0, x1, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        ou = np.argsort(upper[:, 0])
        ol = np.argsort(lower[:, 0])
        yu = np.interp(xs, upper[ou, 0], upper[ou, 1])[None, :]
        yl = np.interp(xs, lower[ol, 0], lower[ol, 1])[None, :]
        g = np.maximum(yl - yu, 1e-3)
        t = (ys - yu) / g                                      # 0 at upper lip, 1 at lower lip
        xc = 0.5 * (upper[0, 0] + upper[-1, 0])
        half = max(0.5 * abs(upper[-1, 0] - upper[0, 0]), 1.0)
        xr = (xs[None, :] - xc) / half                         # -1..1 across the mouth
        E = self.E
        # cavity: darker towards the back and the corners
        depth = np.clip(1 - np.abs(xr), 0, 1)
        shade = 0.55 + 0.45 * (1 - depth * np.clip(g / (0.25 * E), 0, 1)) * (0.6 + 0.4 * np.abs(2 * t - 1))
        col = self.cavity[None, None, :] * shade[..., None]
        # tongue: a rounded mass low in the mouth, lit from the front
        gpx = g
        ty = 1 - (ys - (yl - 0.35 * gpx)) / np.maximum(0.45 * gpx, 1e-3)
        tongue_m = smoothstep((1 - xr ** 2 / 0.55) * 3) * smoothstep(1 - np.abs(ty - 0.35) * 1.6)
        tongue_m *= smoothstep((g - 0.10 * E) / (0.12 * E))
        tcol = self.tongue[None, None, :] * (0.55 + 0.35 * np.clip(1 - np.abs(ty), 0, 1))[..., None]
        col = col * (1 - tongue_m[..., None]) + tcol * tongue_m[..., None]
        # soft shadow just inside the lips (on the cavity and tongue)
        edge = np.clip(np.minimum(ys - yu, yl - ys) / max(1.2, 0.02 * E), 0, 1)
        col *= (0.7 + 0.3 * edge)[..., None]
        # upper teeth: a band right under the upper lip across the middle of the mouth
        th = np.minimum(0.10 * E, 0.55 * g)
        tb = (ys - yu) / np.maximum(th, 1e-3)
        teeth_w = smoothstep((0.8 - np.abs(xr)) / 0.3)
        band = smoothstep((1 - tb) * 3.0) * smoothstep((tb + 0.05) * 6.0)
        gum = 0.9 + 0.1 * smoothstep(tb * 4)
        incisor = 1 - 0.06 * np.abs(np.cos(np.pi * xr * 2.4)) ** 8
        shade_t = gum * incisor * (0.6 + 0.4 * teeth_w) * (1 - 0.12 * np.clip(tb, 0, 1))
        tcol2 = self.teeth[None, None, :] * shade_t[..., None]
        tm = (band * smoothstep(teeth_w * 1.5))[..., None]
        col = col * (1 - tm) + tcol2 * tm
        # lower teeth, only when wide open
        lh = np.minimum(0.06 * E, 0.22 * g)
        lb = (yl - ys) / np.maximum(lh, 1e-3)
        lm_ = smoothstep((1 - lb) * 4) * smoothstep((0.6 - np.abs(xr)) / 0.25) * smoothstep((g - 0.18 * E) / (0.1 * E))
        col = col * (1 - 0.7 * lm_[..., None]) + self.teeth[None, None, :] * 0.72 * 0.7 * lm_[..., None]
        roi = img[y0:y1, x0:x1]
        out = roi.astype(np.float32) * (1 - mask[..., None]) + col * mask[..., None]
        roi[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


def refine_inner_lips(img: np.ndarray, lm: np.ndarray, eye_dist: float) -> np.ndarray:
    """Move the inner-lip points to the lips' real inner edges when the photo shows teeth or a
    dark mouth between the lips.

    On smiles with teeth, the face mesh often puts the inner upper lip on the teeth. The opening
    is found from colour inside the outer-lip contour (teeth are less red than lips, the cavity is
    darker) and the inner contours are pushed out to its top and bottom in each column.
    """
    from .rig import LOWER_INNER, LOWER_OUTER, UPPER_INNER, UPPER_OUTER

    lm = np.asarray(lm, np.float64).copy()
    ui, li = UPPER_INNER[1:-1], LOWER_INNER[1:-1]
    gaps = lm[li, 1] - lm[ui, 1]
    if float(np.max(gaps)) < 0.01 * eye_dist:
        return lm
    outer = np.concatenate([lm[UPPER_OUTER, :2], lm[LOWER_OUTER[::-1][1:-1], :2]])
    inner = np.concatenate([lm[UPPER_INNER, :2], lm[LOWER_INNER[::-1][1:-1], :2]])
    h, w = img.shape[:2]
    x0 = max(0, int(np.floor(outer[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(outer[:, 1].min())) - 2)
    x1 = min(w, int(np.ceil(outer[:, 0].max())) + 3)
    y1 = min(h, int(np.ceil(outer[:, 1].max())) + 3)
    if x1 - x0 < 6 or y1 - y0 < 4:
        return lm
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    L, A = lab[..., 0], lab[..., 1]
    om = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(om, [np.round(outer - [x0, y0]).astype(np.int32)], 1)
    om = cv2.erode(om, np.ones((3, 3), np.uint8))
    im = np.zeros_like(om)
    cv2.fillPoly(im, [np.round(inner - [x0, y0]).astype(np.int32)], 1)
    lip = (om > 0) & (cv2.dilate(im, np.ones((3, 3), np.uint8)) == 0)
    ins = (im > 0) & (om > 0)
    if lip.sum() < 10 or ins.sum() < 4:
        return lm
    wv = np.array([0.5, 1.0, 1.0], np.float32)                 # L counts half
    labw = lab * wv
    c_lip = np.median(labw[lip], axis=0)
    inside_l = L[ins]
    bright = ins & (L >= np.percentile(inside_l, 80))
    c_teeth = np.median(labw[bright], axis=0)
    l_lip = float(np.median(L[lip]))
    dark = L < 0.5 * l_lip
    if float(np.linalg.norm(c_lip - c_teeth)) >= 8.0:
        d_lip = np.linalg.norm(labw - c_lip, axis=-1)
        d_t = np.linalg.norm(labw - c_teeth, axis=-1)
        opening = (om > 0) & ((d_t < d_lip) | dark)
    else:
        opening = (om > 0) & dark
    rows = opening.shape[0]

    def grow(c: int, y_mid: float, direction: int) -> float | None:
        """From the middle of the mouth, walk up/down while the pixels look like teeth or
        cavity; the last such row is the lip's inner edge in this column."""
        if not (0 <= c < opening.shape[1]):
            return None
        y = int(round(y_mid)) - y0
        if not (0 <= y < rows) or not opening[y, c]:
            return None
        miss = 0
        last = y
        while 0 <= y + direction < rows:
            y += direction
            if opening[y, c]:
                last, miss = y, 0
            else:
                miss += 1
                if miss > 1:
                    break
        return float(last + y0)

    for i_up, i_lo in zip(ui, li):
        c = int(round(0.5 * (lm[i_up, 0] + lm[i_lo, 0]))) - x0
        mid = 0.5 * (lm[i_up, 1] + lm[i_lo, 1])
        top = grow(c, mid, -1)
        bot = grow(c, mid, +1)
        if top is not None:
            lm[i_up, 1] = min(lm[i_up, 1], top - 0.5)
        if bot is not None:
            lm[i_lo, 1] = max(lm[i_lo, 1], bot + 0.5)
    # keep the inner contours inside the outer ones
    for ii, oo in ((UPPER_INNER[1:-1], UPPER_OUTER[1:-1]), (LOWER_INNER[1:-1], LOWER_OUTER[1:-1])):
        oy = np.interp(lm[ii, 0], lm[oo, 0][np.argsort(lm[oo, 0])], lm[oo, 1][np.argsort(lm[oo, 0])])
        if ii is UPPER_INNER[1:-1] or ii == UPPER_INNER[1:-1]:
            lm[ii, 1] = np.maximum(lm[ii, 1], oy + 0.5)
        else:
            lm[ii, 1] = np.minimum(lm[ii, 1], oy - 0.5)
    return lm
