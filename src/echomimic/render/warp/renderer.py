"""The warp renderer: moves the person's own pixels, driven by a MotionTrack.

How a frame is made:

1. The rig turns the frame's motion (head pose, blendshapes) into new positions of the 478
   face-mesh points, of rings of points around the face that carry hair and neck with the head,
   of points on the torso (breathing) and of fixed anchors.
2. The displacements are interpolated over a grid (piecewise-linearly on MediaPipe's face
   tessellation, which leaves the mouth open, plus a triangulation of the surroundings), and
   multiplied by a weight that falls to zero at the edge of the dilated person mask.
3. That forward field is inverted by fixed-point iteration into a backward map (coarse over the
   head, full resolution around the mouth), the eyelids edit the map analytically, and the rest
   image is sampled once with ``cv2.remap``.
4. The inside of the mouth is painted between the moved inner lips.
5. Outside the dilated person mask the frame is the photo, bit for bit.

The margin of the dilated mask is fixed before rendering (from the face size), never from the
motion, and the head motion is eased so that it never pushes the person past it.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import Delaunay

from ...types import Persona, Portrait
from .features import EyeLids, MouthInterior, refine_inner_lips
from .rig import (
    BROW_L_LOWER, BROW_R_LOWER, EYE_L_LOWER, EYE_L_UPPER, EYE_R_LOWER, EYE_R_UPPER, FACE_OVAL, LOWER_INNER, LOWER_OUTER,
    UPPER_INNER, UPPER_OUTER, FaceFrame, Rig, face_triangles, smoothstep,
)


def _raster_ids(shape: tuple[int, int], pts: np.ndarray, tris: np.ndarray, start: int,
                ids: np.ndarray) -> None:
    """Draw triangle ids (start + k) into ``ids`` (later triangles overwrite earlier ones)."""
    p = np.round(pts * 4).astype(np.int32)
    for k, t in enumerate(tris):
        cv2.fillConvexPoly(ids, p[t], int(start + k), lineType=cv2.LINE_8, shift=2)


def _barycentric_matrix(q: np.ndarray, tri_of_q: np.ndarray, pts: np.ndarray, tris: np.ndarray,
                        n_ctrl: int, weight: np.ndarray | None = None) -> csr_matrix:
    """Sparse (len(q), n_ctrl) matrix of barycentric weights of points ``q`` in their triangles."""
    t = tris[tri_of_q]
    a, b, c = pts[t[:, 0]], pts[t[:, 1]], pts[t[:, 2]]
    v0, v1, v2 = b - a, c - a, q - a
    d00 = (v0 * v0).sum(1)
    d01 = (v0 * v1).sum(1)
    d11 = (v1 * v1).sum(1)
    d20 = (v2 * v0).sum(1)
    d21 = (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    ok = np.abs(den) > 1e-9
    den = np.where(ok, den, 1.0)
    wb = np.where(ok, (d11 * d20 - d01 * d21) / den, 0.0)
    wc = np.where(ok, (d00 * d21 - d01 * d20) / den, 0.0)
    wa = 1.0 - wb - wc
    # degenerate triangles: nearest vertex
    wa = np.where(ok, wa, 1.0)
    w = np.stack([wa, wb, wc], 1)
    # points rasterized into a neighbouring (or sliver) triangle: project into it
    w = np.clip(w, 0.0, None)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-9)
    if weight is not None:
        w = w * weight[:, None]
    rows = np.repeat(np.arange(len(q)), 3)
    return csr_matrix((w.ravel(), (rows, t.ravel())), shape=(len(q), n_ctrl))


def exact_warp(img: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Piecewise-affine warp of ``img`` moving triangle ``src[t]`` onto ``dst[t]`` (pixels).

    Pixels not covered by any destination triangle keep their value. Used once per clip (for
    example to close a mouth that is open in the photo), not per frame.
    """
    h, w = img.shape[:2]
    x0 = max(0, int(np.floor(min(src[:, 0].min(), dst[:, 0].min()))) - 2)
    y0 = max(0, int(np.floor(min(src[:, 1].min(), dst[:, 1].min()))) - 2)
    x1 = min(w, int(np.ceil(max(src[:, 0].max(), dst[:, 0].max()))) + 3)
    y1 = min(h, int(np.ceil(max(src[:, 1].max(), dst[:, 1].max()))) + 3)
    ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
    _raster_ids(ids.shape, dst[:, :2] - [x0, y0], tris, 0, ids)
    yy, xx = np.nonzero(ids >= 0)
    if len(yy) == 0:
        return img.copy()
    tid = ids[yy, xx]
    # backward affine of each triangle: dst -> src
    A = np.zeros((len(tris), 2, 3))
    for k, t in enumerate(tris):
        d3 = dst[t, :2].astype(np.float32)
        s3 = src[t, :2].astype(np.float32)
        if abs(np.cross(d3[1] - d3[0], d3[2] - d3[0])) < 1e-6:
            continue
        A[k] = cv2.getAffineTransform(d3, s3)
    px, py = xx + x0, yy + y0
    mx = (A[tid, 0, 0] * px + A[tid, 0, 1] * py + A[tid, 0, 2]).astype(np.float32)
    my = (A[tid, 1, 0] * px + A[tid, 1, 1] * py + A[tid, 1, 2]).astype(np.float32)
    mapx = np.tile(np.arange(x0, x1, dtype=np.float32), (y1 - y0, 1))
    mapy = np.tile(np.arange(y0, y1, dtype=np.float32)[:, None], (1, x1 - x0))
    mapx[yy, xx] = mx
    mapy[yy, xx] = my
    out = img.copy()
    out[y0:y1, x0:x1] = cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


