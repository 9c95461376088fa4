"""Eyes and mouth interior for the warp renderer.

* :class:`EyeLids` closes an eye the way a lid does: the upper lid slides down over the eyeball
  (the skin between the crease and the lid margin stretches), the lower lid rises a little, and
  the eyeball is covered rather than squashed. It edits the backward map, so the lashes at the
  lid margin travel with the lid and the closed eye shows the person's own lid skin.
* :class:`MouthInterior` paints what an opening mouth shows inside the inner-lip contour: a
  cavity in the person's own dark red-brown, the tongue, a row of upper teeth (and the lower
  teeth on wide openings), the wet inner surfaces of the lips; shaded by the photo's light,
  blurred and grained like the photo (see docs/renderer.md).
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=16)
def _chaikin_matrix(n: int, iterations: int) -> np.ndarray:
    """The corner-cutting subdivision of an ``n``-point polyline as one linear map."""
    p = np.eye(n)
    for _ in range(iterations):
        q = 0.75 * p[:-1] + 0.25 * p[1:]
        r = 0.25 * p[:-1] + 0.75 * p[1:]
        mid = np.empty((2 * len(q), p.shape[1]))
        mid[0::2], mid[1::2] = q, r
        p = np.concatenate([p[:1], mid[1:-1], p[-1:]])
    p.setflags(write=False)
    return p


def _chaikin(p: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner-cutting subdivision of an open polyline (end points kept)."""
    p = np.asarray(p, np.float64)
    return _chaikin_matrix(len(p), iterations) @ p


#: closed-lip line: thickness (x eye distance), opacity, share of the pixel kept, share of the
#: mouth's dark lip colour added
LIP_LINE = [0.013, 0.9, 0.3, 0.25]

#: upper teeth along the arch, from the middle out: the far edge of each tooth in units of the
#: mouth's half width (central incisor, lateral incisor, canine, premolars) and its brightness
TOOTH_EDGES = np.array([0.0, 0.28, 0.50, 0.68, 0.82, 0.93])
TOOTH_LIGHT = np.array([1.0, 0.9, 0.7, 0.45, 0.3])
#: per tooth (five on the left, five on the right, from the middle out): brightness and length
#: factors, so the row is not a uniform denture (fixed: renders are deterministic)
TOOTH_SHADE = np.array([1.0, 0.93, 0.97, 0.9, 0.95, 0.97, 1.0, 0.92, 0.96, 0.9])
TOOTH_LENGTH = np.array([1.0, 0.9, 1.04, 0.95, 1.0, 0.96, 0.88, 1.02, 1.0, 0.97])
#: how far the upper incisors reach below the resting line of the lips (x eye distance)
TEETH_BELOW_REST = 0.04
#: grey level of the deepest part of the mouth and of its walls next to the lips, as shares of
#: the skin's grey level (clipped)
CAVITY_DEPTH = 0.09
CAVITY_WALL = 0.42


#: the inner-lip opening narrows to a point over this share of the half width at each corner
#: (the face mesh's contour ends in straight wedges: a hexagon)
CORNER_TAPER = 0.5


def pointed_corners(upper: np.ndarray, lower: np.ndarray,
                    taper: float = CORNER_TAPER) -> tuple[np.ndarray, np.ndarray]:
    """Inner-lip contours (corner to corner, sharing their corners) whose opening closes
    towards the corners as lips do: the gap is scaled by ``sqrt(smoothstep((1 - |u|) / taper))``
    around the line midway between the lips (``u``: -1..1 from corner to corner), so the corners
    come to a point along curved edges instead of a blunt wedge."""
    upper = np.asarray(upper, np.float64)[:, :2]
    lower = np.asarray(lower, np.float64)[:, :2]
    xc = 0.5 * (upper[0, 0] + upper[-1, 0])
    half = max(0.5 * abs(upper[-1, 0] - upper[0, 0]), 1.0)
    out = []
    for c, o in ((upper, lower), (lower, upper)):
        mid = 0.5 * (c[:, 1] + _interp_x(c[:, 0], o))
        f = np.sqrt(_ss((1.0 - np.abs(c[:, 0] - xc) / half) / taper))
        c2 = c.copy()
        c2[:, 1] = mid + (c[:, 1] - mid) * f
        out.append(c2)
    return out[0], out[1]


