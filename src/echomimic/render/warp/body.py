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
MAX_UPPER_DEG = 45.0
MAX_BEND_DEG = 110.0
MAX_HAND_DEG = 45.0
#: how much a forearm may shorten / lengthen in the image (its foreshortening changes)
STRETCH = (0.6, 1.6)

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


def _inv2(a: np.ndarray) -> np.ndarray:
    """Inverse of a 2x2 matrix (analytic: LAPACK's call overhead dominates at this size)."""
    det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    return np.array([[a[1, 1], -a[0, 1]], [-a[1, 0], a[0, 0]]]) / det


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
        return (max(abs(R[0, 0] - 1.0) + abs(R[1, 1] - 1.0) + abs(R[0, 1]) + abs(R[1, 0])
                    for R in self.rots) <= 1e-6
                and max(float(np.abs(p - t).max()) for p, t in zip(self.pivots, self.targets))
                <= 1e-4)

    def key(self) -> bytes:
        """Equal for poses whose drawn layers are indistinguishable (rotations to 1e-4,
        positions to 1/32 pixel): the layer of the previous frame is reused."""
        r = np.round(np.concatenate([np.ravel(R) for R in self.rots]) * 1e4)
        t = np.round(np.concatenate(self.targets) * 32.0)
        return np.concatenate([r, t]).astype(np.int64).tobytes()


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
        self.hand_pts = None
        if hand is not None and ok.sum() >= 5:
            pts = hand[ok, :2]
            self.hand_pts = pts
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
        # a forearm pointing at the camera may lengthen in the image up to a typical forearm's
        # length when it is lifted
        self.k_max = float(np.clip(0.55 * sw / max(self.L2, 1e-6), STRETCH[1], 3.0))
        self._turns = np.radians(np.arange(-90.0, 90.5, 1.0))
        self.reach = self.L1 + self.L2 + self.hand_len
        h, w = mask.shape
        r_up, r_fo = 0.13 * sw, 0.14 * sw
        # the shoulder and elbow points lie inside the arm; the sleeve's outer edge is further out
        # than its inner edge (which meets the torso): the upper arm's capsule is moved outwards
        neck = b[_J["neck"], :2] if b[_J["neck"], 2] > MIN_SCORE else 0.5 * (b[2, :2] + b[5, :2])
        out_dir = np.array([np.sign(self.S[0] - neck[0]) or 1.0, 0.0])
        self.cap_S, self.cap_E = self.S + out_dir * 0.06 * sw, self.E + out_dir * 0.06 * sw
        pad = int(math.ceil(max(r_up, self.hand_r) + 4))
        allp = np.array([self.S, self.E, self.W, self.tip, self.cap_S, self.cap_E] + (
            list(self.hand_pts) if self.hand_pts is not None else []))
        x0 = int(max(0, math.floor(allp[:, 0].min()) - pad))
        y0 = int(max(0, math.floor(allp[:, 1].min()) - pad))
        x1 = int(min(w, math.ceil(allp[:, 0].max()) + pad + 1))
        y1 = int(min(h, math.ceil(allp[:, 1].max()) + pad + 1))
        self.box = (x0, y0, x1, y1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        p = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
        t1, d1 = _seg_param(p, self.cap_S, self.cap_E)
        t2, d2 = _seg_param(p, self.E, self.W)
        t3, d3 = _seg_param(p, self.W, self.tip)
        # nearest part, and a parameter u along the chain (0 shoulder, 1 elbow, 2 wrist, 3 tip)
        dd = np.stack([d1 / r_up, d2 / r_fo, d3 / self.hand_r], 1)
        shape = (y1 - y0, x1 - x0)
        # the hand: the hull of its points (fingers spread beyond any capsule), slightly grown
        hull = np.zeros(shape, np.uint8)
        if self.hand_pts is not None:
            hp = np.round(self.hand_pts - [x0, y0]).astype(np.int32)
            cv2.fillConvexPoly(hull, cv2.convexHull(hp), 1)
            g = int(max(3, round(0.05 * sw)))
            hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
        in_hull = hull.ravel() > 0
        dd[in_hull, 2] = np.minimum(dd[in_hull, 2], 0.0)
        k = np.argmin(dd, 1)
        # a forearm folded back over the upper arm in the image (pointing at the camera) lies in
        # front of it: past the elbow joint, the forearm's capsule belongs to the forearm
        k = np.where((k == 0) & (d2 <= r_fo) & (t2 > 0.2), 1, k)
        u = np.choose(k, [t1, 1 + t2, 2 + t3])   # the hand blends into the forearm at the wrist
        inside = dd.min(1) <= 1.0
        # near the hand the person mask is soft (thin fingers): a lower threshold there, but not
        # the background around the hand (it would move with the hand as a halo)
        person = (mask[y0:y1, x0:x1] > 0.5) | ((hull > 0) & (mask[y0:y1, x0:x1] > 0.2))
        region = inside.reshape(shape) & person
        # the capsule must not reach above the shoulder into the neck and head
        region &= ~((u.reshape(shape) < 0.05) & (np.arange(y0, y1)[:, None] < self.S[1]))
        # the upper arm follows the torso at the shoulder and its bone at the elbow
        a = _smoothstep(u / 0.8)
        bb = _smoothstep((u - 0.85) / 0.3)
        c = _smoothstep((u - 1.75) / 0.35)
        wts = np.stack([1 - a, a * (1 - bb), a * bb * (1 - c), a * bb * c], 1).reshape(shape + (4,))
        self.weights = np.ascontiguousarray(wts.astype(np.float32))
        self.region = region
        self.region_f = region.astype(np.float32)
        self.wr = np.ascontiguousarray(np.dstack([self.weights[..., 1:], self.region_f]))
        # pixels that can move (more than a trace of arm weight), and those that move far
        # enough to uncover what is behind them (the forearm and hand; the upper arm turns
        # about the shoulder and mostly covers its own place)
        self.moving = region & (self.weights[..., 0] < 0.98)
        self.uncovering = region & ((self.weights[..., 2] + self.weights[..., 3]) > 0.2)
        st = 3
        ys, xs = np.nonzero(region[::st, ::st])
        self.samples = np.stack([xs * st + x0, ys * st + y0], 1).astype(np.float32)
        # per bone (torso, upper arm, forearm, hand): the hull of the pixels it moves; the
        # moved arm lies inside the union of the bones' moved hulls (a blend of rigid maps)
        self.hulls: list[np.ndarray | None] = []
        for kb in range(4):
            sel = (region & (self.weights[..., kb] > 1e-3)).astype(np.uint8)
            pts = cv2.findNonZero(sel)
            self.hulls.append(None if pts is None else
                              cv2.convexHull(pts).reshape(-1, 2).astype(np.float64) + [x0, y0])
        # what the moved arm samples: its colours and its region (alpha) in one image (the
        # colours are set by the layer, which holds the photo)
        self.rgba = np.zeros(shape + (4,), np.uint8)
        self.rgba[..., 3] = region.astype(np.uint8) * 255
        # where the inverse of a bone may land: the region, grown (Newton steps move it inside)
        gr = int(max(3, round(0.1 * sw)))
        self.near = cv2.dilate(region.astype(np.uint8),
                               cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gr + 1, 2 * gr + 1)))

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
        # upper arm: rigid, turned towards the elbow's target (eased) -- or, when the wrist's
        # target is then out of the forearm's reach, by the nearest turn that brings it in reach
        # (the wrist is what a gesture is about)
        th1 = _soft_clamp(_wrap(_angle(E_t - S2) - _angle(self.E - self.S)), math.radians(MAX_UPPER_DEG))
        k_lo, k_hi = STRETCH[0], self.k_max
        ths = th1 + self._turns
        ths = ths[np.abs(ths) <= math.radians(MAX_UPPER_DEG)]
        ue = self.E - self.S
        c, s_ = np.cos(ths), np.sin(ths)
        e2 = S2[None] + np.stack([c * ue[0] - s_ * ue[1], s_ * ue[0] + c * ue[1]], 1)
        dist = np.hypot(*(W_t[None] - e2).T)
        viol = np.maximum(k_lo * self.L2 - dist, 0) + np.maximum(dist - k_hi * self.L2, 0)
        cost = viol * 1e3 + np.abs(ths - th1) * self.L1
        th1 = float(ths[int(np.argmin(cost))]) if len(ths) else th1
        R1 = _rot(th1)
        E2 = S2 + R1 @ (self.E - self.S)
        # forearm: turned towards the wrist's target and stretched or shortened along its axis
        # (a forearm pointing at the camera looks short: lifting it lengthens it in the image)
        v0 = self.W - self.E
        v1 = W_t - E2
        bend = _soft_clamp(_wrap(_angle(v1) - _angle(v0) - th1), math.radians(MAX_BEND_DEG))
        th2 = th1 + bend
        k = float(np.hypot(*v1)) / max(self.L2, 1e-6)
        k = float(np.clip(k, k_lo, k_hi))
        u = v0 / max(self.L2, 1e-6)
        A2 = _rot(th2) @ (np.eye(2) + (k - 1.0) * np.outer(u, u))
        W2 = E2 + A2 @ v0
        # hand: rigid (the photo's hand shape), turning with the forearm; a short (foreshortened)
        # forearm turns it less, as its turn is then mostly a lift towards the camera
        f = min(1.0, self.L2 / (0.6 * self.sw))
        th3 = th1 + f * bend
        hx, hy = f"body.{hn}.middle_1.x", f"body.{hn}.middle_1.y"
        if hx in m or hy in m:
            hd = self.hand_dir + np.array([m.get(hx, 0.0), m.get(hy, 0.0)]) * sw - dW
            if np.hypot(*hd) > 1e-6 and np.hypot(*self.hand_dir) > 1e-6:
                turn = _wrap(_angle(hd) - _angle(self.hand_dir))
                th3 = th1 + f * bend + _soft_clamp(_wrap(turn - (th1 + f * bend)), math.radians(MAX_HAND_DEG))
        R3 = _rot(th3)
        return _Pose([R1, A2, R3], [self.S, self.E, self.W], [S2, E2, W2])


