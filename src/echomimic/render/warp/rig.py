"""The rig: from motion coefficients to landmark positions on this face's own geometry.

All expression displacements are defined in a face-local frame: ``u`` along the line through the
outer eye corners (image left to right), ``v`` perpendicular to it, pointing down the face, both
in units of the outer eye-corner distance ``E``. Head pose then rotates the displaced 3D points
about a pivot behind the face and projects them orthographically.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# --- landmark groups (MediaPipe face mesh indices) -------------------------------------------
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
MOUTH_CORNERS = [61, 291, 78, 308]

# eyes: "R" is the subject's right eye (image left), "L" the subject's left eye (image right)
EYE_R_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
EYE_R_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
EYE_L_UPPER = [263, 466, 388, 387, 386, 385, 384, 398, 362]
EYE_L_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
IRIS_R = [468, 469, 470, 471, 472]
IRIS_L = [473, 474, 475, 476, 477]

BROW_R_INNER, BROW_R_OUTER, BROW_R_MID = 107, 70, 105
BROW_R_LOWER = [46, 53, 52, 65, 55]
BROW_L_LOWER = [276, 283, 282, 295, 285]
BROW_L_INNER, BROW_L_OUTER, BROW_L_MID = 336, 300, 334

#: how far closed lips press together at rest (x eye distance, each lip)
PRESS_GAIN = 0.006

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """Triangles of MediaPipe's face tessellation (from its edge list), (T, 3) int32.

    The tessellation leaves the mouth and the eyes open, so no triangle joins the lips.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = set()
    for a, b in FACEMESH_TESSELATION:
        for c in adj[a] & adj[b]:
            tris.add(tuple(sorted((a, b, c))))
    return np.array(sorted(tris), np.int32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FaceFrame:
    """The face-local frame of a set of landmarks (pixels)."""

    def __init__(self, lm: np.ndarray):
        p33, p263 = lm[33, :2].astype(np.float64), lm[263, :2].astype(np.float64)
        d = p263 - p33
        self.E = float(np.linalg.norm(d))
        self.ex = d / self.E
        self.ey = np.array([-self.ex[1], self.ex[0]])
        self.origin = (p33 + p263) / 2

    def to_local(self, xy: np.ndarray) -> np.ndarray:
        r = (np.asarray(xy, np.float64) - self.origin) / self.E
        return np.stack([r @ self.ex, r @ self.ey], axis=-1)

    def vec_to_pixels(self, duv: np.ndarray) -> np.ndarray:
        """Local displacement (u, v) in E units -> pixel displacement (x, y)."""
        return self.E * (duv[..., :1] * self.ex + duv[..., 1:2] * self.ey)


#: the head-pose channels and their rest values
_HEAD_KEYS = (("yaw", 0.0), ("pitch", 0.0), ("roll", 0.0), ("tx", 0.0), ("ty", 0.0),
              ("scale", 1.0))


class Rig:
    """Computes per-frame landmark positions from a dict of motion coefficients."""

    def __init__(self, landmarks: np.ndarray):
        self.lm = np.asarray(landmarks, np.float64).copy()          # rest landmarks (pixels, 3D)
        self.frame = FaceFrame(self.lm)
        self.E = self.frame.E
        uv = self.frame.to_local(self.lm[:, :2])
        self.uv = uv
        n = len(self.lm)
        mc = uv[[13, 14]].mean(axis=0)
        self.mouth_center = mc
        hw = abs(uv[291, 0] - uv[61, 0]) / 2
        self.mouth_half_width = hw
        du = uv[:, 0] - mc[0]
        dv = uv[:, 1] - mc[1]
        ad = np.abs(du)
        # lower-jaw membership: below a line through the mouth that rises towards the ears
        line = np.where(ad > hw, -0.35 * (ad - hw), 0.0)
        low = smoothstep((dv - line) / 0.25 + 0.5)
        low[UPPER_INNER + UPPER_OUTER] = 0.0
        low[LOWER_INNER + LOWER_OUTER] = 1.0
        low[MOUTH_CORNERS] = 0.45
        # above the nose tip nothing belongs to the jaw
        low[uv[:, 1] < uv[1, 1]] = 0.0
        depth = np.clip(1.0 - np.maximum(ad - hw, 0) / 1.1, 0.25, 1.0)
        self.w_jaw = low * depth
        self.lower_lip = np.zeros(n, bool)
        self.lower_lip[LOWER_INNER[1:-1] + LOWER_OUTER[1:-1]] = True
        self.upper_lip = np.zeros(n, bool)
        self.upper_lip[UPPER_INNER[1:-1] + UPPER_OUTER[1:-1]] = True
        lips = np.zeros(n, bool)
        lips[UPPER_INNER + LOWER_INNER + UPPER_OUTER + LOWER_OUTER] = True
        self.lips = lips
        # around-the-mouth weight (lips fully, cheeks/chin skin partly)
        r2 = (du / (hw * 1.6)) ** 2 + (dv / 0.55) ** 2
        self.w_mouth = np.where(lips, 1.0, np.exp(-2.0 * r2))
        self.w_mouth[uv[:, 1] < uv[168, 1]] = 0.0
        self.du = du
        self.dv = dv
        self.bell = np.clip(1 - (du / max(hw, 1e-3)) ** 2, 0, 1)
        self.lip_profile = 0.35 + 0.65 * np.sqrt(self.bell)
        # corners: each side's weight for one-sided shapes (subject's left = image right = +u)
        self.side_l = smoothstep((du / max(hw, 1e-3)) * 1.5 + 0.5)
        self.side_r = 1 - self.side_l
        cr, cl = uv[61], uv[291]
        self.w_corner_r = np.exp(-(((uv - cr) / [0.22, 0.18]) ** 2).sum(1))
        self.w_corner_l = np.exp(-(((uv - cl) / [0.22, 0.18]) ** 2).sum(1))
        # brows (only above the upper lids)
        lid_top_r = uv[EYE_R_UPPER, 1].min()
        lid_top_l = uv[EYE_L_UPPER, 1].min()
        above = smoothstep((np.minimum(lid_top_r, lid_top_l) - uv[:, 1] + 0.02) / 0.28)
        self.above_eyes = above

        def g(idx, su=0.32, sv=0.3):
            c = uv[idx]
            return np.exp(-(((uv - c) / [su, sv]) ** 2).sum(1)) * above

        self.w_brow_in_r, self.w_brow_in_l = g(BROW_R_INNER), g(BROW_L_INNER)
        self.w_brow_out_r, self.w_brow_out_l = g(BROW_R_OUTER), g(BROW_L_OUTER)
        self.w_brow_r, self.w_brow_l = g(BROW_R_MID, 0.45), g(BROW_L_MID, 0.45)
        # cheeks (for smiles): below the eyes, beside the nose
        self.w_cheek_r = np.exp(-(((uv - (uv[205])) / [0.3, 0.25]) ** 2).sum(1))
        self.w_cheek_l = np.exp(-(((uv - (uv[425])) / [0.3, 0.25]) ** 2).sum(1))
        # head pivot: behind the face centre
        c = self.lm.mean(axis=0)
        zspan = float(self.lm[:, 2].max() - self.lm[:, 2].min())
        self.pivot = np.array([c[0], c[1] + 0.15 * self.E, float(self.lm[:, 2].max()) + 0.3 * zspan])
        self._head_cache: tuple | None = None

    # ------------------------------------------------------------------------------------------
    def expression_uv(self, m: dict[str, float]) -> np.ndarray:
        """Displacement of every landmark in local units for the expression part of ``m``."""
        g = m.get
        n = len(self.lm)
        d = np.zeros((n, 2))
        jaw = float(np.clip(g("jawOpen", 0.0), 0, 1))
        close = float(np.clip(max(g("mouthClose", 0.0), 0.5 * (g("mouthPressLeft", 0.0) + g("mouthPressRight", 0.0))), 0, 1))
        funnel = float(g("mouthFunnel", 0.0))
        pucker = float(g("mouthPucker", 0.0))
        stretch_l, stretch_r = float(g("mouthStretchLeft", 0.0)), float(g("mouthStretchRight", 0.0))
        smile_l, smile_r = float(g("mouthSmileLeft", 0.0)), float(g("mouthSmileRight", 0.0))
        frown_l, frown_r = float(g("mouthFrownLeft", 0.0)), float(g("mouthFrownRight", 0.0))
        roll_lower = float(g("mouthRollLower", 0.0))
        upper_up = 0.5 * (float(g("mouthUpperUpLeft", 0.0)) + float(g("mouthUpperUpRight", 0.0)))
        lower_down = 0.5 * (float(g("mouthLowerDownLeft", 0.0)) + float(g("mouthLowerDownRight", 0.0)))
        du, hw = self.du, self.mouth_half_width

        # jaw: the lower face drops; the lips follow unless held closed
        jaw_drop = 0.40 * jaw
        d[:, 1] += jaw_drop * self.w_jaw
        # the lips open as a lens: full in the middle, tapering to the corners
        ll = self.lower_lip
        d[ll, 1] -= jaw_drop * (1 - self.lip_profile[ll]) * self.w_jaw[ll]
        d[ll, 1] -= jaw_drop * close * self.lip_profile[ll] * self.w_jaw[ll]
        # the commissure opens: inner corners slide towards the outer corners
        spread_c = min(1.0, 3.0 * jaw) * (1 - close)
        for ci, co in ((78, 61), (308, 291)):
            d[ci, 0] += 0.6 * spread_c * (self.uv[co, 0] - self.uv[ci, 0])
            d[ci, 1] += 0.6 * spread_c * (self.uv[co, 1] - self.uv[ci, 1])
        d[:, 0] -= 0.06 * jaw * du * self.w_jaw * (1 - close)
        d[UPPER_INNER[1:-1], 1] -= 0.045 * jaw * (1 - close) * self.bell[UPPER_INNER[1:-1]]
        d[UPPER_OUTER[1:-1], 1] -= 0.02 * jaw * (1 - close) * self.bell[UPPER_OUTER[1:-1]]
        # closed lips press together a little (a firm line, not a slack gap)
        press = close * (1 - min(1.0, 4.0 * jaw))
        d[UPPER_INNER[1:-1], 1] += PRESS_GAIN * press * self.bell[UPPER_INNER[1:-1]]
        d[LOWER_INNER[1:-1], 1] -= PRESS_GAIN * press * self.bell[LOWER_INNER[1:-1]]
        # rounding: lips gather towards the centre; funnel opens a round hole
        rnd = np.clip(max(funnel, pucker), 0, 1)
        d[:, 0] -= 0.32 * rnd * du * self.w_mouth
        fopen = 0.05 * funnel * (1 - close)
        d[UPPER_INNER[1:-1], 1] -= fopen * self.bell[UPPER_INNER[1:-1]]
        d[LOWER_INNER[1:-1], 1] += 1.2 * fopen * self.bell[LOWER_INNER[1:-1]]
        d[UPPER_OUTER[1:-1], 1] -= 0.02 * rnd * self.bell[UPPER_OUTER[1:-1]]
        d[LOWER_OUTER[1:-1], 1] += 0.025 * rnd * self.bell[LOWER_OUTER[1:-1]]
        # spreading and smiles: corners out (and up for smiles)
        sl, sr = stretch_l + 0.6 * smile_l, stretch_r + 0.6 * smile_r
        out = 0.11 * (sl * self.side_l - sr * self.side_r) * self.w_mouth * np.clip(np.abs(du) / max(hw, 1e-3), 0, 1.2)
        d[:, 0] += out
        up = 0.09 * (smile_l * self.w_corner_l + smile_r * self.w_corner_r)
        up += 0.035 * (smile_l * self.w_cheek_l + smile_r * self.w_cheek_r)
        d[:, 1] -= up
        d[:, 1] += 0.07 * (frown_l * self.w_corner_l + frown_r * self.w_corner_r)
        # f/v: lower lip up under the upper teeth; upper lip raised
        d[self.upper_lip, 1] -= 0.035 * upper_up
        if roll_lower > 1e-4:
            # the lower lip rises to the upper teeth, never past the upper lip
            ui, li = UPPER_INNER[1:-1], LOWER_INNER[1:-1]
            gap = (self.uv[li, 1] + d[li, 1]) - (self.uv[ui, 1] + d[ui, 1])
            rise = np.minimum(0.07 * roll_lower, np.maximum(gap - 0.01, 0.0))
            d[li, 1] -= rise
            d[LOWER_OUTER[1:-1], 1] -= rise
        d[self.lower_lip, 1] += 0.05 * lower_down * (1 - close)
        # brows
        bi = float(g("browInnerUp", 0.0))
        d[:, 1] -= 0.10 * bi * (self.w_brow_in_r + self.w_brow_in_l)
        d[:, 1] -= 0.10 * (float(g("browOuterUpRight", 0.0)) * self.w_brow_out_r
                           + float(g("browOuterUpLeft", 0.0)) * self.w_brow_out_l)
        bdr, bdl = float(g("browDownRight", 0.0)), float(g("browDownLeft", 0.0))
        d[:, 1] += 0.06 * (bdr * self.w_brow_r + bdl * self.w_brow_l)
        d[:, 0] += 0.03 * (bdr * self.w_brow_r - bdl * self.w_brow_l)
        return d

    def head_matrix(self, m: dict[str, float]) -> tuple[np.ndarray, np.ndarray, float]:
        """Rotation (3x3), translation (pixels, 3) and scale of the head for ``m``."""
        key = tuple(float(m.get(k, d)) for k, d in _HEAD_KEYS)
        cached = self._head_cache
        if cached is not None and cached[0] == key:    # a frame asks several times
            return cached[1]
        out = self._head_matrix(m)
        self._head_cache = (key, out)
        return out

    def _head_matrix(self, m: dict[str, float]) -> tuple[np.ndarray, np.ndarray, float]:
        yaw, pitch, roll = (np.radians(float(m.get(k, 0.0))) for k in ("yaw", "pitch", "roll"))
        cy, sy = np.cos(yaw), np.sin(yaw)
        cp, sp = np.cos(pitch), np.sin(pitch)
        cr, sr = np.cos(roll), np.sin(roll)
        # x right, y down, z away from the camera (MediaPipe): yaw>0 moves the nose right,
        # pitch>0 moves the nose down, roll>0 turns clockwise on screen
        ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        rot = rz @ rx @ ry
        t = np.array([float(m.get("tx", 0.0)) * self.E, float(m.get("ty", 0.0)) * self.E, 0.0])
        return rot, t, float(m.get("scale", 1.0))

    def apply_head(self, pts: np.ndarray, m: dict[str, float], weight: np.ndarray | None = None) -> np.ndarray:
        """3D points (pixels) moved by the head pose, blended by ``weight`` (1 = fully)."""
        rot, t, s = self.head_matrix(m)
        rel = pts - self.pivot
        moved = s * rel @ rot.T + self.pivot + t
        if weight is None:
            return moved
        return pts + (moved - pts) * weight[:, None]
