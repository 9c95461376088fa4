"""Face-landmark images for the EchoMimic V1 ``_pose`` weights.

The pose variants condition the face locator (3 input channels) on a picture of the face mesh per
frame instead of the face-box mask: eyes, brows, irises and the lips in eight coloured parts,
2-pixel lines on black, with the pupils and the nose tip as small squares, in the style of the
official pose images. The mesh of each frame comes from our MotionTrack through the warp rig
(the photo's 478 MediaPipe points moved by the frame's blendshapes and head pose).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ...types import MotionTrack, Portrait

_LIPS = {
    (10, 180, 20): [(61, 146), (146, 91), (91, 181), (181, 84), (84, 17)],
    (20, 10, 180): [(17, 314), (314, 405), (405, 321), (321, 375), (375, 291)],
    (100, 100, 30): [(78, 95), (95, 88), (88, 178), (178, 87), (87, 14)],
    (100, 150, 50): [(14, 317), (317, 402), (402, 318), (318, 324), (324, 308)],
    (20, 80, 100): [(61, 185), (185, 40), (40, 39), (39, 37), (37, 0)],
    (80, 100, 20): [(0, 267), (267, 269), (269, 270), (270, 409), (409, 291)],
    (120, 100, 200): [(78, 191), (191, 80), (80, 81), (81, 82), (82, 13)],
    (150, 120, 100): [(13, 312), (312, 311), (311, 310), (310, 415), (415, 308)],
}
_POINTS = {468: (10, 200, 250), 473: (250, 200, 10), 4: (200, 200, 200)}


@lru_cache(maxsize=1)
def pose_style() -> list[tuple[tuple[int, int], tuple[int, int, int]]]:
    """(connection, colour) pairs in drawing order."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    spec: dict[tuple[int, int], tuple[int, int, int]] = {}
    for edges, color in ((fmc.FACEMESH_LEFT_EYE, (180, 200, 10)), (fmc.FACEMESH_RIGHT_EYE, (10, 200, 180)),
                         (fmc.FACEMESH_LEFT_EYEBROW, (180, 220, 10)),
                         (fmc.FACEMESH_RIGHT_EYEBROW, (10, 220, 180)),
                         (fmc.FACEMESH_LEFT_IRIS, (250, 200, 10)), (fmc.FACEMESH_RIGHT_IRIS, (10, 200, 250))):
        for e in sorted(edges):
            spec[tuple(e)] = color
    for color, edges in _LIPS.items():
        for e in edges:
            spec[e] = color
    return list(spec.items())


def draw_pose(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 picture of the face mesh ``points`` ((478, 2+) pixels) on black."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    p = np.asarray(points)[:, :2]
    for (a, b), color in pose_style():
        pa, pb = p[a], p[b]
        if not (np.isfinite(pa).all() and np.isfinite(pb).all()):
            continue
        cv2.line(img, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), color, 2)
    for idx, color in _POINTS.items():
        if idx < len(p):
            x, y = int(p[idx, 0]), int(p[idx, 1])
            if 0 <= x < w and 0 <= y < h:
                img[max(0, y - 3): y + 3, max(0, x - 3): x + 3] = color
    return img


class PoseFrames:
    """Face-mesh pictures of a MotionTrack's frames at a working size, drawn on demand."""

    def __init__(self, portrait: Portrait, track: MotionTrack, size: tuple[int, int]):
        from ..warp.rig import Rig

        self.rig = Rig(portrait.landmarks)
        self.track = track
        self.size = size
        h, w = portrait.image.shape[:2]
        self.scale = np.array([size[0] / w, size[1] / h])

    def landmarks(self, i: int) -> np.ndarray:
        """(478, 2) mesh of frame ``i`` in working-size pixels."""
        rig = self.rig
        m = self.track.frame(i)
        mesh = rig.lm.copy()
        mesh[:, :2] += rig.frame.vec_to_pixels(rig.expression_uv(m))
        mesh = rig.apply_head(mesh, m)
        return mesh[:, :2] * self.scale

    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 pose picture of frame ``i``."""
        return draw_pose(self.landmarks(i), self.size)
