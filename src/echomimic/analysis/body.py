"""Body and hand pose of a person in a photo or a video, in the DWPose/OpenPose layout.

MediaPipe Pose (model complexity 1) and MediaPipe Hands, both bundled in the MediaPipe wheel (no
downloads), are mapped to the layout that DWPose, ControlNet's OpenPose, EchoMimic V2 and
MimicMotion use:

* ``body`` (18, 3): OpenPose COCO-18 order, "right" meaning the **person's** right (on the left
  of the picture when they face the camera)::

      0 nose       1 neck (mid-shoulders)   2 r-shoulder  3 r-elbow  4 r-wrist
      5 l-shoulder 6 l-elbow                7 l-wrist     8 r-hip    9 r-knee
      10 r-ankle   11 l-hip                 12 l-knee     13 l-ankle 14 r-eye
      15 l-eye     16 r-ear                 17 l-ear

* ``hands`` (2, 21, 3): ``hands[0]`` is the person's **left** hand, ``hands[1]`` their
  **right** hand (DWPose's order, from COCO-WholeBody: left hand first). Points in the OpenPose
  hand order, which is also MediaPipe's: 0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
  17-20 little finger (base to tip).
* ``face`` (68, 3): the 68 iBUG/dlib points, mapped from MediaPipe's face mesh when ``face=True``
  (point 0 is the jaw on the person's right); all score 0 otherwise.

Each point is ``(x, y, score)``: ``x`` and ``y`` are fractions of the image's width and height
(0 at the left/top edge, 1 at the right/bottom edge; a joint the model places just outside the
picture may lie a little outside [0, 1]), ``score`` is a confidence in [0, 1] and is **0 for a
missing point** (then x = y = 0). Nothing is invented: a hand the hand model does not find, or a
joint whose visibility is below :data:`MIN_VISIBILITY`, has score 0.

Use :func:`detect_body` for a single photo and :class:`BodyTracker` for the frames of a video (it
keeps the models and their tracking state across frames).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__all__ = ["BodyPose", "BodyTracker", "detect_body", "BODY_POINTS", "HAND_POINTS",
           "LEFT_HAND", "RIGHT_HAND", "MIN_VISIBILITY", "BODY_LIMBS", "HAND_EDGES",
           "draw_pose"]

#: Names of the 18 body points, in order.
BODY_POINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
               "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye",
               "l_eye", "r_ear", "l_ear")
#: Names of the 21 hand points, in order.
HAND_POINTS = ("wrist",
               "thumb_1", "thumb_2", "thumb_3", "thumb_4",
               "index_1", "index_2", "index_3", "index_4",
               "middle_1", "middle_2", "middle_3", "middle_4",
               "ring_1", "ring_2", "ring_3", "ring_4",
               "little_1", "little_2", "little_3", "little_4")
#: Index of the person's left hand in ``hands``.
LEFT_HAND = 0
#: Index of the person's right hand in ``hands``.
RIGHT_HAND = 1

#: A body point whose MediaPipe visibility is below this is reported missing (score 0), as
#: DWPose does below its 0.3 threshold.
MIN_VISIBILITY = 0.3

#: OpenPose limbs (pairs of body indices), in the order the usual drawing colours follow.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
#: Bones of a hand (pairs of hand indices).
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
              (18, 19), (19, 20))

# MediaPipe Pose (33 points; its "left" is the person's left) -> COCO-18. The neck is the
# mid-point of the shoulders (11, 12).
_MP_TO_COCO = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23,
               12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7}
_MP_L_SHOULDER, _MP_R_SHOULDER = 11, 12

# MediaPipe face mesh -> the 68 iBUG points (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
# mouth 48-67), a common correspondence of the two point sets.
_MESH_TO_68 = (162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
               71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
               168, 197, 5, 4, 75, 97, 2, 326, 305,
               33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
               61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
               78, 82, 13, 312, 308, 317, 14, 87)

#: Longest side the models see; bigger frames are downscaled first (speed; MediaPipe crops and
#: resizes the person and the hands itself).
_MAX_SIDE = 1280


@dataclass
class BodyPose:
    """One person's pose in one image.

    ``body`` (18, 3), ``hands`` (2, 21, 3) (left hand first) and ``face`` (68, 3) hold
    ``(x, y, score)`` rows: x and y as fractions of ``width`` and ``height``, score 0 for a missing
    point. ``width`` and ``height`` are the image's size in pixels.
    """

    body: np.ndarray
    hands: np.ndarray
    face: np.ndarray
    width: int
    height: int
    meta: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, width: int, height: int) -> "BodyPose":
        """A pose with every point missing (no person found)."""
        return cls(np.zeros((18, 3), np.float32), np.zeros((2, 21, 3), np.float32),
                   np.zeros((68, 3), np.float32), int(width), int(height))

    @property
    def found(self) -> bool:
        """True when a body was found (the neck or a shoulder is present)."""
        return bool(self.body[[1, 2, 5], 2].max() > 0)

    def hand_found(self, which: int) -> bool:
        """True when hand ``which`` (:data:`LEFT_HAND` or :data:`RIGHT_HAND`) was found."""
        return bool(self.hands[which, 0, 2] > 0)

    def pixels(self, part: str = "body") -> np.ndarray:
        """The points of ``part`` (``body``, ``hands`` or ``face``) with x, y in pixels."""
        arr = np.array(getattr(self, part), np.float32, copy=True)
        arr[..., 0] *= self.width
        arr[..., 1] *= self.height
        return arr


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


def _mp():
    import mediapipe as mp  # heavy import, done once on first use

    return mp


class _Models:
    """One set of MediaPipe graphs (pose, hands, optionally face mesh)."""

    def __init__(self, *, static: bool, face: bool):
        mp = _mp()
        self.pose = mp.solutions.pose.Pose(
            static_image_mode=static, model_complexity=1, smooth_landmarks=not static,
            enable_segmentation=False, min_detection_confidence=0.5,
            min_tracking_confidence=0.5)
        self.hands = mp.solutions.hands.Hands(
            static_image_mode=static, max_num_hands=2, model_complexity=1,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)
        # hands the whole-frame search missed are looked for again on a crop around the pose's
        # wrist, where the hand is big enough for the palm detector
        self.hands_roi = mp.solutions.hands.Hands(
            static_image_mode=True, max_num_hands=2, model_complexity=1,
            min_detection_confidence=0.5)
        self.mesh = None
        if face:
            self.mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=False, max_num_faces=1,
                min_detection_confidence=0.4)

    def close(self) -> None:
        for m in (self.pose, self.hands, self.hands_roi, self.mesh):
            if m is not None:
                m.close()


_static_lock = threading.Lock()
_static_models: dict[bool, _Models] = {}


# ----------------------------------------------------------------------------------------------
# mapping
# ----------------------------------------------------------------------------------------------


def _body_from_pose(landmarks) -> np.ndarray:
    """COCO-18 body (18, 3) from MediaPipe Pose landmarks (normalised x, y, visibility)."""
    lm = np.array([(p.x, p.y, p.visibility) for p in landmarks.landmark], np.float64)
    body = np.zeros((18, 3), np.float64)
    for coco, mpi in _MP_TO_COCO.items():
        body[coco] = lm[mpi]
    ls, rs = lm[_MP_L_SHOULDER], lm[_MP_R_SHOULDER]
    body[1] = ((ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2]))
    body[:, 2] = np.clip(body[:, 2], 0.0, 1.0)
    missing = body[:, 2] < MIN_VISIBILITY
    body[missing] = 0.0
    return body


def _assign_hands(body: np.ndarray, found: list[tuple[np.ndarray, str, float]],
                  aspect: float) -> np.ndarray:
    """Place the detected hands in (left, right) slots.

    ``found`` holds (21x2 normalised points, MediaPipe's handedness label, its score). MediaPipe
    labels hands as if the image were mirrored (a selfie), so on an ordinary picture its "Left"
    is the person's right hand. When the pose's wrists are present, each hand goes to the nearer
    pose wrist (the handedness only breaks ties); a hand far from both wrists belongs to nobody
    we track and is dropped.
    """
    hands = np.zeros((2, 21, 3), np.float64)
    if not found:
        return hands
    # person's side from the label of a non-mirrored image
    label_slot = [RIGHT_HAND if lab == "Left" else LEFT_HAND for _, lab, _ in found]
    wrists = {LEFT_HAND: body[7], RIGHT_HAND: body[4]}
    have = {k: v[2] > 0 for k, v in wrists.items()}
    sh = body[[2, 5]]
    if sh[:, 2].min() > 0:
        scale = float(np.hypot((sh[0, 0] - sh[1, 0]) * aspect, sh[0, 1] - sh[1, 1]))
    else:
        scale = 0.0
    scale = max(scale, 0.05)

    def dist(pts: np.ndarray, slot: int) -> float:
        w = wrists[slot]
        return float(np.hypot((pts[0, 0] - w[0]) * aspect, pts[0, 1] - w[1])) / scale

    # cost of each hand in each slot: distance to that pose wrist (in shoulder widths) when the
    # wrist is known, plus a penalty when the label disagrees
    cost = np.zeros((len(found), 2))
    for i, (pts, _, _) in enumerate(found):
        for slot in (LEFT_HAND, RIGHT_HAND):
            c = dist(pts, slot) if have[slot] else 1.0
            if have[slot] and c > 1.2:
                c = np.inf                      # too far from this arm's wrist
            cost[i, slot] = c + (0.0 if label_slot[i] == slot else 0.35)
    # two detections of one hand (trackers drifting onto the same hand): keep the surer one
    for i in range(len(found)):
        for j in range(i + 1, len(found)):
            a, b = found[i][0], found[j][0]
            sep = float(np.hypot((a[:, 0] - b[:, 0]) * aspect, a[:, 1] - b[:, 1]).mean())
            if sep < 0.1 * scale:
                cost[i if found[i][2] < found[j][2] else j] = np.inf
    taken: set[int] = set()
    order = sorted(((cost[i, s], i, s) for i in range(len(found)) for s in (0, 1)))
    used: set[int] = set()
    for c, i, s in order:
        if not np.isfinite(c) or i in used or s in taken:
            continue
        pts, _, score = found[i]
        hands[s, :, :2] = pts
        hands[s, :, 2] = float(np.clip(score, 0.0, 1.0))
        used.add(i)
        taken.add(s)
    return hands


#: Input size of the crop searched for a missed hand.
_ROI_INPUT = 256
# MediaPipe Pose's wrist, index knuckle and little-finger knuckle of each side (person's)
_MP_HAND = {LEFT_HAND: (15, 19, 17), RIGHT_HAND: (16, 20, 18)}


def _hand_in_roi(models: _Models, img: np.ndarray, body: np.ndarray, mp_points: np.ndarray,
                 hands: np.ndarray, slot: int) -> None:
    """Look for hand ``slot`` on a square crop around where the pose puts that hand (in place).

    Used when the whole-frame search found no hand there although the pose sees the wrist: the
    palm detector sees the whole frame at 192 pixels, where a hand in a tall phone video is a
    few pixels wide. The crop is centred on the pose's wrist and knuckles and sized from the
    forearm, the shoulders and the hand itself (a forearm pointing at the camera looks short). A
    hand found on the crop is kept only when its wrist is near the pose's wrist and it is not the
    other hand found again.
    """
    h, w = img.shape[:2]
    wi, ei = (7, 6) if slot == LEFT_HAND else (4, 3)
    if body[wi, 2] <= 0:
        return
    scale = np.array([w, h], np.float64)
    wrist = body[wi, :2] * scale
    mw, mi, mpk = _MP_HAND[slot]
    knuckles = (mp_points[mi, :2] + mp_points[mpk, :2]) / 2 * scale
    centre = (wrist + knuckles * 2) / 3
    sizes = [5.0 * float(np.hypot(*(knuckles - wrist)))]
    if body[ei, 2] > 0:
        sizes.append(2.0 * float(np.hypot(*(wrist - body[ei, :2] * scale))))
    if body[2, 2] > 0 and body[5, 2] > 0:
        sizes.append(1.0 * float(np.hypot(*((body[2, :2] - body[5, :2]) * scale))))
    side = int(round(max(sizes)))
    if side < 16:
        return
    x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad > side // 2:                       # the crop lies mostly outside the picture
        return
    src = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT) if pad else img
    crop = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    inp = cv2.resize(crop, (_ROI_INPUT, _ROI_INPUT),
                     interpolation=cv2.INTER_AREA if side > _ROI_INPUT else cv2.INTER_LINEAR)
    res = models.hands_roi.process(np.ascontiguousarray(inp))
    other = hands[1 - slot]
    best = None
    for lms, hd in zip(res.multi_hand_landmarks or [], res.multi_handedness or []):
        pts = np.array([(p.x, p.y) for p in lms.landmark], np.float64) * side
        pts += (x0, y0)
        d = float(np.hypot(*(pts[0] - wrist)))
        if d > 0.3 * side:
            continue                          # not this arm's hand
        if other[0, 2] > 0:
            sep = float(np.hypot(*(pts - other[:, :2] * scale).T).mean())
            if sep < 0.1 * side:
                continue                      # the other hand, found again
        if best is None or d < best[0]:
            best = (d, pts / scale, float(hd.classification[0].score))
    if best is not None:
        hands[slot, :, :2] = best[1]
        hands[slot, :, 2] = float(np.clip(best[2], 0.0, 1.0))


def _face_from_mesh(models: _Models, rgb: np.ndarray, body: np.ndarray) -> np.ndarray:
    """68 face points from the face mesh on a crop around the pose's head, or all missing."""
    face = np.zeros((68, 3), np.float64)
    if models.mesh is None:
        return face
    h, w = rgb.shape[:2]
    head = body[[0, 14, 15, 16, 17]]
    head = head[head[:, 2] > 0]
    if len(head) < 2:
        return face
    px = head[:, :2] * (w, h)
    cx, cy = px.mean(axis=0)
    span = max(float(np.ptp(px[:, 0])), float(np.ptp(px[:, 1])), 8.0)
    side = int(round(span * 3.0))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else rgb
    crop = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    if crop.size == 0:
        return face
    inp = cv2.resize(crop, (256, 256),
                     interpolation=cv2.INTER_AREA if side > 256 else cv2.INTER_LINEAR)
    res = models.mesh.process(np.ascontiguousarray(inp))
    if not res.multi_face_landmarks:
        return face
    lm = res.multi_face_landmarks[0].landmark
    pts = np.array([(lm[i].x, lm[i].y) for i in _MESH_TO_68], np.float64) * side
    face[:, 0] = (pts[:, 0] + x0) / w
    face[:, 1] = (pts[:, 1] + y0) / h
    face[:, 2] = 1.0
    return face


def _run(models: _Models, rgb: np.ndarray) -> BodyPose:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    s = min(1.0, _MAX_SIDE / max(h, w))
    img = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                     interpolation=cv2.INTER_AREA) if s < 1 else np.ascontiguousarray(rgb)
    pose = BodyPose.empty(w, h)
    res = models.pose.process(img)
    if res.pose_landmarks is not None:
        body = _body_from_pose(res.pose_landmarks)
        mp_points = np.array([(p.x, p.y, p.visibility) for p in res.pose_landmarks.landmark])
    else:
        body = np.zeros((18, 3), np.float64)
        mp_points = np.zeros((33, 3))
    hres = models.hands.process(img)
    found = []
    for lms, hd in zip(hres.multi_hand_landmarks or [], hres.multi_handedness or []):
        pts = np.array([(p.x, p.y) for p in lms.landmark], np.float64)
        c = hd.classification[0]
        found.append((pts, c.label, float(c.score)))
    hands = _assign_hands(body, found, aspect=w / h)
    for slot in (LEFT_HAND, RIGHT_HAND):
        if hands[slot, 0, 2] <= 0:
            _hand_in_roi(models, img, body, mp_points, hands, slot)
    face = _face_from_mesh(models, img, body)
    pose.body = body.astype(np.float32)
    pose.hands = hands.astype(np.float32)
    pose.face = face.astype(np.float32)
    return pose


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def detect_body(image_rgb: np.ndarray, *, face: bool = False) -> BodyPose:
    """The pose of the most prominent person in one photo (an (H, W, 3) uint8 RGB array).

    Args:
        image_rgb: the photo.
        face: also map MediaPipe's face mesh to the 68 face points (otherwise they are all
            missing, score 0).

    Returns:
        A :class:`BodyPose`; when nobody is found every score is 0 (check ``pose.found``).
    """
    with _static_lock:
        if face not in _static_models:
            _static_models[face] = _Models(static=True, face=face)
        return _run(_static_models[face], image_rgb)


