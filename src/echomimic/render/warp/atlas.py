"""The mouth interior from a persona's atlas of the person's real mouths.

:class:`AtlasInterior` has the same ``paint(img, upper, lower)`` call as
:class:`~echomimic.render.warp.features.MouthInterior`. For every frame it

1. measures the current mouth (opening = inner gap / inner width; shape = inner width / the
   photo's rest width);
2. weighs the atlas entries nearest in (opening, shape) with a Gaussian kernel (at most
   :data:`NEIGHBOURS` of them) and eases the weights over frames (:data:`EASE` per frame), so an
   interior never pops from one entry to another but cross-fades;
3. re-colours each entry for the photo: a per-channel gain that maps the lips around the entry
   onto the photo's lips (exposure and white balance), limited to 0.6x-1.6x;
4. blends the entries in the canonical mouth frame (:mod:`echomimic.persona.atlas`), shrinks the
   blend to about the mouth's size on the photo, and maps it into the current inner-lip contour
   (a mouth opened wider than its entries stretches only the middle rows, the cavity, so teeth
   keep their size), painting a little over the lip edges (:data:`EDGE_PAD`) with an alpha that
   falls off over about a pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...persona.atlas import MouthAxes, lip_colour
from ...types import Persona

__all__ = ["AtlasInterior", "NEIGHBOURS", "EASE"]

#: atlas entries blended at once
NEIGHBOURS = 2
#: share of the way the blend weights move towards the current mouth's each frame
EASE = 0.45
#: kernel widths in opening and shape
SIGMA_OPENING, SIGMA_SHAPE = 0.03, 0.08
#: range of the per-channel colour gain
GAIN_RANGE = (0.6, 1.6)
#: how far (share of the mouth width) the interior is painted over the inner lip edges
EDGE_PAD = 0.02


class AtlasInterior:
    """Paints the person's own mouth interiors between the inner lips.

    Args:
        persona: the enrolled persona.
        rest_image: the photo (region) the renderer draws from, mouth closed.
        landmarks: the rest landmarks (478, 2+) in ``rest_image``'s pixels.
        fallback: an object with ``lip_line`` (the closed-lip shadow), kept from the photo-only
            interior.
    """

    def __init__(self, persona: Persona, rest_image: np.ndarray, landmarks: np.ndarray,
                 fallback: object | None = None):
        from ...persona.atlas import inner_contours

        self.persona = persona
        self.fallback = fallback
        lm = np.asarray(landmarks, np.float64)
        up, lo = inner_contours(lm)
        self.rest_width = max(2.0 * MouthAxes(up, lo).half, 1.0)
        target = lip_colour(rest_image, lm).astype(np.float32)
        src = np.asarray(persona.atlas_lip, np.float32)
        gain = (target[None, :] + 4.0) / (src + 4.0)
        gain = np.clip(gain, *GAIN_RANGE)
        # re-coloured entries, float32, one row each (a blend is one small matrix product)
        tex = np.clip(persona.atlas.astype(np.float32) * gain[:, None, None, :], 0, 255)
        self.tex = np.ascontiguousarray(tex.reshape(len(tex), -1))
        self.opening = np.asarray(persona.atlas_opening, np.float64)
        self.shape = np.asarray(persona.atlas_shape, np.float64)
        self.n = len(self.opening)
        self.H, self.W = persona.atlas.shape[1:3]
        self.weights: np.ndarray | None = None

    def lip_line(self, *args, **kwargs) -> None:
        if self.fallback is not None and hasattr(self.fallback, "lip_line"):
            self.fallback.lip_line(*args, **kwargs)

    def reset(self) -> None:
        """Forget the eased weights (a new clip)."""
        self.weights = None

    def _target_weights(self, opening: float, shape: float) -> np.ndarray:
        d2 = ((self.opening - opening) / SIGMA_OPENING) ** 2 + ((self.shape - shape) / SIGMA_SHAPE) ** 2
        w = np.exp(-0.5 * (d2 - d2.min()))
        if self.n > NEIGHBOURS:
            w[np.argsort(d2)[NEIGHBOURS:]] = 0.0
        return w / w.sum()

    def paint(self, img: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
        """``upper``/``lower``: inner-lip contours (corner to corner, same corners), pixels in
        ``img``'s coordinates. Paints in place."""
        from .features import _chaikin, pointed_corners

        # the entries are chosen by the mesh's own contours (as enrollment measured them) ...
        ax = MouthAxes(upper, lower)
        width = 2 * ax.half
        gap = ax.gap()
        w_t = self._target_weights(gap / width, width / self.rest_width)
        # ... and painted into smoothed ones whose corners come to a point
        upper, lower = pointed_corners(_chaikin(np.asarray(upper, np.float64)[:, :2]),
                                       _chaikin(np.asarray(lower, np.float64)[:, :2]))
        ax = MouthAxes(upper, lower)
        self.weights = w_t if self.weights is None else self.weights + EASE * (w_t - self.weights)
        w = self.weights
        if gap < 0.35 or width < 2:
            return
        h_img, w_img = img.shape[:2]
        pts = np.concatenate([np.asarray(upper, np.float64)[:, :2], np.asarray(lower, np.float64)[:, :2]])
        x0 = max(0, int(np.floor(pts[:, 0].min())) - 1)
        y0 = max(0, int(np.floor(pts[:, 1].min())) - 1)
        x1 = min(w_img, int(np.ceil(pts[:, 0].max())) + 2)
        y1 = min(h_img, int(np.ceil(pts[:, 1].max())) + 2)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        # the blend, in the canonical frame, at about the size it will have on the photo
        idx = np.flatnonzero(w > 1e-3)
        ww = w[idx] / w[idx].sum()
        blend = self.tex[idx[0]] * np.float32(ww[0])     # a few entries: no BLAS call
        for i, wi in zip(idx[1:], ww[1:]):
            blend += self.tex[i] * np.float32(wi)
        blend = blend.reshape(self.H, self.W, 3)
        tw = int(np.clip(round(width), 4, self.W))
        th = int(np.clip(round(gap), 2, self.H))
        if tw < self.W or th < self.H:
            blend = cv2.resize(blend, (tw, th), interpolation=cv2.INTER_AREA)
        bh, bw = blend.shape[:2]
        # canonical coordinates of every pixel of the box
        xs = np.arange(x0, x1, dtype=np.float64)[None, :]
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        rx, ry = xs - ax.origin[0], ys - ax.origin[1]
        s = rx * ax.a[0] + ry * ax.a[1]
        v = rx * ax.n[0] + ry * ax.n[1]
        vu, vl = ax.lips_at(s.ravel())
        vu, vl = vu.reshape(s.shape), vl.reshape(s.shape)
        g = vl - vu
        t = (v - vu) / np.maximum(g, 1e-3)
        u = s / ax.half
        # alpha: inside the lips, a little over their edges (the interior's own lip edge covers
        # the closed-lip shadow), falling off over about a pixel; none where the lips touch
        pad = EDGE_PAD * width
        a_t = np.clip(np.minimum(v - vu, vl - v) + 0.5 + pad, 0.0, 1.0)
        a_u = np.clip((ax.half - np.abs(s)) + 0.5, 0.0, 1.0)
        alpha = (a_t * a_u * np.clip(g / (1.0 + 2 * pad), 0.0, 1.0)).astype(np.float32)
        if float(alpha.max()) <= 0:
            return
        # rows: a mouth opened wider than the entries keeps the lip-side parts (teeth, lip
        # insides) at their size and stretches only the middle (the cavity)
        r = float(np.dot(ww, self.opening[idx])) * width / gap
        t = np.clip(t, 0.0, 1.0)
        if r < 0.9:
            t = np.where(t < 0.5 * r, t / r, np.where(t > 1 - 0.5 * r, 1 - (1 - t) / r, 0.5))
            # the stretched middle is the back of the mouth: smooth across, and darker the
            # further it is stretched
            rows = (np.arange(bh, dtype=np.float32) - 0.5 * (bh - 1)) / max(0.12 * bh, 1.0)
            wrow = np.exp(-rows ** 2)[:, None, None]
            back = cv2.GaussianBlur(blend, (0, 0), sigmaX=max(1.0, bw / 10), sigmaY=0.5)
            back *= np.float32(0.5 + 0.5 * r)
            blend = blend * (1 - wrow) + back * wrow
        mx = ((u + 1) * 0.5 * bw - 0.5).astype(np.float32)
        my = (t * bh - 0.5).astype(np.float32)
        col = cv2.remap(blend, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # the photo's own open mouth, when the photo shows one and this mouth is near its shape
        pm = getattr(self.fallback, "photo_mouth", None)
        if pm is not None:
            up = np.asarray(upper, np.float64)[:, :2]
            lo = np.asarray(lower, np.float64)[:, :2]
            xc = float(0.5 * (up[0, 0] + up[-1, 0]))
            half_x = float(max(0.5 * abs(up[-1, 0] - up[0, 0]), 1.0))
            near = pm.nearness(gap, half_x)
            if near > 0.01:
                from .features import _interp_x

                xs1 = np.arange(x0, x1, dtype=np.float32)
                yu1 = _interp_x(xs1, up).astype(np.float32)[None, :]
                yl1 = np.maximum(_interp_x(xs1, lo).astype(np.float32)[None, :], yu1)
                pcol, pa = pm.layer(xs1, np.arange(y0, y1, dtype=np.float32)[:, None], yu1, yl1,
                                    xc, half_x)
                pa *= near
                col += (pcol - col) * cv2.merge([pa, pa, pa])
        # (weights repeated over the colour axis: NumPy broadcasting over an interleaved axis of
        # length 3 is several times slower)
        roi = img[y0:y1, x0:x1]
        out = roi.astype(np.float32)
        out += (col - out) * cv2.merge([alpha, alpha, alpha])
        roi[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
