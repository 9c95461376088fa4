"""Face measurements on frames: MediaPipe face mesh landmarks and the figures derived from them.

:class:`FaceMeasurer` wraps MediaPipe's legacy ``face_mesh`` solution (478 landmarks with the
refined eyes and lips). Video frames are measured in tracking mode (the mesh follows the face from
frame to frame); frames that are far apart (or unrelated photos) in static mode. When the face is
small in a big frame, the face is found once with ``face_detection`` (full-range model) and the
mesh runs on a padded crop around it; landmarks are mapped back to full-frame pixels.

Figures (per frame, NaN where no face was found), see :class:`FaceTracks`:

* ``eye_dist``: outer eye-corner distance (landmarks 33-263) in pixels, the unit of the others;
* ``lip_gap``: inner-lip opening, the mean distance of the inner-lip vertical pairs near the
  centre ((82, 87), (13, 14), (312, 317)) over ``eye_dist``; about 0 for closed lips;
* ``mouth_width``: mouth-corner distance (61-291) over ``eye_dist``;
* ``eye_open_left`` / ``eye_open_right``: lid distance over eye width for the eye on the
  image's left ((159, 145) over (33, 133)) and on the image's right ((386, 374) over (362, 263));
* ``yaw``, ``pitch``, ``roll`` in degrees (see :func:`head_pose`);
* ``mouth_corner_y``: height of the mouth corners (mean of 61 and 291) above the eye line, along
  the face's vertical axis, over ``eye_dist``. It is negative (the mouth is below the eyes) and
  rises (towards zero) when the corners go up, as in a smile.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..errors import ImageError, VideoError

__all__ = [
    "FaceMeasurer",
    "FaceTracks",
    "head_pose",
    "measure_frames",
    "measure_image",
    "measure_video",
    "iter_video_frames",
    "N_LANDMARKS",
]

#: Number of landmarks of the refined face mesh (468 + 10 iris points).
N_LANDMARKS = 478

# Landmark indices (MediaPipe face mesh topology).
EYE_OUTER = (33, 263)
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (61, 291)
EYE_LEFT_LIDS, EYE_LEFT_CORNERS = (159, 145), (33, 133)      # eye on the image's left
EYE_RIGHT_LIDS, EYE_RIGHT_CORNERS = (386, 374), (362, 263)   # eye on the image's right

# Head pose from rigid points (no mouth, jaw, brows or lids).
#: Symmetric pairs (image-left point, image-right point) giving the face's lateral axis.
POSE_PAIRS = ((33, 263), (133, 362), (234, 454), (127, 356))
#: Midline points of the forehead and of the nose (the face's vertical axis runs between them).
POSE_UPPER = (10, 151, 9, 8)
POSE_LOWER = (1, 2, 4, 5)
#: In MediaPipe's canonical face model (the frontal reference the mesh is regressed to), the line
#: from the mean of POSE_UPPER to the mean of POSE_LOWER leans towards the camera by this angle;
#: it is removed so that a frontal face has pitch 0.
POSE_NOSE_LINE_TILT_DEG = 16.85

#: Rigid points used to remove head motion (see :func:`echomimic.quality.metrics.jitter`).
RIGID_POINTS = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 127, 356)


@dataclass
class FaceTracks:
    """Per-frame face measurements; every array has ``n_frames`` rows, NaN where no face.

    ``landmarks`` is (n, 478, 3) float32 in full-frame pixels (x right, y down, z in the same
    scale, smaller z nearer the camera). The other fields are float64 (n,) arrays described in
    the module docstring. ``fps`` is set when the frames came from a video.
    """

    landmarks: np.ndarray
    eye_dist: np.ndarray
    lip_gap: np.ndarray
    mouth_width: np.ndarray
    eye_open_left: np.ndarray
    eye_open_right: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    mouth_corner_y: np.ndarray
    fps: float | None = None

    @property
    def n_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def found(self) -> np.ndarray:
        """(n,) bool: a face was found in the frame."""
        return np.isfinite(self.eye_dist)

    @property
    def face_found_share(self) -> float:
        """Share of frames with a face (NaN for zero frames)."""
        return float(self.found.mean()) if self.n_frames else float("nan")

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, fps: float | None = None) -> "FaceTracks":
        """Derive every figure from (n, 478, 3) pixel landmarks (NaN rows for missing faces)."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.ndim == 2:
            lm = lm[None]
        if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] != 3:
            raise ValueError(f"landmarks must be (n, 478, 3), got {lm.shape}")
        n = lm.shape[0]
        if n == 0:
            empty = np.zeros(0)
            return cls(np.zeros((0, N_LANDMARKS, 3), np.float32), *(empty.copy() for _ in range(9)),
                       fps=fps)

        def dist(i: int, j: int) -> np.ndarray:
            return np.linalg.norm(lm[:, i, :2] - lm[:, j, :2], axis=1)

        with np.errstate(invalid="ignore", divide="ignore"):
            eye = dist(*EYE_OUTER)
            eye = np.where(eye > 0, eye, np.nan)
            gap = np.mean([dist(a, b) for a, b in INNER_LIP_PAIRS], axis=0) / eye
            width = dist(*MOUTH_CORNERS) / eye
            open_l = dist(*EYE_LEFT_LIDS) / dist(*EYE_LEFT_CORNERS)
            open_r = dist(*EYE_RIGHT_LIDS) / dist(*EYE_RIGHT_CORNERS)
            yaw, pitch, roll = head_pose(lm)
            # Height of the mouth corners above the eye line, along the face's vertical axis.
            e = (lm[:, EYE_OUTER[1], :2] - lm[:, EYE_OUTER[0], :2]) / eye[:, None]
            down = np.stack([-e[:, 1], e[:, 0]], axis=1)   # e rotated by +90 deg (y down)
            mid = 0.5 * (lm[:, EYE_OUTER[0], :2] + lm[:, EYE_OUTER[1], :2])
            corners = 0.5 * (lm[:, MOUTH_CORNERS[0], :2] + lm[:, MOUTH_CORNERS[1], :2])
            corner_y = -np.einsum("ij,ij->i", corners - mid, down) / eye
        return cls(
            landmarks=lm.astype(np.float32), eye_dist=eye, lip_gap=gap, mouth_width=width,
            eye_open_left=open_l, eye_open_right=open_r, yaw=yaw, pitch=pitch, roll=roll,
            mouth_corner_y=corner_y, fps=fps,
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        """The per-frame scalar figures by name (without landmarks)."""
        names = ("eye_dist", "lip_gap", "mouth_width", "eye_open_left", "eye_open_right",
                 "yaw", "pitch", "roll", "mouth_corner_y")
        return {k: getattr(self, k) for k in names}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def head_pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head yaw, pitch and roll in degrees from (n, 478, 3) pixel landmarks.

    The face's axes are built from rigid 3D landmarks: the lateral axis from symmetric
    image-left → image-right point pairs (eye corners, temples, cheek edges), the vertical axis
    from the forehead midline to the nose (orthogonalized, and untilted by the angle that line
    has in MediaPipe's canonical face model, so that a frontal face reads 0). With ``f`` the
    direction the nose points (towards the camera for a frontal face) and ``u`` the lateral axis:

    * ``yaw = atan2(f_x, -f_z)``: > 0 when the face turns to the image's right;
    * ``pitch = asin(f_y)``: > 0 when the chin goes down (nod down);
    * ``roll = atan2(u_y, u_x)``: > 0 when the face rotates clockwise in the image.

    Angles are exact for a pure rotation of one kind and close to the usual Euler angles for
    moderate combined poses. Rows with NaN landmarks give NaN.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    left = lm[:, [p[0] for p in POSE_PAIRS]]
    right = lm[:, [p[1] for p in POSE_PAIRS]]
    with np.errstate(invalid="ignore", divide="ignore"):
        ex = _unit((right - left).mean(axis=1))
        v = lm[:, list(POSE_LOWER)].mean(axis=1) - lm[:, list(POSE_UPPER)].mean(axis=1)
        v = _unit(v - np.einsum("ij,ij->i", v, ex)[:, None] * ex)
        # Camera coordinates are x right, y down, z away from the camera (right-handed):
        # the face's back-pointing axis is ex × ey. Undo the canonical tilt of v about ex:
        # in the canonical frontal face v = cos(t) ŷ − sin(t) ẑ.
        w = np.cross(ex, v)                      # ⟂ to ex and v, pointing away for small tilts
        t = math.radians(POSE_NOSE_LINE_TILT_DEG)
        ey = math.cos(t) * v + math.sin(t) * w   # rotate v back about ex
        ez = np.cross(ex, ey)                    # points from the face into the head
        f = -ez                                  # where the nose points
        yaw = np.degrees(np.arctan2(f[:, 0], -f[:, 2]))
        pitch = np.degrees(np.arcsin(np.clip(f[:, 1], -1.0, 1.0)))
        roll = np.degrees(np.arctan2(ex[:, 1], ex[:, 0]))
    return yaw, pitch, roll


# ------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    """Validate a frame and return it as a C-contiguous (H, W, 3) uint8 RGB array."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 8 or a.shape[1] < 8:
        raise ImageError(f"expected an (H, W, 3) RGB frame, got an array of shape {a.shape}")
    if a.dtype != np.uint8:
        raise ImageError(f"expected a uint8 RGB frame, got dtype {a.dtype}")
    return np.ascontiguousarray(a[:, :, :3])


Box = tuple[int, int, int, int]


class FaceMeasurer:
    """Finds the face mesh in frames; use as a context manager (it holds MediaPipe graphs).

    Args:
        static_image_mode: ``False`` (default) tracks the face across consecutive video frames;
            ``True`` treats every frame on its own (photos, or frames far apart in time).
        crop: ``"auto"`` runs the mesh on a padded crop around the face when the face is small
            in the frame or the frame is big; ``"always"`` / ``"never"`` force the choice.
        min_detection_confidence, min_tracking_confidence: MediaPipe's thresholds.

    :meth:`landmarks` gives one frame's (478, 3) pixel landmarks or ``None``;
    :meth:`measure_frames` measures a sequence into :class:`FaceTracks`.
    """

    #: The crop is this many times the detected face box side (the mesh wants forehead and chin).
    CROP_PAD = 2.2
    #: A face box side below this share of the frame's shorter side makes "auto" crop.
    SMALL_FACE = 0.3
    #: A frame whose longer side exceeds this makes "auto" crop.
    BIG_FRAME = 1280
    #: Crops are downscaled to at most this side before the mesh (its input is 192-256 px).
    MAX_CROP_SIDE = 640
    #: Side of the tiles searched when no face is found on the whole frame.
    TILE = 512
    #: In tracking mode, a lost face is searched on tiles at most once per this many frames.
    TILE_SEARCH_EVERY = 25

    def __init__(self, *, static_image_mode: bool = False, crop: str = "auto",
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        if crop not in ("auto", "always", "never"):
            raise ValueError(f"crop must be 'auto', 'always' or 'never', not {crop!r}")
        import mediapipe as mp  # heavy import, only when measuring

        self._mp = mp
        self.static_image_mode = bool(static_image_mode)
        self.crop = crop
        self._det_conf = float(min_detection_confidence)
        self._trk_conf = float(min_tracking_confidence)
        self._mesh = self._new_mesh()
        self._detector = None
        self._box: Box | None = None          # crop box in tracking mode (None: full frame)
        self._decided = False                 # tracking mode: crop decision made
        self._since_tiles = 0                 # frames since the last tiled face search

    # -- lifecycle ---------------------------------------------------------------------------
    def _new_mesh(self):
        return self._mp.solutions.face_mesh.FaceMesh(
            static_image_mode=self.static_image_mode, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=self._det_conf, min_tracking_confidence=self._trk_conf,
        )

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> "FaceMeasurer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the tracked face (call between unrelated videos)."""
        if self._mesh is not None:
            self._mesh.close()
        self._mesh = self._new_mesh()
        self._box = None
        self._decided = False
        self._since_tiles = 0

    # -- face detection and crops ------------------------------------------------------------
    def _detect_once(self, rgb: np.ndarray) -> list[tuple[float, Box]]:
        """(score, box) of the faces the full-range detector finds in ``rgb``."""
        if self._detector is None:
            self._detector = self._mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self._det_conf)
        h, w = rgb.shape[:2]
        small = rgb
        if max(h, w) > 1920:  # the detector's input is 192 px; skip needless conversion work
            import cv2

            s = 1920.0 / max(h, w)
            small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        res = self._detector.process(np.ascontiguousarray(small))
        found = []
        for d in res.detections or ():
            bb = d.location_data.relative_bounding_box
            box = (int(round(bb.xmin * w)), int(round(bb.ymin * h)),
                   int(round((bb.xmin + bb.width) * w)), int(round((bb.ymin + bb.height) * h)))
            if box[2] > box[0] and box[3] > box[1]:
                found.append((float(d.score[0]) if d.score else 0.0, box))
        return found

    def _detect(self, rgb: np.ndarray, *, tiles: bool = True) -> Box | None:
        """Box of the largest face in the frame (full-frame pixels), or None.

        The detector looks at a 192-px copy of the frame, so a face that is tiny in a big frame
        is searched again on overlapping tiles of :attr:`TILE` px (when ``tiles``).
        """
        found = self._detect_once(rgb)
        h, w = rgb.shape[:2]
        if not found and tiles and max(h, w) > self.TILE:
            t = min(self.TILE, h, w)
            step = t // 2
            ys = sorted({*range(0, max(1, h - t + 1), step), max(0, h - t)})
            xs = sorted({*range(0, max(1, w - t + 1), step), max(0, w - t)})
            for y in ys:
                for x in xs:
                    for score, (x0, y0, x1, y1) in self._detect_once(rgb[y:y + t, x:x + t]):
                        found.append((score, (x0 + x, y0 + y, x1 + x, y1 + y)))
        if not found:
            return None
        best = max(score for score, _ in found)
        cands = [b for score, b in found if score >= 0.8 * best]
        return max(cands, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))

    def _crop_around(self, box: tuple[float, float, float, float], shape: tuple[int, ...]) -> Box:
        h, w = shape[:2]
        x0, y0, x1, y1 = box
        side = self.CROP_PAD * max(x1 - x0, y1 - y0)
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        bx0 = int(max(0, math.floor(cx - side / 2)))
        by0 = int(max(0, math.floor(cy - side / 2)))
        bx1 = int(min(w, math.ceil(cx + side / 2)))
        by1 = int(min(h, math.ceil(cy + side / 2)))
        return bx0, by0, bx1, by1

    def _wants_crop(self, face: Box | None, shape: tuple[int, ...]) -> bool:
        if face is None or self.crop == "never":
            return False
        if self.crop == "always":
            return True
        h, w = shape[:2]
        side = max(face[2] - face[0], face[3] - face[1])
        return side < self.SMALL_FACE * min(h, w) or max(h, w) > self.BIG_FRAME

    def _choose_box(self, rgb: np.ndarray, *, tiles: bool = True) -> Box | None:
        if self.crop == "never":
            return None
        face = self._detect(rgb, tiles=tiles)
        return self._crop_around(face, rgb.shape) if self._wants_crop(face, rgb.shape) else None

    # -- mesh --------------------------------------------------------------------------------
    def _mesh_on(self, rgb: np.ndarray, box: Box | None) -> np.ndarray | None:
        import cv2

        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
        sub = rgb[y0:y1, x0:x1]
        cw, ch = x1 - x0, y1 - y0
        if cw < 8 or ch < 8:
            return None
        if box is not None and max(cw, ch) > self.MAX_CROP_SIDE:
            s = self.MAX_CROP_SIDE / max(cw, ch)
            sub = cv2.resize(sub, (max(1, round(cw * s)), max(1, round(ch * s))),
                             interpolation=cv2.INTER_AREA)
        sub = np.ascontiguousarray(sub)
        sub.flags.writeable = False
        res = self._mesh.process(sub)
        if not res.multi_face_landmarks:
            return None
        pts = res.multi_face_landmarks[0].landmark
        a = np.array([(p.x, p.y, p.z) for p in pts], dtype=np.float64)
        out = np.empty((a.shape[0], 3), np.float32)
        out[:, 0] = x0 + a[:, 0] * cw
        out[:, 1] = y0 + a[:, 1] * ch
        out[:, 2] = a[:, 2] * cw
        return out

    def _box_still_good(self, lm: np.ndarray, box: Box, shape: tuple[int, ...]) -> bool:
        """The face stays well inside the crop (borders of the frame itself don't count)."""
        h, w = shape[:2]
        x0, y0, x1, y1 = box
        fx0, fy0 = lm[:, 0].min(), lm[:, 1].min()
        fx1, fy1 = lm[:, 0].max(), lm[:, 1].max()
        m = 0.08 * max(x1 - x0, y1 - y0)
        return ((fx0 - x0 >= m or x0 == 0) and (fy0 - y0 >= m or y0 == 0)
                and (x1 - fx1 >= m or x1 == w) and (y1 - fy1 >= m or y1 == h))

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """(478, 3) float32 landmarks of the face in ``frame`` in pixels, or ``None``."""
        if self._mesh is None:
            raise RuntimeError("FaceMeasurer is closed")
        rgb = _as_rgb(frame)
        if self.static_image_mode:
            box = self._choose_box(rgb)
            lm = self._mesh_on(rgb, box)
            if lm is None and box is not None:
                lm = self._mesh_on(rgb, None)
            return lm

        self._since_tiles += 1
        if not self._decided:
            self._box = self._choose_box(rgb)
            self._decided = True
            self._since_tiles = 0
        lm = self._mesh_on(rgb, self._box)
        if lm is None and self.crop != "never":
            # Lost (or never found) the face: look for it again and restart the tracker.
            tiles = self._since_tiles >= self.TILE_SEARCH_EVERY
            if tiles:
                self._since_tiles = 0
            box = self._choose_box(rgb, tiles=tiles)
            if box != self._box:
                self._box = box
                self.reset_tracker()
                lm = self._mesh_on(rgb, box)
        elif lm is not None and self._box is not None and not self._box_still_good(
                lm, self._box, rgb.shape):
            # The head moved towards the crop's edge: re-centre the crop for the next frames.
            face = (lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max())
            side = max(face[2] - face[0], face[3] - face[1]) / 1.25  # landmarks span > det box
            cx, cy = 0.5 * (face[0] + face[2]), 0.5 * (face[1] + face[3])
            self._box = self._crop_around((cx - side / 2, cy - side / 2, cx + side / 2,
                                           cy + side / 2), rgb.shape)
            self.reset_tracker()
        return lm

    def reset_tracker(self) -> None:
        """Restart the mesh's tracking (keeps the crop box)."""
        if self._mesh is not None:
            self._mesh.close()
        self._mesh = self._new_mesh()

    def measure_frames(self, frames: Iterable[np.ndarray], *, fps: float | None = None
                       ) -> FaceTracks:
        """Measure every frame of ``frames`` (RGB uint8 arrays) into :class:`FaceTracks`."""
        rows: list[np.ndarray] = []
        nan = np.full((N_LANDMARKS, 3), np.nan, np.float32)
        for frame in frames:
            lm = self.landmarks(frame)
            rows.append(nan if lm is None else lm)
        lm_all = np.stack(rows) if rows else np.zeros((0, N_LANDMARKS, 3), np.float32)
        return FaceTracks.from_landmarks(lm_all, fps=fps)


def measure_frames(frames: Iterable[np.ndarray], *, static_image_mode: bool = False,
                   crop: str = "auto", fps: float | None = None) -> FaceTracks:
    """Measure a sequence of RGB frames (tracking mode unless ``static_image_mode``)."""
    with FaceMeasurer(static_image_mode=static_image_mode, crop=crop) as m:
        return m.measure_frames(frames, fps=fps)


def measure_image(image: np.ndarray, *, crop: str = "auto") -> FaceTracks:
    """Measure one photo (static mode); a one-row :class:`FaceTracks`."""
    return measure_frames([image], static_image_mode=True, crop=crop)


# ------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------


def _open_container(path: str | os.PathLike):
    import av

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise VideoError(f"video not found: {p}")
    try:
        return av.open(p)
    except (av.FFmpegError, OSError, ValueError) as exc:  # pragma: no cover - depends on file
        raise VideoError(f"cannot read video {p}: {exc}") from None


def video_fps(stream) -> float:
    """Frame rate of a PyAV video stream (average rate, else guessed, else 25)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            r = float(rate)
            if r > 0:
                return r
    return 25.0


def iter_video_frames(path: str | os.PathLike, *, max_frames: int | None = None
                      ) -> Iterator[np.ndarray]:
    """Yield the RGB uint8 frames of the first video stream of ``path`` (streaming)."""
    import av

    container = _open_container(path)
    try:
        if not container.streams.video:
            raise VideoError(f"no video stream in {os.fspath(path)}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except av.FFmpegError as exc:
            raise VideoError(f"cannot decode video {os.fspath(path)}: {exc}") from None
    finally:
        container.close()


def measure_video(path: str | os.PathLike, *, max_frames: int | None = None,
                  crop: str = "auto") -> FaceTracks:
    """Decode a video with PyAV and measure its frames in tracking mode."""
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise VideoError(f"no video stream in {os.fspath(path)}")
        fps = video_fps(container.streams.video[0])
    finally:
        container.close()
    return measure_frames(iter_video_frames(path, max_frames=max_frames), crop=crop, fps=fps)