class BodyTracker:
    """Pose of one person across the frames of a video, reusing the models and their tracking
    state from frame to frame (MediaPipe's tracking mode: faster and steadier than detecting
    every frame afresh). Feed frames in order::

        with BodyTracker() as tracker:
            for rgb in frames:
                pose = tracker(rgb)

    The raw per-frame points are returned; smoothing over time is the caller's
    (see :func:`echomimic.motion.body_pose.extract_pose`).
    """

    def __init__(self, *, face: bool = False):
        self._models = _Models(static=False, face=face)
        self._lock = threading.Lock()

    def __call__(self, image_rgb: np.ndarray) -> BodyPose:
        with self._lock:
            if self._models is None:
                raise RuntimeError("BodyTracker is closed")
            return _run(self._models, image_rgb)

    def close(self) -> None:
        with self._lock:
            if self._models is not None:
                self._models.close()
                self._models = None

    def __enter__(self) -> "BodyTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# drawing (OpenPose colours), for looking at poses
# ----------------------------------------------------------------------------------------------

_LIMB_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
                 (85, 255, 0), (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
                 (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
                 (255, 0, 255), (255, 0, 170), (255, 0, 85))


def draw_pose(canvas: np.ndarray, body: np.ndarray, hands: np.ndarray | None = None,
              face: np.ndarray | None = None) -> np.ndarray:
    """Draw one frame's normalised points over an RGB image (a copy), in the OpenPose colours:
    rainbow limbs and joints, hands with rainbow bones and blue joints, white face points. Points
    with score 0 are not drawn."""
    out = np.array(canvas, np.uint8, copy=True)
    h, w = out.shape[:2]
    t = max(2, round(min(h, w) / 200))

    def px(p):
        return int(round(p[0] * w)), int(round(p[1] * h))

    body = np.asarray(body)
    for k, (a, b) in enumerate(BODY_LIMBS):
        if body[a, 2] > 0 and body[b, 2] > 0:
            col = tuple(int(c * 0.6) for c in _LIMB_COLOURS[k])
            cv2.line(out, px(body[a]), px(body[b]), col, t * 2, cv2.LINE_AA)
    for k in range(18):
        if body[k, 2] > 0:
            cv2.circle(out, px(body[k]), t * 2, _LIMB_COLOURS[k], -1, cv2.LINE_AA)
    if hands is not None:
        import colorsys

        for hand in np.asarray(hands):
            for k, (a, b) in enumerate(HAND_EDGES):
                if hand[a, 2] > 0 and hand[b, 2] > 0:
                    r, g, bb = colorsys.hsv_to_rgb(k / len(HAND_EDGES), 1.0, 1.0)
                    col = (int(r * 255), int(g * 255), int(bb * 255))
                    cv2.line(out, px(hand[a]), px(hand[b]), col, max(1, t), cv2.LINE_AA)
            for k in range(21):
                if hand[k, 2] > 0:
                    cv2.circle(out, px(hand[k]), max(1, t), (0, 0, 255), -1, cv2.LINE_AA)
    if face is not None:
        for p in np.asarray(face):
            if p[2] > 0:
                cv2.circle(out, px(p), max(1, t // 2), (255, 255, 255), -1, cv2.LINE_AA)
    return out