#: share of a photo's lip gap closed by the upper lip (the jaw and lower lip close the rest)
CLOSE_SPLIT = 0.1


class _Grid:
    """A regular grid of cell centres over a box of the ROI and its interpolation matrix.

    Fields on the grid are displacements; :meth:`upsample` turns them into per-pixel
    displacements with ``cv2.resize`` (cell-centred, float weights), so a zero field gives an
    exact identity map and the photo's pixels are copied, not resampled.
    """

    def __init__(self, x0: int, y0: int, x1: int, y1: int, step: int):
        self.x0, self.y0, self.step = x0, y0, step
        self.w, self.h = x1 - x0, y1 - y0
        self.nx, self.ny = -(-self.w // step), -(-self.h // step)
        c = (step - 1) / 2.0
        xs = x0 + np.arange(self.nx, dtype=np.float64) * step + c
        ys = y0 + np.arange(self.ny, dtype=np.float64) * step + c
        gx, gy = np.meshgrid(xs, ys)
        self.X = np.stack([gx, gy], -1).astype(np.float32)    # (ny, nx, 2)
        # the grid's origin at every cell (a whole array: a 2-vector broadcast over the last
        # axis makes NumPy's inner loops two elements long)
        self._origin = np.ascontiguousarray(
            np.broadcast_to(np.array([x0, y0], np.float32), self.X.shape))
        self.W: csr_matrix | None = None
        self.box = (x0, y0, x1, y1)

    def points(self) -> np.ndarray:
        return self.X.reshape(-1, 2).astype(np.float64)

    def forward(self, disp: np.ndarray) -> np.ndarray:
        return (self.W @ disp).astype(np.float32).reshape(self.ny, self.nx, 2)

    def _coords(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inv = 1.0 / self.step
        c = (self.step - 1) / 2.0
        return (B[..., 0] - self.x0 - c) * inv, (B[..., 1] - self.y0 - c) * inv

    def _map(self, B: np.ndarray) -> np.ndarray:
        """Grid coordinates of the positions ``B`` (..., 2) as one two-channel map: the same
        values as :meth:`_coords`, computed in place (``B`` is overwritten)."""
        B -= self._origin
        B -= np.float32((self.step - 1) / 2.0)
        B *= np.float32(1.0 / self.step)
        return B

    def sample(self, d: np.ndarray, B: np.ndarray) -> np.ndarray:
        gx, gy = self._coords(B)
        return cv2.remap(d, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def backward(self, d: np.ndarray, iterations: int = 5,
                 outer: tuple["_Grid", np.ndarray] | None = None) -> np.ndarray:
        """Backward displacement (ny, nx, 2) of the forward field ``d`` on this grid, by
        fixed-point iteration. ``outer`` (a coarser grid and its field) answers for positions
        outside this grid's box."""
        X = self.X
        dd = d
        G = np.empty_like(X)
        for _ in range(iterations):
            np.subtract(X, dd, out=G)
            B = G.copy() if outer is not None else None
            self._map(G)
            dd = cv2.remap(d, G, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if outer is not None:
                # positions outside this grid (0 <= g <= n - 1 fails): the outer grid answers
                inside = cv2.inRange(G, (0.0, 0.0), (float(self.nx - 1), float(self.ny - 1)))
                idx = np.flatnonzero(inside == 0)
                if len(idx):
                    flat = dd.reshape(-1, 2)
                    flat[idx] = outer[0].sample(outer[1], B.reshape(-1, 2)[idx][None])[0]
        return -dd

    def upsample(self, D: np.ndarray) -> np.ndarray:
        if self.step == 1:
            return D[: self.h, : self.w]
        full = cv2.resize(D, (self.nx * self.step, self.ny * self.step), interpolation=cv2.INTER_LINEAR)
        return full[: self.h, : self.w]


class WarpRenderer:
    """CPU renderer that warps the photo. ``render(m)`` takes a dict of channel values."""

    name = "warp"

    def __init__(self, portrait: Portrait, *, max_head_px: float | None = None,
                 persona: Persona | None = None):
        img = np.ascontiguousarray(portrait.image)
        self.photo = img
        H, W = img.shape[:2]
        lm = np.asarray(portrait.landmarks, np.float64)
        frame = FaceFrame(lm)
        E = frame.E
        self.E = E
        tris = face_triangles()
        self.tris = tris

        # ---- rest shape: a mouth that is open in the photo is closed once, exactly ----------
        lm = refine_inner_lips(img, lm, E)
        lm_src, lm_rest, self.closed_from_open = self._closed_mouth(lm, frame)
        rest = exact_warp(img, lm_src, lm_rest, tris) if self.closed_from_open else img
        self.rig = Rig(lm_rest)
        self.lm_rest = lm_rest

        # ---- region of interest and masks ----------------------------------------------------
        fx0, fy0 = lm_rest[:, 0].min(), lm_rest[:, 1].min()
        fx1, fy1 = lm_rest[:, 0].max(), lm_rest[:, 1].max()
        F = max(fx1 - fx0, fy1 - fy0)
        cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
        rx0, rx1 = int(max(0, cx - 1.25 * F)), int(min(W, cx + 1.25 * F))
        ry0, ry1 = int(max(0, cy - 1.35 * F)), int(min(H, cy + 1.45 * F))
        self.roi = (rx0, ry0, rx1, ry1)
        rw, rh = rx1 - rx0, ry1 - ry0
        self.margin = margin = int(max(4, round(0.30 * E)))
        self.max_head_px = float(max_head_px if max_head_px is not None else 0.8 * margin)
        pm = (np.asarray(portrait.person_mask) > 0.5).astype(np.uint8)
        oval = lm_rest[FACE_OVAL, :2]
        cv2.fillPoly(pm, [np.round(oval).astype(np.int32)], 1)
        # the displacement ramps from 0, a few grid cells inside the edge of the dilated mask, to
        # 1 a margin further in: cells that touch the edge carry exactly zero displacement, so
        # every pixel outside the mask is copied, never resampled
        gc = int(max(2, round(E / 28)))
        self.grid_step = gc
        guard = 2 * gc + 2
        # dilation by a disc of radius margin + guard (a distance transform: fast at any radius)
        dist_out = cv2.distanceTransform((pm == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dil = (dist_out <= margin + guard).astype(np.uint8)
        self.dilated_mask = dil.astype(bool)                    # full frame: what may change
        dil_roi = dil[ry0:ry1, rx0:rx1]
        padded = np.pad(dil_roi, 1)
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        self.falloff = smoothstep((dist - guard) / margin).astype(np.float32)
        self.rest_roi = rest[ry0:ry1, rx0:rx1].copy()   # ours: the lip line is drawn into it

        # ---- control points (ROI coordinates) ------------------------------------------------
        off = np.array([rx0, ry0, 0.0])
        mesh = lm_rest - off
        fc = mesh[FACE_OVAL, :2].mean(0)
        uv = frame.to_local(lm_rest[:, :2])
        v_chin = uv[152, 1]
        ring, ring_src, ring_decay = [], [], []
        for s, dec in ((1.22, 0.75), (1.5, 0.4), (1.85, 0.12)):
            for i in FACE_OVAL:
                p = fc + (mesh[i, :2] - fc) * s
                ring.append(p)
                ring_src.append(i)
                ring_decay.append(dec)
        ring = np.array(ring)
        ring_src, ring_decay = np.array(ring_src), np.array(ring_decay)
        # rings follow the jaw only under the chin (where the chin would fold into the neck);
        # beside the jaw they stay, so the background next to the neck is not dragged
        dir_loc = frame.to_local(lm_rest[ring_src, :2]) - frame.to_local(fc + off[:2])
        dir_y = dir_loc[:, 1] / np.maximum(np.hypot(dir_loc[:, 0], dir_loc[:, 1]), 1e-6)
        ring_decay = ring_decay * smoothstep((dir_y - 0.6) / 0.35)
        ring_local = frame.to_local(ring + off[:2])
        below = ring_local[:, 1] - v_chin
        ring_w = np.clip(1.0 - below / 1.3, 0.0, 1.0)
        ring_w = smoothstep(ring_w)
        zpiv = self.rig.pivot[2]
        ring3 = np.column_stack([ring, np.full(len(ring), zpiv)])
        # torso points (breathing) and fixed anchors on the ROI border
        tor = []
        step_t = max(8.0, 0.35 * F)
        for yy in np.arange(0, rh, step_t):
            for xx in np.arange(0, rw, step_t):
                p = np.array([xx, yy])
                loc = frame.to_local(p + off[:2])
                if loc[1] > v_chin + 1.1 and np.min(np.hypot(*(ring - p).T)) > 0.5 * step_t:
                    tor.append(p)
        tor = np.array(tor).reshape(-1, 2)
        bstep = max(8.0, 0.3 * F)
        border = []
        for xx in np.arange(0, rw, bstep):
            border += [(xx, 0), (xx, rh - 1)]
        for yy in np.arange(0, rh, bstep):
            border += [(0, yy), (rw - 1, yy)]
        border += [(rw - 1, rh - 1)]
        border = np.array(border, np.float64)
        inside = lambda p: (p[:, 0] > 0) & (p[:, 0] < rw - 1) & (p[:, 1] > 0) & (p[:, 1] < rh - 1)  # noqa: E731
        keep_r = inside(ring)
        ring, ring3, ring_w = ring[keep_r], ring3[keep_r], ring_w[keep_r]
        self.ring_src, self.ring_decay = ring_src[keep_r], ring_decay[keep_r]
        tor = tor[inside(tor)] if len(tor) else tor
        n_mesh = len(mesh)
        self.n_mesh = n_mesh
        self.ring3 = ring3
        self.ring_w = ring_w
        ctrl2 = np.concatenate([mesh[:, :2], ring, tor, border])
        self.i_ring = slice(n_mesh, n_mesh + len(ring))
        self.i_tor = slice(n_mesh + len(ring), n_mesh + len(ring) + len(tor))
        self.n_ctrl = len(ctrl2)
        self.ctrl_src = ctrl2
        # breathing weight: torso fully, the head rides on it
        self.breath_amp = 0.010 * E

        # ---- triangles: surroundings (Delaunay), eye holes, face tessellation ---------------
        outer_idx = np.concatenate([np.array(FACE_OVAL), np.arange(n_mesh, self.n_ctrl)])
        dl = Delaunay(ctrl2[outer_idx])
        outer_tris = outer_idx[dl.simplices]
        eye_tris = []
        for up, lo in ((EYE_R_UPPER, EYE_R_LOWER), (EYE_L_UPPER, EYE_L_LOWER)):
            poly_idx = np.array(up + lo[::-1][1:-1])
            dt = Delaunay(ctrl2[poly_idx])
            poly = ctrl2[poly_idx].astype(np.float32)
            for s in dt.simplices:
                c = ctrl2[poly_idx[s]].mean(0)
                if cv2.pointPolygonTest(poly, (float(c[0]), float(c[1])), False) >= 0:
                    eye_tris.append(poly_idx[s])
        all_tris = np.concatenate([outer_tris, np.array(eye_tris).reshape(-1, 3), tris])
        ids = np.full((rh, rw), -1, np.int32)
        _raster_ids(ids.shape, ctrl2, all_tris, 0, ids)
        if (ids < 0).any():
            from scipy.ndimage import distance_transform_edt

            _, (iy, ix) = distance_transform_edt(ids < 0, return_indices=True)
            ids = ids[iy, ix]
        self.all_tris = all_tris

        # ---- grids ---------------------------------------------------------------------------
        gf = int(max(1, round(E / 75)))
        self.grid = _Grid(0, 0, rw, rh, gc)
        mu = lm_rest[UPPER_OUTER + LOWER_OUTER, :2] - off[:2]
        mcx = float(mu[:, 0].mean())
        mtop = float(mu[:, 1].min())
        mw = float(mu[:, 0].max() - mu[:, 0].min())
        fx0m = int(max(0, mcx - 0.75 * mw - 0.1 * E))
        fx1m = int(min(rw, mcx + 0.75 * mw + 0.1 * E))
        fy0m = int(max(0, mtop - 0.12 * E))
        fy1m = int(min(rh, mtop + 0.8 * E))
        self.fine = _Grid(fx0m, fy0m, fx1m, fy1m, gf)
        fh, fw = fy1m - fy0m, fx1m - fx0m
        feather = max(2.0, 0.04 * E)
        ay = np.minimum(np.arange(fh), np.arange(fh)[::-1])[:, None]
        ax = np.minimum(np.arange(fw), np.arange(fw)[::-1])[None, :]
        self.fine_alpha = smoothstep(np.minimum(ay, ax) / feather).astype(np.float32)
        # the same weight for both channels of a field, as a whole array (broadcasting a
        # trailing axis of length 2 makes NumPy's inner loops two elements long)
        self._fine_alpha2 = np.ascontiguousarray(np.repeat(self.fine_alpha[..., None], 2, -1))
        for g in (self.grid, self.fine):
            q = g.points()
            qi = np.clip(np.round(q).astype(int), [0, 0], [rw - 1, rh - 1])
            tq = ids[qi[:, 1], qi[:, 0]]
            wq = self.falloff[qi[:, 1], qi[:, 0]]
            g.W = _barycentric_matrix(q, tq, ctrl2, all_tris, self.n_ctrl, wq)

        # ---- eyes and mouth --------------------------------------------------------------------
        lr = lm_rest - off
        self.eye_r = EyeLids(lr[EYE_R_UPPER], lr[EYE_R_LOWER], lr[BROW_R_LOWER])
        self.eye_l = EyeLids(lr[EYE_L_UPPER], lr[EYE_L_LOWER], lr[BROW_L_LOWER])
        photo_lips = None
        if self.closed_from_open:                # the photo's own teeth, where it shows them
            photo_lips = (lm[UPPER_INNER, :2] - off[:2], lm[LOWER_INNER, :2] - off[:2])
        self.mouth = MouthInterior(self.rest_roi, lr[UPPER_OUTER + LOWER_OUTER], E,
                                   photo=img[ry0:ry1, rx0:rx1] if photo_lips else None,
                                   photo_lips=photo_lips)
        # where the lips meet at rest (3D): the upper teeth hang there and move with the head
        self.teeth_rest = 0.5 * (lm_rest[UPPER_INNER] + lm_rest[LOWER_INNER])
        # the soft shadow where the closed lips meet is part of the rest image: it moves with the
        # lips and becomes their inner edges when the mouth opens
        self.mouth.lip_line(self.rest_roi, lr[UPPER_INNER, :2], lr[LOWER_INNER, :2])
        if persona is not None:        # the person's own mouth interiors (an enrolled persona)
            from .atlas import AtlasInterior

            self.mouth = AtlasInterior(persona, self.rest_roi, lr, fallback=self.mouth)
        bx, by = np.meshgrid(np.arange(rw, dtype=np.float32), np.arange(rh, dtype=np.float32))
        self.base = np.ascontiguousarray(np.stack([bx, by], -1))

        # ---- body: arms and hands of a half-body photo (see body.py) ---------------------------
        from .body import BodyLayer

        self.body = BodyLayer.create(portrait)
        self._face_mask = self.dilated_mask
        if self.body is not None:
            self.dilated_mask = self._face_mask | self.body.envelope

    def prepare(self, track, **_: object) -> None:
        """Before the first frame: fix the body's envelope from the clip's motion (see body.py)."""
        if self.body is not None:
            self.dilated_mask = self._face_mask | self.body.prepare(list(track.channels), track.values)

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _closed_mouth(lm: np.ndarray, frame: FaceFrame) -> tuple[np.ndarray, np.ndarray, bool]:
        """(source points for the closing warp, landmarks with the lips closed, whether the
        photo's mouth was open). The source inner-lip points are inset by a pixel or two so the
        soft transition between lip and teeth is left behind rather than stretched."""
        uv = frame.to_local(lm[:, :2])
        ui, li = np.array(UPPER_INNER[1:-1]), np.array(LOWER_INNER[1:-1])
        gaps = uv[li, 1] - uv[ui, 1]
        if float(np.max(gaps)) <= 0.012:
            return lm.copy(), lm.copy(), False
        E = frame.E
        over = 0.6 / E
        d = np.zeros((len(lm), 2))
        d[ui, 1] += CLOSE_SPLIT * gaps + over
        d[li, 1] -= (1 - CLOSE_SPLIT) * gaps + over
        gc = float(np.max(gaps))
        rig = Rig(lm)
        uo, lo = np.array(UPPER_OUTER[1:-1]), np.array(LOWER_OUTER[1:-1])
        d[uo, 1] += 0.5 * CLOSE_SPLIT * gc * rig.bell[uo]
        d[lo, 1] -= 0.75 * (1 - CLOSE_SPLIT) * gc * rig.bell[lo]
        other = np.ones(len(lm), bool)
        other[list(ui) + list(li) + list(uo) + list(lo)] = False
        d[other, 1] -= 0.45 * (1 - CLOSE_SPLIT) * gc * rig.w_jaw[other]
        out = lm.copy()
        out[:, :2] += frame.vec_to_pixels(d)
        inset = float(np.clip(0.012 * E, 1.0, 3.0)) / E
        di = np.zeros((len(lm), 2))
        open_ = gaps > 2 * inset
        di[ui[open_], 1] -= inset
        di[li[open_], 1] += inset
        src = lm.copy()
        src[:, :2] += frame.vec_to_pixels(di)
        return src, out, True

    def _positions(self, m: dict[str, float]) -> np.ndarray:
        """Destination of every control point (ROI pixels)."""
        rig = self.rig
        off = np.array([self.roi[0], self.roi[1], 0.0])
        mesh = rig.lm.copy()
        expr = rig.frame.vec_to_pixels(rig.expression_uv(m))
        mesh[:, :2] += expr
        mesh = rig.apply_head(mesh, m)
        ring = self.ring3 + off
        ring[:, :2] += expr[self.ring_src] * self.ring_decay[:, None]
        ring = rig.apply_head(ring, m, self.ring_w)
        dst = self.ctrl_src.copy()
        dst[: self.n_mesh] = mesh[:, :2] - off[:2]
        dst[self.i_ring] = ring[:, :2] - off[:2]
        b = float(m.get("breath", 0.0))
        if b:
            dy = -b * self.breath_amp
            dst[: self.i_tor.stop, 1] += dy
        return dst

    def _silhouette_shift(self, m: dict[str, float]) -> float:
        ring = self.ring3 + np.array([self.roi[0], self.roi[1], 0.0])
        if not len(ring):
            return 0.0
        moved = self.rig.apply_head(ring, m, self.ring_w)
        return float(np.abs(moved[:, :2] - ring[:, :2]).max())

    def _limit_head(self, m: dict[str, float]) -> dict[str, float]:
        """Eases head motion so that the silhouette never moves more than ``max_head_px``.

        Turns (yaw, pitch) and the in-plane motion (roll, translation, scale) are eased apart, so
        a large turn does not also damp a tilt: each gets the silhouette budget on its own, and
        the in-plane part is then fitted into what is left.
        """
        keys = ("yaw", "pitch", "roll", "tx", "ty", "scale")
        if not any(k in m for k in keys):
            return m
        lim = self.max_head_px

        def ease(disp: float) -> float:
            if disp <= 0.6 * lim or disp == 0:
                return 1.0
            x = disp / lim
            return lim * (0.6 + 0.4 * np.tanh((x - 0.6) / 0.4)) / disp

        out = dict(m)
        turn = {k: float(m.get(k, 0.0)) for k in ("yaw", "pitch")}
        f = ease(self._silhouette_shift(turn))
        if f < 1.0:
            for k in ("yaw", "pitch"):
                if k in out:
                    out[k] = float(out[k]) * f
        f = ease(self._silhouette_shift(out))
        if f < 1.0:
            for k in ("roll", "tx", "ty"):
                if k in out:
                    out[k] = float(out[k]) * f
            if "scale" in out:
                out["scale"] = 1.0 + (float(out["scale"]) - 1.0) * f
        return out

    # ------------------------------------------------------------------------------------------
    def render_roi(self, m: dict[str, float], out: np.ndarray | None = None) -> np.ndarray:
        """The frame's region of interest (ROI pixels, RGB uint8), written into ``out`` (an
        array of the ROI's shape, e.g. the ROI of a frame buffer) when given."""
        m = self._limit_head(m)
        dst = self._positions(m)
        disp = dst - self.ctrl_src
        dc = self.grid.forward(disp)
        D = self.grid.upsample(self.grid.backward(dc))
        f = self.fine
        Df = f.upsample(f.backward(f.forward(disp), iterations=5, outer=(self.grid, dc)))
        fx0, fy0, fx1, fy1 = f.box
        sub = D[fy0:fy1, fx0:fx1]
        sub += (Df - sub) * self._fine_alpha2
        M = np.add(D, self.base, out=D)          # the sampling map, in D's buffer
        g = m.get
        # gaze in image terms: + moves the iris to the image's right / down. The subject's left
        # eye is on the image's right: looking "out" with it moves the iris right.
        look_l = float(g("eyeLookOutLeft", 0.0)) - float(g("eyeLookInLeft", 0.0))
        look_r = float(g("eyeLookInRight", 0.0)) - float(g("eyeLookOutRight", 0.0))
        down_l = float(g("eyeLookDownLeft", 0.0)) - float(g("eyeLookUpLeft", 0.0))
        down_r = float(g("eyeLookDownRight", 0.0)) - float(g("eyeLookUpRight", 0.0))
        reach = float(np.abs(dc).max()) + 3.0
        rh, rw = M.shape[:2]
        # eyes (subject's right eye is on the image's left), on a window around each eye
        for eye, side, lx, ly in ((self.eye_r, "Right", look_r, down_r),
                                  (self.eye_l, "Left", look_l, down_l)):
            bl = float(g("eyeBlink" + side, 0.0))
            sq = float(g("eyeSquint" + side, 0.0))
            wd = float(g("eyeWide" + side, 0.0))
            if max(bl, sq, wd, abs(lx), abs(ly)) < 1e-3:
                continue
            wx0 = max(0, int(eye.box_min[0] - reach))
            wy0 = max(0, int(eye.box_min[1] - reach))
            wx1 = min(rw, int(eye.box_max[0] + reach) + 1)
            wy1 = min(rh, int(eye.box_max[1] + reach) + 1)
            if wx1 > wx0 and wy1 > wy0:
                win = M[wy0:wy1, wx0:wx1]
                eye.remap(win[..., 0], win[..., 1], bl, sq, lx, ly, wd)
        # fixed-point maps: the same samples as the float map (remap rounds it to 1/32 pixel
        # either way), and cheaper to convert once than inside remap
        m1, m2 = cv2.convertMaps(M, None, cv2.CV_16SC2)
        out = cv2.remap(self.rest_roi, m1, m2, cv2.INTER_LINEAR, dst=out,
                        borderMode=cv2.BORDER_REPLICATE)
        up = dst[UPPER_INNER]
        lo = dst[LOWER_INNER]
        if isinstance(self.mouth, MouthInterior):
            self.mouth.paint(out, up, lo, teeth_line=self._teeth_line(m), motion=m)
        else:
            self.mouth.paint(out, up, lo)
        return out

    def _teeth_line(self, m: dict[str, float]) -> np.ndarray:
        """Where the upper teeth's edge is in this frame (ROI pixels): the resting line of the
        lips moved by the head (and breathing) only."""
        p = self.rig.apply_head(self.teeth_rest, m)[:, :2]
        p = p - [self.roi[0], self.roi[1]]
        b = float(m.get("breath", 0.0))
        if b:
            p[:, 1] -= b * self.breath_amp
        return p

    def render_into(self, m: dict[str, float], frame: np.ndarray) -> np.ndarray:
        """Render into ``frame``, a buffer that already holds the photo (only the region of
        interest is written). Returns ``frame``."""
        x0, y0, x1, y1 = self.roi
        if self.body is not None:
            self.body.restore(frame)
        view = frame[y0:y1, x0:x1]
        roi = self.render_roi(m, out=view)               # written in place ...
        if not np.may_share_memory(roi, view):
            view[...] = roi                              # ... unless OpenCV could not
        if self.body is not None:
            self.body.render_into(m, frame)
        return frame

    def changing_box(self) -> tuple[int, int, int, int]:
        """The box (x0, y0, x1, y1) outside which every frame equals the photo: the region of
        interest, and the body layer's envelope when there is one (after :meth:`prepare`)."""
        x0, y0, x1, y1 = self.roi
        if self.body is not None:
            env = np.asarray(self.body.envelope, bool)
            rows, cols = np.flatnonzero(env.any(1)), np.flatnonzero(env.any(0))
            if len(rows):
                x0, y0 = min(x0, int(cols[0])), min(y0, int(rows[0]))
                x1, y1 = max(x1, int(cols[-1]) + 1), max(y1, int(rows[-1]) + 1)
        return int(x0), int(y0), int(x1), int(y1)

    def render(self, m: dict[str, float]) -> np.ndarray:
        """A full frame (RGB uint8, the photo's size). Outside the dilated person mask it equals
        the photo exactly."""
        return self.render_into(m, self.photo.copy())