def _c01(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [0, 1] (two ufuncs: far cheaper than ``np.clip`` on small arrays)."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _ss(x: np.ndarray) -> np.ndarray:
    """:func:`~.rig.smoothstep` for the per-frame painting (the same values, less overhead)."""
    x = _c01(x)
    return x * x * (3.0 - 2.0 * x)


def _interp_x(xs: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """The y of a contour (points left to right, any order) at columns ``xs``."""
    o = np.argsort(contour[:, 0], kind="stable")
    return np.interp(xs, contour[o, 0], contour[o, 1])


def _grey(c: np.ndarray) -> np.ndarray:
    return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def _blur_sigma(grey: np.ndarray, mask: np.ndarray) -> float:
    """Blur of the photo's edges (Gaussian sigma, pixels) from the ratio of the strongest
    gradients before and after re-blurring by a known amount."""
    g = grey.astype(np.float32)
    sr = 1.0

    def strong(a: np.ndarray) -> float:
        gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.hypot(gx, gy)[mask]
        return float(np.percentile(mag, 98)) if mag.size > 20 else 0.0

    g0 = strong(g)
    g1 = strong(cv2.GaussianBlur(g, (0, 0), sr))
    if g1 <= 1e-3 or g0 <= 1e-3:
        return 1.0
    r = g0 / g1
    if r <= 1.0 + 1e-3:
        return 3.0
    return float(np.clip(sr / np.sqrt(r * r - 1.0), 0.3, 3.0))


#: a persona's atlas gives way to the photo's own open mouth when the driven opening is within
#: about this share of the photo's (a Gaussian in the ratio of the openings; and in the widths,
#: with a third of it)
PHOTO_NEAR = 0.3

#: share of the photo's opening (from the top) that hangs from the upper lip when the mouth opens
#: more or less than the photo's: the upper teeth stay with the upper jaw, whole; only the bottom
#: rows (the lower lip's inner edge) stand on the lower lip. Half and half put the upper teeth's
#: edges on the lower lip, and the face mesh then read the lips nearer than they are (the
#: measured lip gap of text-driven speech followed its phonemes with r 0.01-0.04 lower)
PHOTO_UPPER_SHARE = 0.85


class PhotoMouth:
    """The photo's own open mouth as a layer between the moved inner lips.

    A photo with parted lips that shows its teeth has a real interior that no painting matches
    (:class:`MouthInterior` uses this layer only for such photos): when the driven mouth is at
    the photo's opening, :meth:`layer` gives back the photo's pixels, moved with the lips. A
    mouth opened less shows, at their size, the top of the photo's interior under the upper lip
    (:data:`PHOTO_UPPER_SHARE` of the opening) and its bottom above the lower lip (a closing lip
    covers the teeth, it does not squash them); a mouth opened further keeps the photo's upper rows (that share of them: the upper teeth) at their
    size under the upper lip and the rest above the lower lip, and leaves the rows in between to
    the painted (or enrolled) interior, cross-faded. Columns are matched corner to corner.

    ``photo``: the photo (or the renderer's region of it); ``upper``/``lower``: its inner-lip
    contours (corner to corner, pixels of ``photo``).
    """

    def __init__(self, photo: np.ndarray, upper: np.ndarray, lower: np.ndarray):
        upper = np.asarray(upper, np.float64)[:, :2]
        lower = np.asarray(lower, np.float64)[:, :2].copy()
        lower[:, 1] = np.maximum(lower[:, 1], np.interp(lower[:, 0], *_sorted_xy(upper)))
        # smoothed with pointed corners, as every painted mouth is: the same lips map to the
        # same pixels
        upper, lower = pointed_corners(_chaikin(upper), _chaikin(lower))
        h, w = photo.shape[:2]
        pts = np.concatenate([upper, lower])
        pad = 4
        x0 = max(0, int(np.floor(pts[:, 0].min())) - pad)
        y0 = max(0, int(np.floor(pts[:, 1].min())) - pad)
        x1 = min(w, int(np.ceil(pts[:, 0].max())) + pad + 1)
        y1 = min(h, int(np.ceil(pts[:, 1].max())) + pad + 1)
        self.image = np.ascontiguousarray(photo[y0:y1, x0:x1])       # a copy of the mouth only
        self.off = np.array([x0, y0], np.float64)
        self.upper, self.lower = upper - self.off, lower - self.off
        self._up = _sorted_xy(self.upper)               # contours by x, for np.interp
        self._lo = _sorted_xy(self.lower)
        self.xc = float(0.5 * (upper[0, 0] + upper[-1, 0])) - x0
        self.half = float(max(0.5 * abs(upper[-1, 0] - upper[0, 0]), 1.0))
        xs = np.linspace(self.upper[:, 0].min(), self.upper[:, 0].max(), 33)
        self.gap = float(np.max(_interp_x(xs, self.lower) - _interp_x(xs, self.upper)))

    def nearness(self, gap: float, half: float) -> float:
        """1 when a mouth of this largest gap and half width is the photo's, falling off as it
        departs (see :data:`PHOTO_NEAR`)."""
        if self.gap <= 0.5:
            return 0.0
        dg = (gap / self.gap - 1.0) / PHOTO_NEAR
        dw = (half / self.half - 1.0) / (PHOTO_NEAR / 3)
        return float(np.exp(-0.5 * (dg * dg + dw * dw)))

    def layer(self, xs: np.ndarray, ys: np.ndarray, yu: np.ndarray, yl: np.ndarray,
              xc: float, half: float) -> tuple[np.ndarray, np.ndarray]:
        """(colour (h, w, 3) float32, alpha (h, w) float32) of the photo's mouth on the pixel
        rows ``ys`` (h, 1) and columns ``xs`` (w,) of the current mouth, whose inner lips are at
        ``yu``/``yl`` (1, w) in those columns; ``xc``/``half``: its corner midpoint and half
        width (x)."""
        xp = (self.xc + (xs - xc) * (self.half / half)).astype(np.float32)
        yup = np.interp(xp, *self._up).astype(np.float32)[None, :]
        ylp = np.interp(xp, *self._lo).astype(np.float32)[None, :]
        gp = np.maximum(ylp - yup, 0.0)
        g = np.maximum(yl - yu, 1e-3)
        # the upper rows hang from the upper lip and the lower ones stand on the lower lip, at
        # the photo's size (teeth are not squashed), split at PHOTO_UPPER_SHARE: opened less than
        # the photo, the upper share of the opening shows the top of the photo's and the rest its
        # bottom (the lips cover the middle, as a rising lower lip covers the teeth's edges);
        # opened further, the upper lip keeps that share of the photo's rows, the lower lip the
        # rest
        fu = PHOTO_UPPER_SHARE
        split = yu + fu * g
        upper_half = ys <= split
        my = ys + np.where(upper_half, yup - yu, ylp - yl)
        wide = g > gp                                    # columns opened further than the photo
        wider = bool(wide.any())
        if wider:
            mid = yup + fu * gp
            my = np.where(upper_half, np.minimum(my, np.where(wide, mid, np.inf)),
                          np.maximum(my, np.where(wide, mid, -np.inf)))
        my = my.astype(np.float32, copy=False)
        mx = np.broadcast_to(xp[None, :], my.shape)
        col = cv2.remap(self.image, np.ascontiguousarray(mx), my, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        alpha = np.broadcast_to(_ss(gp / 1.5), my.shape)   # no photo opening in this column
        if wider:
            # rows beyond the photo's halves (a wider opening) fade to the painted interior
            bc = yu + fu * gp + 0.5 * (g - gp)           # the middle of the rows in between
            beyond = (0.5 * (g - gp) - np.abs(ys - bc)) / np.maximum(1.5, 0.3 * gp)
            alpha = (1.0 - _ss(beyond)) * alpha
        return col, np.array(alpha, np.float32)


def _sorted_xy(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.argsort(c[:, 0], kind="stable")
    return c[o, 0], c[o, 1]


class MouthInterior:
    """Paints the inside of an open mouth between the inner-lip contours, from the photo alone.

    What it draws, back to front: the cavity in a dark red-brown made from this person's lip
    colour (darkest deep in the middle and in the corners, lighter near the lips; never black),
    the tongue low in the mouth (on open vowels; ``tongueOut`` brings it forward), the lower
    teeth on wide openings, the upper teeth as a row of soft individual teeth hanging from the
    upper jaw (their edge stays with the head, so the upper lip uncovers them as it rises and a
    lower lip tucked under them for /f v/ meets them), and the wet inner surfaces of both lips,
    which widen as the lips part. The picture is shaded by the light direction read from the skin
    around the mouth, blurred to the photo's own sharpness, given the skin's grain and composited
    with an anti-aliased edge. When the photo itself shows teeth, their pixels are the teeth's
    texture.

    ``lip_points``: the outer-lip points (pixels of ``rest_image``), used to sample colours.
    ``photo`` / ``photo_lips``: the photo before its mouth was closed and its (upper, lower)
    inner-lip contours, in the same coordinates, when its mouth is open (teeth are taken from it).
    """

    def __init__(self, rest_image: np.ndarray, lip_points: np.ndarray, eye_dist: float, *,
                 photo: np.ndarray | None = None,
                 photo_lips: tuple[np.ndarray, np.ndarray] | None = None):
        self.E = E = float(eye_dist)
        h, w = rest_image.shape[:2]
        outer = np.asarray(lip_points, np.float64)[:, :2]
        pts = np.round(outer).astype(int)
        pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
        lip_px = rest_image[pts[:, 1], pts[:, 0]].astype(np.float32)
        # colours and statistics of the lips and of the skin around the mouth
        mw = float(np.ptp(outer[:, 0])) or 1.0
        mx0 = int(max(0, outer[:, 0].min() - 0.35 * mw))
        mx1 = int(min(w, outer[:, 0].max() + 0.35 * mw + 1))
        my0 = int(max(0, outer[:, 1].min() - 0.3 * mw))
        my1 = int(min(h, outer[:, 1].max() + 0.3 * mw + 1))
        lip = np.median(lip_px, axis=0)
        skin = lip * 1.1
        self.sigma, self.noise_sd = 0.7, 0.0
        self.light = np.zeros(2)
        if mx1 - mx0 > 4 and my1 - my0 > 4:
            box = rest_image[my0:my1, mx0:mx1].astype(np.float32)
            lm = np.zeros(box.shape[:2], np.uint8)
            poly = np.round(outer - [mx0, my0]).astype(np.int32)
            hull = cv2.convexHull(poly)
            cv2.fillConvexPoly(lm, hull, 1)
            lips_in = lm.astype(bool)
            if lips_in.sum() > 10:
                lip = np.median(box[lips_in], axis=0)
            near = cv2.dilate(lm, np.ones((3, 3), np.uint8), iterations=max(2, int(0.04 * E)))
            sk = near == 0
            if sk.sum() > 30:
                skin = np.median(box[sk], axis=0)
                gy = _grey(box)
                # grain: robust spread of what a 3x3 median takes away
                g8 = np.clip(gy + 0.5, 0, 255).astype(np.uint8)
                res = gy - cv2.medianBlur(g8, 3).astype(np.float32)
                self.noise_sd = float(np.clip(1.4826 * np.median(np.abs(res[sk])), 0.0, 12.0))
                # light: the skin's brightness gradient across the mouth region
                yy, xx = np.nonzero(sk)
                A = np.column_stack([(xx - xx.mean()) / mw, (yy - yy.mean()) / mw, np.ones(len(xx))])
                coef, *_ = np.linalg.lstsq(A, gy[sk], rcond=None)
                self.light = np.clip(coef[:2] / max(float(np.median(gy[sk])), 1.0), -0.6, 0.6)
                # lip edges are soft by nature: part of what is measured is not blur
                self.sigma = 0.6 * _blur_sigma(gy, np.ones_like(sk))
        self.lip = lip.astype(np.float32)
        self.skin = skin.astype(np.float32)
        skin_g = float(np.clip(_grey(self.skin), 40, 240))
        lip_g = max(float(_grey(self.lip)), 1.0)
        # the cavity: the lip colour, much darker and a little redder; never black
        core_g = float(np.clip(CAVITY_DEPTH * skin_g, 8.0, 24.0))
        wall_g = float(np.clip(CAVITY_WALL * skin_g, 40.0, 110.0))
        red = self.lip / lip_g
        red = red * np.array([1.15, 0.85, 0.85], np.float32)
        red /= max(float(_grey(red)), 1e-3)
        self.cavity_core = (red * core_g).astype(np.float32)
        self.cavity_wall = (red * wall_g).astype(np.float32)
        # the colour of the closed-lip line (kept as it was: a face tracker reads it as closed)
        self.cavity = np.clip(np.median(lip_px, axis=0) * 0.30 + np.array([14, 3, 4]), 0, 255)
        # teeth: the light's colour (the skin's hue, faint) at about the skin's brightness
        tint = self.skin / max(float(_grey(self.skin)), 1.0)
        tint = 0.5 + 0.5 * tint
        self.teeth = np.clip(tint * np.clip(1.15 * skin_g + 10.0, 100.0, 235.0), 0, 250).astype(np.float32)
        self.tongue = (self.lip * 0.72 + self.skin * 0.08).astype(np.float32)
        self.mucosa = (self.lip * np.array([0.78, 0.6, 0.62], np.float32)).astype(np.float32)
        # a fixed grain texture (deterministic), tiled in image coordinates
        rng = np.random.default_rng(12345)
        self.grain = rng.standard_normal((128, 128)).astype(np.float32)
        # teeth from the photo, when it shows them
        self.teeth_tex: np.ndarray | None = None
        #: the photo's own open mouth, where it shows teeth (None otherwise). A dark opening
        #: without teeth is painted instead: its pixels (the shadowed underside of the lips, a
        #: dark gap) read as lips to a viewer and to the face mesh once moved, and the measured
        #: lip-sync of such photos fell from r 0.65 to 0.47 with them
        self.photo_mouth: PhotoMouth | None = None
        if photo is not None and photo_lips is not None:
            self.teeth_tex = self._photo_teeth(photo, *photo_lips)
            if self.teeth_tex is not None:
                pm = PhotoMouth(photo, *photo_lips)
                if pm.gap >= 1.0:
                    self.photo_mouth = pm

    # ------------------------------------------------------------------------------------------
    def _photo_teeth(self, photo: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray | None:
        """The photo's upper teeth as a texture (rows: upper lip down to the teeth's edge;
        columns: corner to corner), or None when the photo shows no teeth."""
        upper = np.asarray(upper, np.float64)[:, :2]
        lower = np.asarray(lower, np.float64)[:, :2]
        E = self.E
        x0, x1 = float(upper[:, 0].min()), float(upper[:, 0].max())
        if x1 - x0 < 8:
            return None
        xs = np.linspace(x0, x1, 64)
        yu = _interp_x(xs, upper)
        yl = _interp_x(xs, lower)
        g = yl - yu
        if float(g.max()) < max(2.0, 0.02 * E):
            return None
        grey = _grey(photo.astype(np.float32))
        rows = 24
        t = np.linspace(0.0, 1.0, rows)[:, None]
        sy = (yu[None, :] + t * g[None, :]).astype(np.float32)
        sx = np.repeat(xs[None, :], rows, 0).astype(np.float32)
        gs = cv2.remap(grey.astype(np.float32), sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lip_g = float(_grey(self.lip))
        mid = np.abs(np.linspace(-1, 1, 64)) < 0.6
        bright = gs > max(1.15 * lip_g, 0.55 * float(_grey(self.skin)))
        cols = bright[:, mid].any(0)
        if cols.mean() < 0.5:
            return None
        # the teeth's edge in each column: the lowest bright row, smoothed across columns
        last = np.where(bright.any(0), rows - 1 - np.argmax(bright[::-1], axis=0), 0)
        edge = float(np.median(last[mid][cols])) / (rows - 1)
        if edge < 0.15:
            return None
        t2 = np.linspace(0.0, edge, 16)[:, None]
        sy2 = (yu[None, :] + t2 * g[None, :]).astype(np.float32)
        sx2 = np.repeat(xs[None, :], 16, 0).astype(np.float32)
        tex = cv2.remap(np.ascontiguousarray(photo), sx2, sy2, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return tex.astype(np.float32)

    # ------------------------------------------------------------------------------------------
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

    # ------------------------------------------------------------------------------------------
    def paint(self, img: np.ndarray, upper: np.ndarray, lower: np.ndarray, *,
              teeth_line: np.ndarray | None = None, motion: dict | None = None) -> None:
        """Paint the open mouth into ``img`` in place.

        ``upper``/``lower``: inner-lip contours (corner to corner, same corners), pixels in
        ``img``'s coordinates. ``teeth_line``: where the lips meet at rest, moved with the head
        only (points left to right): the upper teeth hang from it. Without it they hang from the
        upper lip. ``motion``: the frame's blendshapes; ``mouthFunnel``/``mouthPucker`` (rounded
        lips cover the teeth and hide the tongue) and ``tongueOut`` are read.
        """
        upper = np.asarray(upper, np.float64)[:, :2]
        lower = np.asarray(lower, np.float64)[:, :2].copy()
        lower[:, 1] = np.maximum(lower[:, 1], upper[:, 1])      # never a crossed contour
        gap = lower[1:-1, 1] - upper[1:-1, 1]
        if gap.size == 0 or float(gap.max()) < 0.35:
            return
        upper, lower = pointed_corners(_chaikin(upper), _chaikin(lower))
        poly = np.concatenate([upper, lower[::-1][1:-1]])
        sig = self.sigma
        pad = int(np.ceil(2.5 * sig)) + 2
        h, w = img.shape[:2]
        x0 = max(0, int(np.floor(poly[:, 0].min())) - pad)
        x1 = min(w, int(np.ceil(poly[:, 0].max())) + pad + 1)
        y0 = max(0, int(np.floor(poly[:, 1].min())) - pad)
        y1 = min(h, int(np.ceil(poly[:, 1].max())) + pad + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        S = 4  # supersampled polygon for clean edges
        bw, bh = x1 - x0, y1 - y0
        m = np.zeros((bh * S, bw * S), np.uint8)
        pp = np.round((poly - [x0, y0]) * S + (S - 1) / 2).astype(np.int32)
        cv2.fillPoly(m, [pp], 255, lineType=cv2.LINE_8)
        mask = cv2.resize(m, (bw, bh), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255.0)
        if float(mask.max()) <= 0:
            return
        if sig > 1.0:
            mask = cv2.GaussianBlur(mask, (0, 0), 0.6 * sig)
        mo = motion or {}
        rnd = min(max(float(mo.get("mouthFunnel", 0.0)), float(mo.get("mouthPucker", 0.0)), 0.0), 1.0)
        tongue_out = min(max(float(mo.get("tongueOut", 0.0)), 0.0), 1.0)
        E = self.E
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        yu = _interp_x(xs, upper).astype(np.float32)[None, :]
        yl = _interp_x(xs, lower).astype(np.float32)[None, :]
        g = np.maximum(yl - yu, 1e-3)
        xc = float(0.5 * (upper[0, 0] + upper[-1, 0]))
        half = float(max(0.5 * abs(upper[-1, 0] - upper[0, 0]), 1.0))
        xr = ((xs - xc) / half)[None, :]                       # -1..1 across the mouth
        axr = np.abs(xr)
        gm = float(gap.max())
        lx = float(self.light[0])
        side_light = 1.0 + 0.5 * lx * xr                       # the lit side of the mouth
        bh_ = y1 - y0

        def rows(top: np.ndarray, bottom: np.ndarray) -> slice:
            """The rows of the box between the highest of ``top`` and the lowest of ``bottom``."""
            lo = int(np.floor(float(top.min()))) - y0 - 2
            hi = int(np.ceil(float(bottom.max()))) - y0 + 3
            return slice(min(max(lo, 0), bh_), min(max(hi, 0), bh_))

        # ---- cavity: dark red-brown, lighter near the lips, darkest deep in the middle and in
        # the corners
        dist = np.maximum(np.minimum(ys - yu, yl - ys), 0)
        corner = _ss((axr - 0.55) / 0.4)
        depth = float(_ss(gm / (0.18 * E)) * (0.6 + 0.4 * rnd))
        wall = np.exp(-dist * (1.0 / np.maximum(0.27 * g, 0.8)))
        k = wall * ((1 - 0.6 * corner) * (1.0 - 0.4 * depth)) + 0.15 * (1 - depth)
        k = _c01(k)
        cf = 1 - 0.35 * corner                                 # (1, w)
        # colours are painted as planes (3, h, w): per-pixel weights broadcast along rows,
        # which is several times faster than along an interleaved colour axis
        core = self.cavity_core[:, None, None]
        col = (core * cf + ((self.cavity_wall[:, None, None] - core) * cf) * k).astype(np.float32)

        # ---- tongue: a rounded mass low in the mouth, lit from the front
        t_amt = _ss((g - 0.09 * E) / (0.1 * E)) * (1 - 0.7 * rnd)
        t_amt = np.maximum(t_amt, tongue_out * _ss((g - 0.02 * E) / (0.04 * E)))
        if float(t_amt.max()) > 0.01:
            hump = np.sqrt(_c01(1 - (xr / 0.78) ** 2))
            t_h = (np.minimum(0.32 * g, 0.09 * E) + tongue_out * 0.4 * g) * hump
            t_top = yl - t_h
            r = rows(t_top, yl)
            yr = ys[r]
            inside_t = (yr - t_top) / np.maximum(t_h, 0.5)          # 0 top .. 1 at the lower lip
            edge_w = np.maximum(0.8, 0.12 * t_h)
            tm = _ss((yr - t_top) / edge_w + 0.5) * t_amt
            lit = 0.78 + 0.22 * np.exp(-((inside_t - 0.3) / 0.25) ** 2)
            tcol = self.tongue[:, None, None] * ((lit * side_light) * (0.75 + 0.25 * hump))
            cr = col[:, r]
            cr += (tcol - cr) * tm

        # ---- lower teeth: only on wide openings, partly behind the lower lip
        lo_amt = _ss((g - 0.17 * E) / (0.08 * E)) * (1 - 0.6 * rnd)
        if float(lo_amt.max()) > 0.01:
            lh = np.minimum(0.05 * E, 0.2 * g)
            r = rows(yl - lh, yl)
            lb = (yl - ys[r]) / np.maximum(lh, 1e-3)
            lm_ = _ss((1 - lb) * 3) * _ss((0.55 - axr) / 0.2) * lo_amt
            lcol = self.teeth[:, None, None] * (0.62 * side_light * (0.85 + 0.15 * _c01(lb)))
            cr = col[:, r]
            cr += (lcol - cr) * lm_

        # ---- upper teeth: a row hanging from the upper jaw
        if teeth_line is not None:
            tl = np.asarray(teeth_line, np.float64)[:, :2]
            edge = _interp_x(xs, tl).astype(np.float32)[None, :]
            edge = edge + TEETH_BELOW_REST * E * _c01(1 - xr ** 2)
            edge = np.minimum(edge, yu + 0.5 * g)
        else:
            edge = yu + np.minimum(0.1 * E, 0.45 * g) * _c01(1 - 0.5 * xr ** 2)
        edge = edge - (edge - yu) * 0.55 * rnd                       # rounded lips cover them
        edge = np.minimum(edge, yl)
        th = np.maximum(edge - yu, 0.0)
        if float(th.max()) > 0.3:
            # individual teeth along the arch (per column)
            ax1 = np.clip(axr[0], 0, TOOTH_EDGES[-1] - 1e-3)
            k_t = np.clip(np.searchsorted(TOOTH_EDGES, ax1, side="right") - 1, 0, len(TOOTH_LIGHT) - 1)
            e0, e1 = TOOTH_EDGES[k_t], TOOTH_EDGES[k_t + 1]
            u = (ax1 - e0) / (e1 - e0)                               # 0..1 across the tooth
            tw = (e1 - e0) * half                                    # tooth width (px)
            seam = np.minimum(u, 1 - u) * tw                          # px to the nearest seam
            seam_dark = 1 - 0.45 * np.exp(-seam / np.maximum(0.7, 0.07 * tw))
            tooth = k_t + 5 * (xr[0] > 0)                           # which tooth, both sides
            th1 = th[0] * TOOTH_LENGTH[tooth]
            # incisal edge: each tooth rounded at its corners (small notches between teeth)
            notch = _c01((np.abs(2 * u - 1) - 0.55) / 0.45) ** 2 * np.minimum(0.18 * tw, 0.5 * th1)
            t_edge = (yu[0] + th1 - notch).astype(np.float32)[None, :]
            r = rows(yu, t_edge)
            yr = ys[r]
            tb = (yr - yu) / np.maximum(t_edge - yu, 1e-3)           # 0 at the lip .. 1 at the edge
            aa = max(0.7, 0.5 * sig)
            band = _ss((t_edge - yr) / aa + 0.5) * _ss((yr - yu) / aa + 0.5)
            if self.teeth_tex is not None:
                tex = self.teeth_tex
                th_, tw_ = tex.shape[:2]
                sx = ((xr + 1) * 0.5 * (tw_ - 1)).astype(np.float32)
                sy = (_c01(tb) * (th_ - 1)).astype(np.float32)
                sx, sy = np.broadcast_to(sx, tb.shape), np.ascontiguousarray(sy)
                tcol = cv2.remap(tex, np.ascontiguousarray(sx), sy, cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
                tcol = np.stack(cv2.split(tcol)) * (side_light * (0.85 + 0.15 * _ss(tb * 2.5)))
            else:
                row = (TOOTH_LIGHT[k_t] * TOOTH_SHADE[tooth] * _ss((0.95 - ax1) / 0.2) * seam_dark
                       * side_light[0] * (1 - 0.2 * rnd)).astype(np.float32)[None, :]
                # darker under the lip, a translucent (greyer) incisal edge
                vshade = (0.78 + 0.22 * _ss(tb * 2.5)) * (1 - 0.16 * _ss((tb - 0.75) * 4))
                tcol = self.teeth[:, None, None] * (row * vshade)
            tmask = band * _ss((0.88 - axr) / 0.2)
            cr = col[:, r]
            cr += (tcol - cr) * tmask

        # ---- the wet inner surfaces of the lips, wider as they part
        part = _ss(g / (0.06 * E))
        hu = np.minimum(0.12 * g, 0.02 * E) * part
        hl = np.minimum(0.12 * g, 0.02 * E) * part
        r = rows(yu, yu + np.maximum(hu, 0.5))
        up_s = _ss(1 - (ys[r] - yu) / np.maximum(hu, 0.5))
        mu = (self.mucosa * 0.75)[:, None, None]
        cr = col[:, r]
        cr += (mu - cr) * (0.85 * up_s)
        r = rows(yl - np.maximum(hl, 0.5), yl)
        lo_s = _ss(1 - (yl - ys[r]) / np.maximum(hl, 0.5))
        shine = np.exp(-(((yl - ys[r]) / np.maximum(hl, 0.5) - 0.55) / 0.25) ** 2) * lo_s
        ml = self.mucosa[:, None, None] * (1.0 + 0.25 * shine)
        cr = col[:, r]
        cr += (ml - cr) * (0.85 * lo_s)

        # ---- the photo's sharpness and grain
        if sig > 0.45:
            for c in col:
                cv2.GaussianBlur(c, (0, 0), sig, dst=c)
        if self.noise_sd > 0.3:
            gh, gw = self.grain.shape
            gy_i = np.arange(y0, y1) % gh
            gx_i = np.arange(x0, x1) % gw
            col += self.noise_sd * self.grain[gy_i][:, gx_i]
        # ---- the photo's own open mouth, where the photo shows its teeth: its pixels at its
        # opening, its upper teeth whole under the upper lip at any other
        if self.photo_mouth is not None:
            pcol, pa = self.photo_mouth.layer(xs, ys, yu, yl, xc, half)
            for c, pc in zip(col, cv2.split(pcol)):
                c += (pc - c) * pa
        # ---- composite through the anti-aliased mask
        roi = img[y0:y1, x0:x1]
        planes = []
        for c, o in zip(col, cv2.split(roi)):
            o = o.astype(np.float32)
            o += (c - o) * mask
            planes.append(o)
        roi[:] = np.clip(cv2.merge(planes) + 0.5, 0, 255).astype(np.uint8)


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
