"""Body skinning for the warp renderer: shoulders, arms and hands move with the person's own pixels.

How the arms move (per arm, each frame):

1. **Targets.** The body channels (``body.<joint>.x|y``, displacements in shoulder widths from
   the photo's skeleton) give target positions of the shoulder, elbow and wrist (and the hand's
   points). A two-bone inverse kinematics keeps the photo's upper-arm and forearm lengths: the
   wrist is pulled into reach, the elbow takes the bend nearest its target. Rotations beyond
   what moving the photo's pixels can show plausibly are eased (soft-clamped) to the nearest
   reachable pose: the upper arm turns at most :data:`MAX_UPPER_DEG` from its rest direction,
   the elbow bends at most :data:`MAX_BEND_DEG` more or less than in the photo, the hand turns
   at most :data:`MAX_HAND_DEG` against the forearm. Bones are rigid, so fingers keep the
   photo's hand shape.
2. **Skinning.** Before the first frame, the arm's region (the person mask within a capsule
   around shoulder → elbow → wrist → hand) gets linear-blend skinning weights to four bones —
   torso (static), upper arm, forearm and hand — that cross-fade along the arm (the first third
   of the upper arm blends into the shoulder, the elbow and the wrist over short spans).
3. **Inverse warp.** The forward map ``p → Σ w_b(p) T_b p`` is inverted on a coarse grid by
   trying each bone's inverse and refining it by fixed-point steps; where several parts of the
   arm land on one pixel, the one further along the arm wins (a hand in front of the forearm,
   an arm in front of the torso). The map is upsampled and the photo sampled once.
4. **Layers.** The pixels the arm leaves are filled from a *clean plate*: the photo with the
   moving arm regions inpainted (OpenCV's Telea method, once, at half resolution) from the
   surrounding background and clothing, so no pixel is ever a hole; the moved arm is laid over
   it. The disoccluded area of each frame is counted in :attr:`BodyLayer.stats`.

Everything outside the *envelope* — the person mask plus the discs each arm can reach from
its shoulder, fixed from the photo before the first frame, never from the motion — is left
untouched, so the "what never moves" guarantee of the warp renderer holds with a body too. A
frame whose body channels are all zero is not touched at all (bit-identical arms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ...types import BODY_JOINTS, HAND_JOINTS, Portrait

__all__ = ["BodyLayer", "MIN_SCORE", "MAX_UPPER_DEG", "MAX_BEND_DEG", "MAX_HAND_DEG"]

#: joints with a lower score are treated as not found
MIN_SCORE = 0.3
#: reachable-pose limits (degrees from the photo's pose), eased with a soft clamp
MAX_UPPER_DEG = 80.0
MAX_BEND_DEG = 110.0
MAX_HAND_DEG = 45.0

_J = {n: i for i, n in enumerate(BODY_JOINTS)}
_ARMS = {"r": ("r_shoulder", "r_elbow", "r_wrist", "r_hand", 1),
         "l": ("l_shoulder", "l_elbow", "l_wrist", "l_hand", 0)}
_MIDDLE_MCP = HAND_JOINTS.index("middle_1")


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _soft_clamp(x: float, limit: float) -> float:
    """x unchanged up to 60 % of ``limit``, then eased so that it never exceeds ``limit``."""
    a = abs(x)
    knee = 0.6 * limit
    if a <= knee:
        return x
    return math.copysign(knee + (limit - knee) * math.tanh((a - knee) / (limit - knee)), x)


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _angle(v: np.ndarray) -> float:
    return math.atan2(float(v[1]), float(v[0]))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _seg_param(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parameter in [0, 1], distance) of points ``p`` (N, 2) to segment a-b."""
    ab = b - a
    den = max(float(ab @ ab), 1e-9)
    t = np.clip(((p - a) @ ab) / den, 0.0, 1.0)
    d = np.hypot(*(p - (a + t[:, None] * ab)).T)
    return t, d


@dataclass
class _Pose:
    """Per-frame bone transforms of one arm: p -> R (p - pivot) + target."""

    rots: list[np.ndarray]      # upper, fore, hand: 2x2
    pivots: list[np.ndarray]    # rest pivots S, E, W
    targets: list[np.ndarray]   # moved pivots S', E', W'

    def is_rest(self) -> bool:
        return all(np.allclose(R, np.eye(2), atol=1e-6) for R in self.rots) and all(
            np.allclose(p, t, atol=1e-4) for p, t in zip(self.pivots, self.targets))