class BodyLayer:
    """Moves the arms of a half-body photo; :meth:`render_into` composites them into a frame."""

    def __init__(self, portrait: Portrait, arms: list[_Arm], sw: float):
        img = np.ascontiguousarray(portrait.image)
        self.photo = img
        H, W = img.shape[:2]
        self.arms = arms
        for arm in arms:
            x0, y0, x1, y1 = arm.box
            arm.rgba[..., :3] = img[y0:y1, x0:x1]
        self.sw = sw
        self._last: dict[str, tuple[bytes, tuple]] = {}
        self.step = int(max(3, round(sw / 30)))
        self._dirty: dict[int, list[tuple[int, int, int, int]]] = {}
        pm = np.asarray(portrait.person_mask) > 0.5
        self.person = pm
        env = pm.copy()
        for arm in arms:
            cv2.circle(env.view(np.uint8), (int(round(arm.S[0])), int(round(arm.S[1]))),
                       int(math.ceil(arm.reach * 1.05 + 0.1 * sw)), 1, -1)
        # until prepare() sees the clip's motion: everywhere an arm can reach
        self.envelope = env
        self.env_f = env.astype(np.float32)
        # the clean plate: the photo with the moving arm regions inpainted, once
        hole = np.zeros((H, W), np.uint8)
        for arm in arms:
            x0, y0, x1, y1 = arm.box
            hole[y0:y1, x0:x1] |= arm.uncovering.astype(np.uint8)
        hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        self.hole = hole.astype(bool)
        # per arm: the tight box of its part of the clean plate's area
        self._hole_box: dict[str, tuple[int, int, int, int]] = {}
        for arm in arms:
            x0, y0, x1, y1 = arm.box
            pts = cv2.findNonZero(self.hole[y0:y1, x0:x1].astype(np.uint8))
            if pts is not None:
                bx, by, bw, bh = cv2.boundingRect(pts)
                self._hole_box[arm.side] = (x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh)
        self.plate = self._inpaint(img, self.hole)
        self.stats: dict[str, float] = {"frames": 0, "moved_frames": 0, "disoccluded_px_max": 0,
                                        "disoccluded_px_sum": 0}

    def prepare(self, channels: list[str], values: np.ndarray) -> np.ndarray:
        """Fix the envelope for a clip before its first frame: the person mask, the clean
        plate's area, and every place the clip's motion takes an arm (grown by a small margin).
        Returns the envelope (H, W) bool."""
        H, W = self.photo.shape[:2]
        idx = [i for i, c in enumerate(channels) if c.startswith("body.")]
        env = self.person | self.hole
        if idx:
            sub = 4
            acc = np.zeros(((H + sub - 1) // sub, (W + sub - 1) // sub), np.uint8)
            names = [channels[i] for i in idx]
            vals = values[:, idx]
            seen: set[bytes] = set()
            # every other frame (and the last): neighbours differ by less than the margin
            rows = np.concatenate([vals[::2], vals[-1:]]) if len(vals) > 2 else vals
            for row in rows:
                key = np.round(row, 3).tobytes()
                if key in seen or not np.any(row):
                    continue
                seen.add(key)
                m = dict(zip(names, row.tolist()))
                for arm in self.arms:
                    pose = arm.solve(m)
                    if pose.is_rest():
                        continue
                    pts = arm.samples
                    f, inreg, _ = self._forward(arm, pose, pts)
                    f = f[inreg > 0.5]
                    ij = np.clip(np.round(f / sub).astype(np.int64), 0, [acc.shape[1] - 1, acc.shape[0] - 1])
                    acc[ij[:, 1], ij[:, 0]] = 1
            g = int(max(2, round((0.04 * self.sw + 2 * self.step + 4) / sub)))
            acc = cv2.dilate(acc, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
            env |= cv2.resize(acc, (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        self.envelope = env
        self.env_f = env.astype(np.float32)
        return env

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
        n = len(p)
        w = self._lookup(arm, p)
        inreg = w[:, 3]
        w = np.concatenate([1.0 - w[:, :3].sum(1, keepdims=True), w[:, :3]], 1)
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
    def _lookup(arm: _Arm, p: np.ndarray) -> np.ndarray:
        """The three moving bones' weights (the torso's is the rest of 1) and the region at the
        photo's points ``p`` (N, 2): (N, 4), one bilinear lookup."""
        x0, y0 = arm.box[0], arm.box[1]
        n = len(p)
        pad = (-n) % 1024
        pp = np.concatenate([p, np.full((pad, 2), -1e4)]) if pad else p
        mx = (pp[:, 0] - x0).astype(np.float32).reshape(-1, 1024)
        my = (pp[:, 1] - y0).astype(np.float32).reshape(-1, 1024)
        return cv2.remap(arm.wr, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0.0, 0.0, 0.0, 0.0)).reshape(-1, 4)[:n]

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
        """Bounding box (x0, y0, x1, y1) of the moved arm: each point of the arm moves to a
        weighted mean of its bones' rigid maps, so it lies in the union of the bones' moved
        hulls (the torso's unmoved)."""
        pts = []
        for k, hull in enumerate(arm.hulls):
            if hull is None:
                continue
            if k == 0:
                pts.append(hull)
            else:
                pts.append((hull - pose.pivots[k - 1]) @ pose.rots[k - 1].T + pose.targets[k - 1])
        allp = np.concatenate(pts)
        H, W = self.photo.shape[:2]
        return (int(max(0, math.floor(allp[:, 0].min()) - 1)),
                int(max(0, math.floor(allp[:, 1].min()) - 1)),
                int(min(W, math.ceil(allp[:, 0].max()) + 2)),
                int(min(H, math.ceil(allp[:, 1].max()) + 2)))

    def _layer(self, arm: _Arm, pose: _Pose) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
        """(box, colours, alpha) of the moved arm; the previous frame's when the arm's pose
        has not changed."""
        key = pose.key()
        last = self._last.get(arm.side)
        if last is not None and last[0] == key:
            return last[1]
        bx0, by0, bx1, by1 = self._dest_box(arm, pose)
        g = self.step
        # a coarse grid of nodes at the centres of g x g cells: bilinear upsampling of the
        # node values to the cells' pixels is then exactly cv2.resize (no map to read)
        nx, ny = -(-(bx1 - bx0) // g), -(-(by1 - by0) // g)
        off = (g - 1) / 2.0
        gx, gy = np.meshgrid(bx0 + off + np.arange(nx) * g, by0 + off + np.arange(ny) * g)
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
            pk = (q - tgt) @ _inv2(R).T + piv           # inverse of p -> R (p - piv) + tgt
            inb = np.flatnonzero((pk[:, 0] >= ax0) & (pk[:, 0] < ax1) & (pk[:, 1] >= ay0) & (pk[:, 1] < ay1))
            if len(inb):   # only where the arm can be (Newton steps move a guess a little)
                ij = np.minimum(pk[inb].astype(np.int64) - [ax0, ay0], [ax1 - ax0 - 1, ay1 - ay0 - 1])
                inb = inb[arm.near[ij[:, 1], ij[:, 0]] > 0]
            cand.append(pk[inb])
            owner.append(np.column_stack([np.full(len(inb), k), inb]))
        P = np.concatenate(cand).astype(np.float32)
        own = np.concatenate(owner)
        Q = q[own[:, 1]].astype(np.float32)
        best_p = q.astype(np.float32)
        chosen = np.zeros(n, bool)
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
            chosen[qi] = valid[order]
        H, W = self.photo.shape[:2]
        bx1, by1 = min(W, bx0 + nx * g), min(H, by0 + ny * g)
        h, w = by1 - by0, bx1 - bx0
        grid = best_p.reshape(ny, nx, 2) - np.float32([ax0, ay0])
        okg = chosen.reshape(ny, nx).astype(np.float32)
        mxy = cv2.resize(grid, (nx * g, ny * g), interpolation=cv2.INTER_LINEAR)
        if mxy.shape[:2] != (h, w):             # the last cells hang over the image's edge
            mxy = np.ascontiguousarray(mxy[:h, :w])
        # alpha: the arm's region where it lands, faded out towards nodes without a valid
        # inverse
        rgba = cv2.remap(arm.rgba, mxy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0, 0))
        col = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
        alpha = rgba[..., 3].astype(np.float32)
        alpha *= np.float32(1.0 / 255.0)
        okf = cv2.resize(okg, (nx * g, ny * g), interpolation=cv2.INTER_LINEAR)[:h, :w]
        alpha *= np.clip((okf - 0.5) * 4.0 + 0.5, 0.0, 1.0)
        alpha *= self.env_f[by0:by1, bx0:bx1]
        out = ((bx0, by0, bx1, by1), col, alpha)
        self._last[arm.side] = (key, out)
        return out

    def restore(self, frame: np.ndarray) -> None:
        """Put the photo back where this layer drew into ``frame`` last time (frame buffers are
        reused: they must hold the photo wherever the next frame does not draw)."""
        boxes = self._dirty.pop(id(frame), None)
        if boxes:
            for x0, y0, x1, y1 in boxes:
                frame[y0:y1, x0:x1] = self.photo[y0:y1, x0:x1]

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
        layers = [self._layer(arm, pose) for arm, pose in moving]
        hole_boxes = [self._hole_box[arm.side] for arm, _ in moving if arm.side in self._hole_box]
        # uncovered: the clean plate where a moving arm was; then the arms over it
        for x0, y0, x1, y1 in hole_boxes:
            np.copyto(frame[y0:y1, x0:x1], self.plate[y0:y1, x0:x1],
                      where=self.hole[y0:y1, x0:x1, None])
        for (bx0, by0, bx1, by1), col, alpha in layers:
            # where alpha is 0 the blend gives the frame's pixel back exactly
            dst = frame[by0:by1, bx0:bx1]
            dst[...] = cv2.blendLinear(col, dst, alpha, 1.0 - alpha)
        # disoccluded: plate pixels no arm covers
        hole_px = 0
        for x0, y0, x1, y1 in hole_boxes:
            open_ = self.hole[y0:y1, x0:x1].copy()
            for (bx0, by0, bx1, by1), _, alpha in layers:
                ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
                if ix1 > ix0 and iy1 > iy0:
                    open_[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] &= alpha[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0] <= 0.5
            hole_px += int(np.count_nonzero(open_))
        self._dirty[id(frame)] = [arm.box for arm, _ in moving] + [box for box, _, _ in layers]
        if len(self._dirty) > 256:
            self._dirty.clear()
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