def skeleton_pixels(pose, shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(body (18, 3), hands (2, 21, 3)) in pixels of an image of ``shape`` from a
    :class:`~echomimic.analysis.body.BodyPose` (x, y as fractions of its width and height)."""
    body = np.asarray(getattr(pose, "body", None), np.float64)
    if body.shape != (18, 3):
        return None, None
    H, W = shape[:2]
    body = body.copy()
    body[:, 0] *= W
    body[:, 1] *= H
    hands = getattr(pose, "hands", None)
    if hands is not None:
        hands = np.asarray(hands, np.float64).copy()
        if hands.shape != (2, 21, 3):
            hands = None
        else:
            hands[..., 0] *= W
            hands[..., 1] *= H
    return body, hands


def shoulder_width(body: np.ndarray) -> float:
    """Shoulder-to-shoulder distance of a pixel skeleton (0 when a shoulder is missing)."""
    if body[2, 2] <= 0 or body[5, 2] <= 0:
        return 0.0
    return float(np.hypot(*(body[2, :2] - body[5, :2])))


class _Arm:
    """One arm's skinning rig, set up once from the photo."""

    def __init__(self, side: str, body: np.ndarray, hands: np.ndarray | None, mask: np.ndarray,
                 sw: float):
        sj, ej, wj, hand_name, hand_idx = _ARMS[side]
        b = body
        self.side = side
        self.names = (sj, ej, wj, hand_name)
        self.S, self.E, self.W = b[_J[sj], :2], b[_J[ej], :2], b[_J[wj], :2]
        self.sw = sw
        self.L1 = float(np.hypot(*(self.E - self.S)))
        self.L2 = float(np.hypot(*(self.W - self.E)))
        hand = hands[hand_idx] if hands is not None else None
        ok = hand[:, 2] > MIN_SCORE if hand is not None else np.zeros(0, bool)
        fdir = (self.W - self.E) / max(self.L2, 1e-6)
        if hand is not None and ok.sum() >= 5:
            pts = hand[ok, :2]
            far = pts[np.argmax(np.hypot(*(pts - self.W).T))]
            self.tip = far + (far - self.W) * 0.08
            self.hand_r = float(max(0.5 * np.hypot(*(pts - pts.mean(0)).T).max(), 0.09 * sw))
            mcp = hand[_MIDDLE_MCP, :2] if ok[_MIDDLE_MCP] else pts.mean(0)
            self.hand_dir = mcp - self.W
        else:
            self.tip = self.W + fdir * 0.5 * self.L2
            self.hand_r = 0.13 * sw
            self.hand_dir = fdir * 0.3 * self.L2
        self.hand_len = float(np.hypot(*(self.tip - self.W)))
        self.reach = self.L1 + self.L2 + self.hand_len
        h, w = mask.shape
        r_up, r_fo = 0.17 * sw, 0.14 * sw
        pad = int(math.ceil(max(r_up, self.hand_r) + 4))
        allp = np.array([self.S, self.E, self.W, self.tip])
        x0 = int(max(0, math.floor(allp[:, 0].min()) - pad))
        y0 = int(max(0, math.floor(allp[:, 1].min()) - pad))
        x1 = int(min(w, math.ceil(allp[:, 0].max()) + pad + 1))
        y1 = int(min(h, math.ceil(allp[:, 1].max()) + pad + 1))
        self.box = (x0, y0, x1, y1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        p = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
        t1, d1 = _seg_param(p, self.S, self.E)
        t2, d2 = _seg_param(p, self.E, self.W)
        t3, d3 = _seg_param(p, self.W, self.tip)
        # nearest part, and a parameter u along the chain (0 shoulder, 1 elbow, 2 wrist, 3 tip)
        dd = np.stack([d1 / r_up, d2 / r_fo, d3 / self.hand_r], 1)
        k = np.argmin(dd, 1)
        u = np.choose(k, [t1, 1 + t2, 2 + t3])
        inside = dd.min(1) <= 1.0
        shape = (y1 - y0, x1 - x0)
        person = mask[y0:y1, x0:x1] > 0.5
        region = inside.reshape(shape) & person
        # the capsule must not reach above the shoulder into the neck and head
        region &= ~((u.reshape(shape) < 0.05) & (np.arange(y0, y1)[:, None] < self.S[1]))
        a = _smoothstep(u / 0.35)
        bb = _smoothstep((u - 0.85) / 0.3)
        c = _smoothstep((u - 1.9) / 0.2)
        wts = np.stack([1 - a, a * (1 - bb), a * bb * (1 - c), a * bb * c], 1).reshape(shape + (4,))
        self.weights = np.ascontiguousarray(wts.astype(np.float32))
        self.region = region
        self.region_f = region.astype(np.float32)
        # pixels that can move (more than a trace of arm weight)
        self.moving = region & (self.weights[..., 0] < 0.98)

    # --------------------------------------------------------------------------------------
    def solve(self, m: dict[str, float]) -> _Pose:
        """Bone transforms for the frame's channel values (IK, eased to reachable poses)."""
        sw = self.sw
        sj, ej, wj, hn = self.names

        def d(name: str) -> np.ndarray:
            return np.array([m.get(f"body.{name}.x", 0.0), m.get(f"body.{name}.y", 0.0)]) * sw

        dS, dE, dW = d(sj), d(ej), d(wj)
        S2 = self.S + dS
        E_t, W_t = self.E + dE, self.W + dW
        # two-bone IK: wrist into reach, elbow on the side nearest its target
        L1, L2 = self.L1, self.L2
        v = W_t - S2
        dist = float(np.hypot(*v))
        lo, hi = abs(L1 - L2) + 1e-3, 0.999 * (L1 + L2)
        dist_c = min(max(dist, lo), hi)
        base = _angle(v) if dist > 1e-6 else _angle(self.W - self.S)
        cos_a = (L1 * L1 + dist_c * dist_c - L2 * L2) / (2 * L1 * dist_c)
        alpha = math.acos(max(-1.0, min(1.0, cos_a)))
        cands = [S2 + L1 * np.array([math.cos(base + s * alpha), math.sin(base + s * alpha)])
                 for s in (1.0, -1.0)]
        # which bend: nearest the elbow target, ties broken towards the photo's bend
        rest_bend = _wrap(_angle(self.W - self.E) - _angle(self.E - self.S))
        scores = []
        for ec in cands:
            bend = _wrap(_angle(W_t - ec) - _angle(ec - S2))
            scores.append(float(np.hypot(*(ec - E_t))) + 0.05 * sw * abs(_wrap(bend - rest_bend)))
        E2 = cands[int(np.argmin(scores))]
        th1 = _soft_clamp(_wrap(_angle(E2 - S2) - _angle(self.E - self.S)), math.radians(MAX_UPPER_DEG))
        R1 = _rot(th1)
        E2 = S2 + R1 @ (self.E - self.S)
        W_c = S2 + v * (dist_c / dist) if dist > 1e-6 else W_t      # the wrist, within reach
        fore_abs = _wrap(_angle(W_c - E2) - _angle(self.W - self.E))
        bend = _soft_clamp(_wrap(fore_abs - th1), math.radians(MAX_BEND_DEG))
        R2 = _rot(th1 + bend)
        W2 = E2 + R2 @ (self.W - self.E)
        # hand: turns with the forearm, plus the turn of its own points when they are driven
        hx, hy = f"body.{hn}.middle_1.x", f"body.{hn}.middle_1.y"
        th3 = th1 + bend
        if hx in m or hy in m:
            hd = self.hand_dir + np.array([m.get(hx, 0.0), m.get(hy, 0.0)]) * sw - dW
            if np.hypot(*hd) > 1e-6 and np.hypot(*self.hand_dir) > 1e-6:
                turn = _wrap(_angle(hd) - _angle(self.hand_dir))
                th3 = th1 + bend + _soft_clamp(_wrap(turn - (th1 + bend)), math.radians(MAX_HAND_DEG))
        R3 = _rot(th3)
        return _Pose([R1, R2, R3], [self.S, self.E, self.W], [S2, E2, W2])


class BodyLayer:
    """Moves the arms of a half-body photo; :meth:`render_into` composites them into a frame."""

    def __init__(self, portrait: Portrait, arms: list[_Arm], sw: float):
        img = np.ascontiguousarray(portrait.image)
        self.photo = img
        H, W = img.shape[:2]
        self.arms = arms
        self.sw = sw
        self.step = int(max(3, round(sw / 30)))
        pm = np.asarray(portrait.person_mask) > 0.5
        env = pm.copy()
        for arm in arms:
            cv2.circle(env.view(np.uint8), (int(round(arm.S[0])), int(round(arm.S[1]))),
                       int(math.ceil(arm.reach * 1.05 + 0.5 * sw)), 1, -1)
        self.envelope = env
        self.env_f = env.astype(np.float32)
        # the clean plate: the photo with the moving arm regions inpainted, once
        hole = np.zeros((H, W), np.uint8)
        for arm in arms:
            x0, y0, x1, y1 = arm.box
            hole[y0:y1, x0:x1] |= arm.moving.astype(np.uint8)
        hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        self.hole = hole.astype(bool)
        self.plate = self._inpaint(img, self.hole)
        self.stats: dict[str, float] = {"frames": 0, "moved_frames": 0, "disoccluded_px_max": 0,
                                        "disoccluded_px_sum": 0}

    @classmethod
    def create(cls, portrait: Portrait) -> "BodyLayer | None":
        """The body layer of a portrait whose skeleton shows at least one whole arm (shoulder,
        elbow and wrist found inside the frame); None otherwise."""
        pose = getattr(portrait, "body", None)
        if pose is None:
            return None
        b, hands = skeleton_pixels(pose, portrait.image.shape)
        if b is None:
            return None
        sw = shoulder_width(b)
        H, W = portrait.image.shape[:2]
        if sw < 8:
            return None

        def seen(name: str) -> bool:
            x, y, s = b[_J[name]]
            return s > MIN_SCORE and 0 <= x < W and 0 <= y < H

        mask = np.asarray(portrait.person_mask, np.float32)
        arms = []
        for side, (sj, ej, wj, _, _) in _ARMS.items():
            if seen(sj) and seen(ej) and seen(wj):
                arm = _Arm(side, b, hands, mask, sw)
                if arm.L1 > 0.1 * sw and arm.L2 > 0.1 * sw and arm.region.any():
                    arms.append(arm)
        return cls(portrait, arms, sw) if arms else None

    @staticmethod
    def _inpaint(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
        out = img.copy()
        if not hole.any():
            return out
        ys, xs = np.nonzero(hole)
        H, W = hole.shape
        pad = 16
        x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + pad + 1)
        y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + pad + 1)
        crop = img[y0:y1, x0:x1]
        hmask = hole[y0:y1, x0:x1].astype(np.uint8)
        small = cv2.resize(crop, ((x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2), interpolation=cv2.INTER_AREA)
        smask = cv2.resize(hmask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        smask = cv2.dilate(smask, np.ones((3, 3), np.uint8))
        filled = cv2.inpaint(small, smask, 6, cv2.INPAINT_TELEA)
        up = cv2.resize(filled, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        region = out[y0:y1, x0:x1]
        region[hmask > 0] = up[hmask > 0]
        return out

    # --------------------------------------------------------------------------------------
    def _forward(self, arm: _Arm, pose: _Pose, p: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Blended forward map of points ``p`` (N, 2), the in-region value at them, and the
        blended rotation (N, 2, 2) (the map's Jacobian, less the weights' gradient)."""
        x0, y0 = arm.box[0], arm.box[1]
        n = len(p)
        pad = (-n) % 1024
        pp = np.concatenate([p, np.full((pad, 2), -1e4)]) if pad else p
        mx = (pp[:, 0] - x0).astype(np.float32).reshape(-1, 1024)
        my = (pp[:, 1] - y0).astype(np.float32).reshape(-1, 1024)
        w = cv2.remap(arm.weights, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=(1.0, 0.0, 0.0, 0.0)).reshape(-1, 4)[:n]
        inreg = cv2.remap(arm.region_f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0).reshape(-1)[:n]
        out = w[:, :1] * p
        J = np.zeros((n, 2, 2), np.float32)
        J[:, 0, 0] = w[:, 0]
        J[:, 1, 1] = w[:, 0]
        for k in range(3):
            R, piv, tgt = pose.rots[k], pose.pivots[k], pose.targets[k]
            wk = w[:, k + 1:k + 2]
            out = out + wk * ((p - piv) @ R.T.astype(np.float32) + tgt.astype(np.float32))
            J += wk[:, :, None] * R.astype(np.float32)[None]
        return out, inreg, J

    @staticmethod
    def _newton(p: np.ndarray, q: np.ndarray, f: np.ndarray, J: np.ndarray) -> np.ndarray:
        r = q - f
        a, b, c, d = J[:, 0, 0], J[:, 0, 1], J[:, 1, 0], J[:, 1, 1]
        det = a * d - b * c
        ok = np.abs(det) > 0.05
        det = np.where(ok, det, 1.0)
        dx = np.where(ok, (d * r[:, 0] - b * r[:, 1]) / det, r[:, 0])
        dy = np.where(ok, (-c * r[:, 0] + a * r[:, 1]) / det, r[:, 1])
        return p + np.stack([dx, dy], 1)

    def _dest_box(self, arm: _Arm, pose: _Pose) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = arm.box
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
        pts = [corners]
        for k in range(3):
            pts.append((corners - pose.pivots[k]) @ pose.rots[k].T + pose.targets[k])
        allp = np.concatenate(pts)
        H, W = self.photo.shape[:2]
        return (int(max(0, math.floor(allp[:, 0].min()))), int(max(0, math.floor(allp[:, 1].min()))),
                int(min(W, math.ceil(allp[:, 0].max()) + 1)), int(min(H, math.ceil(allp[:, 1].max()) + 1)))

    def _layer(self, arm: _Arm, pose: _Pose) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
        """(box, colours, alpha) of the moved arm."""
        bx0, by0, bx1, by1 = self._dest_box(arm, pose)
        g = self.step
        nx, ny = -(-(bx1 - bx0) // g) + 1, -(-(by1 - by0) // g) + 1
        gx, gy = np.meshgrid(bx0 + np.arange(nx) * g, by0 + np.arange(ny) * g)
        q = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
        tol = np.float32(0.35 * g + 0.5)
        # candidates: the inverse of each moving bone (upper arm, forearm, hand); where several
        # are valid the one further along the arm wins, so the hand lies over the forearm. The
        # torso-weighted pixels of the arm do not move: the frame already holds them.
        n = len(q)
        ax0, ay0, ax1, ay1 = arm.box
        cand, owner = [], []
        for k in range(3):
            R, piv, tgt = pose.rots[k], pose.pivots[k], pose.targets[k]
            pk = (q - tgt) @ R + piv                   # inverse of p -> R (p - piv) + tgt
            inb = np.flatnonzero((pk[:, 0] >= ax0) & (pk[:, 0] < ax1) & (pk[:, 1] >= ay0) & (pk[:, 1] < ay1))
            cand.append(pk[inb])
            owner.append(np.column_stack([np.full(len(inb), k), inb]))
        P = np.concatenate(cand).astype(np.float32)
        own = np.concatenate(owner)
        Q = q[own[:, 1]].astype(np.float32)
        best_p = q.astype(np.float32).copy()
        chosen = np.zeros(n, bool)
        best_res = np.full(n, np.inf, np.float32)
        if len(P):
            f, inreg, J = self._forward(arm, pose, P)
            res = np.hypot(*(f - Q).T)
            # refine where the blend of bones makes the single-bone inverse inexact
            for _ in range(3):
                bad = np.flatnonzero((res >= 0.1) & (res < 4 * self.sw))
                if not len(bad):
                    break
                Pb = self._newton(P[bad], Q[bad], f[bad], J[bad])
                fb, ib, Jb = self._forward(arm, pose, Pb)
                P[bad], f[bad], inreg[bad], J[bad] = Pb, fb, ib, Jb
                res[bad] = np.hypot(*(fb - Q[bad]).T)
            valid = (res < tol) & (inreg > 0.5)
            # order so that for each grid point the last write is the preferred candidate:
            # invalid ones by decreasing residual first, then valid ones by bone
            order = np.lexsort((own[:, 0], np.where(valid, 0.0, -res), valid))
            qi = own[order, 1]
            best_p[qi] = P[order]
            best_res[qi] = res[order]
            chosen[qi] = valid[order]
        h, w = by1 - by0, bx1 - bx0
        P = best_p.reshape(ny, nx, 2).astype(np.float32)
        ok = (chosen & (best_res < tol)).reshape(ny, nx).astype(np.float32)
        # grid node j sits at pixel bx0 + j*g: upsample with node-aligned coordinates
        sx = (np.arange(w, dtype=np.float32) / g)[None, :].repeat(h, 0)
        sy = (np.arange(h, dtype=np.float32) / g)[:, None].repeat(w, 1)
        mapx = cv2.remap(P[..., 0], sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mapy = cv2.remap(P[..., 1], sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        okf = cv2.remap(ok, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x0, y0 = arm.box[0], arm.box[1]
        alpha = cv2.remap(arm.region_f, mapx - x0, mapy - y0, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        alpha *= np.clip((okf - 0.5) * 4.0 + 0.5, 0.0, 1.0)
        alpha *= self.env_f[by0:by1, bx0:bx1]
        col = cv2.remap(self.photo, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return (bx0, by0, bx1, by1), col, alpha

    def poses(self, m: dict[str, float]) -> list[_Pose]:
        return [arm.solve(m) for arm in self.arms]

    def render_into(self, m: dict[str, float], frame: np.ndarray) -> np.ndarray:
        """Composite the moved arms into ``frame`` (which holds the rest of the rendered frame)."""
        self.stats["frames"] += 1
        if not any(k.startswith("body.") and v != 0.0 for k, v in m.items()):
            return frame
        moving = [(arm, pose) for arm in self.arms if not (pose := arm.solve(m)).is_rest()]
        if not moving:
            return frame
        self.stats["moved_frames"] += 1
        layers = []
        for arm, pose in moving:
            layers.append(self._layer(arm, pose))
        # uncovered: the clean plate where a moving arm was; then the arms over it
        hole_px = 0
        for arm, _ in moving:
            x0, y0, x1, y1 = arm.box
            hmask = self.hole[y0:y1, x0:x1]
            frame[y0:y1, x0:x1][hmask] = self.plate[y0:y1, x0:x1][hmask]
        cover = np.zeros(self.hole.shape, bool)
        for (bx0, by0, bx1, by1), col, alpha in layers:
            dst = frame[by0:by1, bx0:bx1]
            a = alpha[..., None]
            blended = dst.astype(np.float32) * (1.0 - a) + col.astype(np.float32) * a
            sel = alpha > 0.0
            dst[sel] = np.clip(blended[sel] + 0.5, 0, 255).astype(np.uint8)
            cover[by0:by1, bx0:bx1] |= alpha > 0.5
        for arm, _ in moving:
            x0, y0, x1, y1 = arm.box
            hole_px += int((arm.moving & ~cover[y0:y1, x0:x1]).sum())
        self.stats["disoccluded_px_sum"] += hole_px
        self.stats["disoccluded_px_max"] = max(self.stats["disoccluded_px_max"], hole_px)
        self.last_disoccluded = hole_px
        return frame

    def report(self) -> dict[str, float]:
        """Per-clip figures: frames, frames with moving arms, disoccluded area (pixels filled
        from the clean plate: largest and mean per moving frame, and as a share of the photo)."""
        st = self.stats
        H, W = self.photo.shape[:2]
        moved = max(1, int(st["moved_frames"]))
        return {"frames": int(st["frames"]), "moved_frames": int(st["moved_frames"]),
                "disoccluded_px_max": int(st["disoccluded_px_max"]),
                "disoccluded_px_mean": float(st["disoccluded_px_sum"]) / moved,
                "disoccluded_share_max": float(st["disoccluded_px_max"]) / float(H * W),
                "envelope_share": float(self.envelope.mean())}

    def wrists(self, m: dict[str, float]) -> dict[str, np.ndarray]:
        """Where each animated wrist lands for the channel values ``m`` (pixels)."""
        return {arm.side: arm.solve(m).targets[2] for arm in self.arms}
