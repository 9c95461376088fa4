"""Video driving: a real person's face and head motion, retargeted onto the portrait.

A driving video is measured frame by frame with MediaPipe's face mesh (478 points in 3D, through
:class:`echomimic.quality.measure.FaceMeasurer`), and each frame becomes a row of a
:class:`~echomimic.types.MotionTrack`:

1. **Frontalize.** The head's rotation is read from rigid landmarks
   (:func:`echomimic.quality.measure.head_pose`'s axes) and undone, so the expression figures
   below are measured on a frontal face in units of the 3D outer eye-corner distance, whatever
   the head does.
2. **Figures.** Lip gap, mouth width and corner height, eye opening, iris position, brow heights
   (geometric, from landmarks: no model outputs blendshapes).
3. **Neutral.** Every figure is taken relative to the driver's own neutral: closed lips (a low
   percentile of the lip gap, at most :data:`_CLOSED_GAP`), open eyes (a high percentile of the
   eye opening), the median of the rest. A driver with a big mouth or narrow eyes therefore does
   not distort the portrait.
4. **Retarget.** The offsets are turned into ARKit blendshapes through the warp rig's own gains
   (calibrated by rendering the rig and measuring the result), so that rendering the track
   reproduces the driver's measured mouth opening, eye opening and mouth shape.
5. **Head.** Yaw, pitch, roll relative to the driver's first pose (``relative=True``) or to the
   portrait's own pose (``relative=False``, absolute); translation of the head's pivot and scale
   relative to the shot's first frame, which stands for the portrait (so a portrait that is the
   video's first frame starts exactly where it is); in absolute mode, when the framings match,
   plus where the driver's head sits relative to the portrait's. Large angles are eased into the
   range the warp renders well (:data:`HEAD_SOFT_LIMITS`).
6. **Clean-up.** Frames without a usable face (none found, the face leaving the frame, an
   implausible pose) hold the last good head pose while the expression eases to neutral; a cut to
   another shot (a jump in face position, size or shape) starts a new segment with its own
   neutral, and the change is eased over a few frames. Every channel is smoothed with a One-Euro
   filter (detector jitter goes, fast motion such as blinks keeps little lag).
7. **Timing.** The track is resampled from the video's frame rate to the output's; when the
   video is shorter than the output it loops (``pingpong``, ``repeat``) or holds its last frame.

Public functions: :func:`video_track`, :func:`extract_motion`, :func:`measure_driver`,
:func:`landmarks_track`, :func:`drive_channels`, :func:`fill_undriven`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from echomimic.errors import InvalidOption, NoFaceFound, VideoError
from echomimic.motion.smoothing import one_euro
from echomimic.types import ARKIT_BLENDSHAPES, HEAD_CHANNELS, NEUTRAL, MotionTrack, Portrait

__all__ = [
    "video_track", "extract_motion", "measure_driver", "landmarks_track", "retarget",
    "drive_channels", "fill_undriven", "loop_positions", "DriverMeasurement",
    "DRIVE_REGIONS", "VIDEO_CHANNELS", "HEAD_SOFT_LIMITS", "LOOP_MODES",
]

ProgressFn = Callable[[str, float], None]

# ------------------------------------------------------------------------------------------------
# channels and regions
# ------------------------------------------------------------------------------------------------

_EYE_CHANNELS = tuple(c for c in ARKIT_BLENDSHAPES if c.startswith("eye"))
_BROW_CHANNELS = tuple(c for c in ARKIT_BLENDSHAPES if c.startswith("brow"))
_LIP_CHANNELS = tuple(c for c in ARKIT_BLENDSHAPES
                      if c.startswith(("jaw", "mouth", "cheek")) or c == "tongueOut")

#: ``drive`` regions and the channels each one takes from the video.
DRIVE_REGIONS: dict[str, tuple[str, ...]] = {
    "head": HEAD_CHANNELS,
    "eyes": _EYE_CHANNELS,
    "brows": _BROW_CHANNELS,
    "lips": _LIP_CHANNELS,
}

#: Channels a video track can carry (what the geometry measures), in track order.
VIDEO_CHANNELS: tuple[str, ...] = HEAD_CHANNELS + (
    "jawOpen", "mouthClose", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthStretchLeft", "mouthStretchRight", "mouthPucker",
    "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookInLeft", "eyeLookOutLeft", "eyeLookInRight", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeLookDownLeft", "eyeLookDownRight",
    "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight",
)

#: Head-pose range the warp renders well; beyond ``0.7 x`` the limit, values are eased (tanh)
#: towards it instead of being cut. Degrees for angles, face widths for translation, offset
#: from 1 for scale.
HEAD_SOFT_LIMITS: dict[str, float] = {
    "yaw": 20.0, "pitch": 15.0, "roll": 15.0, "tx": 0.12, "ty": 0.12, "scale": 0.12,
}

#: What happens when the output is longer than the video.
LOOP_MODES: tuple[str, ...] = ("pingpong", "repeat", "hold")

# ------------------------------------------------------------------------------------------------
# landmark geometry (MediaPipe face-mesh indices)
# ------------------------------------------------------------------------------------------------

_POSE_PAIRS = ((33, 263), (133, 362), (234, 454), (127, 356))
_POSE_UPPER = (10, 151, 9, 8)
_POSE_LOWER = (1, 2, 4, 5)
_POSE_TILT = math.radians(16.85)     # MediaPipe's canonical nose-line tilt (see quality.measure)
_RIGID = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 234, 454, 127, 356, 10, 151, 9, 8)
_INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
# image-left eye = the subject's right eye (eyeBlinkRight); image-right eye = subject's left
_EYE_IL = {"corners": (33, 133), "lids": ((159, 145), (158, 153), (160, 144)), "iris": 468}
_EYE_IR = {"corners": (362, 263), "lids": ((386, 374), (385, 380), (387, 373)), "iris": 473}
_BROW_INNER = (107, 336)    # image-left, image-right
_BROW_OUTER = (70, 300)
_BROW_MID = (105, 334)

# ------------------------------------------------------------------------------------------------
# the warp rig's response (jawOpen, eyeBlink, smile, ...) measured on rendered frames
# ------------------------------------------------------------------------------------------------
#: lip-gap increase (eye-distance units) for jawOpen 0, .25, .5, .75, 1 (the rig's lens opening)
_JAW_GAP = np.array([0.0, 0.144, 0.260, 0.356, 0.445])
_JAW_VAL = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
#: the most lip gap (eye distances) the face mesh reads on closed lips: a driver whose lips stay
#: further apart than this all along (teeth showing at rest) really has them apart, and the
#: warp closes the photo's lips at ``jawOpen`` 0, so that gap must still open the jaw
_CLOSED_GAP = 0.01
#: remaining eye opening (share of the open eye) for eyeBlink 1, .75, .5, .25, 0
_BLINK_OPEN = np.array([0.23, 0.37, 0.78, 0.90, 1.0])
_BLINK_VAL = np.array([1.0, 0.75, 0.5, 0.25, 0.0])
_SMILE_UP = 0.103       # corner rise per unit of mouthSmile
_FROWN_DOWN = 0.07      # corner drop per unit of mouthFrown
_JAW_CORNER_DROP = 0.14 # corner drop per unit of jawOpen (the rig's jaw carries the corners)
_SMILE_WIDTH = 0.109    # mouth widening per unit of mouthSmile (both sides)
_JAW_WIDTH = 0.09       # mouth widening per unit of jawOpen
_STRETCH_WIDTH = 0.14   # per unit of mouthStretch (both sides)
_PUCKER_NARROW = 0.27   # relative narrowing of the mouth per unit of mouthPucker
_BROW_UP = 0.10         # brow rise (eye distances) per unit of browInnerUp / browOuterUp
_BROW_DOWN = 0.06       # brow drop per unit of browDown
_LOOK = 0.18            # iris shift (eye widths) per unit of eyeLook*


# ================================================================================================
# measuring
# ================================================================================================


@dataclass
class DriverMeasurement:
    """Per-frame geometric figures of a driving video's face.

    ``figures`` maps a figure name to an (n,) float64 array (NaN where ``good`` is False);
    ``segments`` lists the ``(start, stop)`` frame ranges of continuous shots (a cut starts a new
    one). ``fps`` is the video's frame rate.
    """

    fps: float
    figures: dict[str, np.ndarray]
    good: np.ndarray
    segments: list[tuple[int, int]]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] | None = None     # (width, height) of the frames, when known

    @property
    def n_frames(self) -> int:
        return int(self.good.shape[0])


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, np.nan)


def _axes(lm: np.ndarray, flat: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face axes (n, 3) each: lateral ``ex`` (image left to right), vertical ``ey`` (down the
    face, untilted to MediaPipe's canonical frontal face unless ``flat``: 2D points) and ``ez``
    (into the head)."""
    left = lm[:, [p[0] for p in _POSE_PAIRS]]
    right = lm[:, [p[1] for p in _POSE_PAIRS]]
    ex = _unit((right - left).mean(axis=1))
    v = lm[:, list(_POSE_LOWER)].mean(axis=1) - lm[:, list(_POSE_UPPER)].mean(axis=1)
    v = _unit(v - np.einsum("ij,ij->i", v, ex)[:, None] * ex)
    w = np.cross(ex, v)
    tilt = 0.0 if flat else _POSE_TILT
    ey = math.cos(tilt) * v + math.sin(tilt) * w
    ez = np.cross(ex, ey)
    return ex, ey, ez


#: 2D landmarks (no depth): tan(yaw) per unit of the nose tip's lateral offset from the middle of
#: the cheek edges (over half the face width), and pitch in degrees per unit of the nose tip's
#: height below the eye line (over the eye distance); fitted on MediaPipe meshes of talking heads
#: (r = 0.99 and 0.88 against the 3D pose).
_YAW_2D = 0.571
_PITCH_2D = 81.3


def _pose_2d(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate yaw and pitch (degrees, up to a constant offset for pitch) from 2D points."""
    xy = lm[..., :2]
    with np.errstate(invalid="ignore", divide="ignore"):
        ex = xy[:, 263] - xy[:, 33]
        e = np.linalg.norm(ex, axis=1)
        ex = ex / e[:, None]
        ey = np.stack([-ex[:, 1], ex[:, 0]], axis=1)
        mid = 0.5 * (xy[:, 234] + xy[:, 454])
        half = np.einsum("ij,ij->i", xy[:, 454] - xy[:, 234], ex) / 2
        nx = np.einsum("ij,ij->i", xy[:, 1] - mid, ex) / half
        eyes = 0.5 * (xy[:, 33] + xy[:, 263])
        ny = np.einsum("ij,ij->i", xy[:, 1] - eyes, ey) / e
    return np.degrees(np.arctan(_YAW_2D * nx)), _PITCH_2D * ny


def _figures(lm: np.ndarray, size: tuple[int, int] | None = None, flat: bool = False
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-frame figures of (n, K, 3) pixel landmarks (NaN rows for missing faces); ``flat``
    when the points have no depth (z = 0): yaw and pitch then come from 2D cues.

    Returns the figures and the (n,) ``good`` mask.
    """
    lm = np.asarray(lm, np.float64)
    n, k = lm.shape[:2]
    with np.errstate(invalid="ignore", divide="ignore"):
        ex, ey, ez = _axes(lm, flat)
        # yaw/pitch/roll exactly as echomimic.quality.measure.head_pose reads them
        f = -ez
        yaw = np.degrees(np.arctan2(f[:, 0], -f[:, 2]))
        pitch = np.degrees(np.arcsin(np.clip(f[:, 1], -1.0, 1.0)))
        roll = np.degrees(np.arctan2(ex[:, 1], ex[:, 0]))
        if flat:
            yaw, pitch = _pose_2d(lm)
        e3 = np.linalg.norm(lm[:, 263] - lm[:, 33], axis=1)
        e2 = np.linalg.norm(lm[:, 263, :2] - lm[:, 33, :2], axis=1)
        centre = lm[:, list(_RIGID)].mean(axis=1)                      # (n, 3)
        rel = (lm - centre[:, None, :]) / e3[:, None, None]
        loc = np.stack([np.einsum("nkj,nj->nk", rel, a) for a in (ex, ey, ez)], axis=-1)
        x, y = loc[..., 0], loc[..., 1]

        def d2(i: int, j: int) -> np.ndarray:
            return np.hypot(x[:, i] - x[:, j], y[:, i] - y[:, j])

        gap = np.mean([np.maximum(y[:, b] - y[:, a], 0.0) for a, b in _INNER_LIP_PAIRS], axis=0)
        width = d2(61, 291)
        eye_y = 0.5 * (y[:, 33] + y[:, 263])
        corner_up = eye_y - 0.5 * (y[:, 61] + y[:, 291])             # > 0 above the eyes
        corner_up_l, corner_up_r = eye_y - y[:, 61], eye_y - y[:, 291]
        figs: dict[str, np.ndarray] = {
            "yaw": yaw, "pitch": pitch, "roll": roll,
            "cx": centre[:, 0], "cy": centre[:, 1], "cz": centre[:, 2], "e3": e3,
            "gap": gap, "width": width, "corner_up": corner_up,
            "corner_up_l": corner_up_l, "corner_up_r": corner_up_r,
        }
        for side, eye in (("il", _EYE_IL), ("ir", _EYE_IR)):
            a, b = eye["corners"]
            w = d2(a, b)
            lid = np.mean([y[:, lo] - y[:, up] for up, lo in eye["lids"]], axis=0)
            figs[f"open_{side}"] = np.maximum(lid, 0.0) / w
            if k > 473:
                mx = 0.5 * (x[:, a] + x[:, b])
                my = 0.5 * (y[:, a] + y[:, b])
                figs[f"gaze_x_{side}"] = (x[:, eye["iris"]] - mx) / w
                figs[f"gaze_y_{side}"] = (y[:, eye["iris"]] - my) / w
        for name, (il, ir) in (("brow_in", _BROW_INNER), ("brow_out", _BROW_OUTER),
                               ("brow_mid", _BROW_MID)):
            figs[f"{name}_il"] = eye_y - y[:, il]
            figs[f"{name}_ir"] = eye_y - y[:, ir]
        # identity cue: the frontalized rigid shape (x, y of the rigid points)
        shape = loc[:, list(_RIGID), :2].reshape(n, -1)
        # the head's pivot, placed as the rig places it (behind the face, a little below its
        # centre): translation is measured there, so turning the head is not read as a shift
        zl = np.where(np.isfinite(loc[..., 2]), loc[..., 2], 0.0)
        span = zl.max(axis=1) - zl.min(axis=1)
        piv = np.stack([x.mean(axis=1), y.mean(axis=1) + 0.15, zl.max(axis=1) + 0.3 * span],
                       axis=1)
        ok = np.isfinite(piv).all(axis=1)
        pl = np.median(piv[ok], axis=0) if ok.any() else np.zeros(3)
        pivot = centre + e3[:, None] * (pl[0] * ex + pl[1] * ey + pl[2] * ez)
        figs["px"], figs["py"] = pivot[:, 0], pivot[:, 1]

    good = np.isfinite(e3) & (e2 > 6.0) & np.isfinite(yaw) & np.isfinite(pitch)
    good &= (np.abs(yaw) < 55) & (np.abs(pitch) < 45)
    if size is not None:
        w_img, h_img = size
        xy = lm[..., :2]
        margin = 0.02 * np.nan_to_num(e2)[:, None]
        outside = ((xy[..., 0] < -margin) | (xy[..., 0] > w_img + margin)
                   | (xy[..., 1] < -margin) | (xy[..., 1] > h_img + margin))
        # a face partly out of the frame: the mesh guesses the hidden part
        good &= outside.mean(axis=1) <= 0.03
    for v in figs.values():
        v[~good] = np.nan
    figs["_shape"] = np.where(good[:, None], shape, np.nan)  # type: ignore[assignment]
    return figs, good


def _segments(figs: dict[str, np.ndarray], good: np.ndarray, fps: float) -> list[tuple[int, int]]:
    """Split the frames at cuts: between consecutive good frames, a jump of the face's position
    (over a third of an eye distance per frame), of its size (over 20 %) or of its shape."""
    n = good.shape[0]
    idx = np.flatnonzero(good)
    cuts = [0]
    shape = figs["_shape"]
    for a, b in zip(idx[:-1], idx[1:]):
        dt = max(1, int(b - a))
        e = 0.5 * (figs["e3"][a] + figs["e3"][b])
        move = math.hypot(figs["cx"][b] - figs["cx"][a], figs["cy"][b] - figs["cy"][a]) / e
        size = abs(math.log(figs["e3"][b] / figs["e3"][a]))
        form = float(np.mean(np.abs(shape[b] - shape[a])))
        allow = min(1.0, dt / max(fps, 1.0))      # after a gap the face may have moved
        if move > 0.35 + 2.0 * allow or size > 0.2 + 0.5 * allow or form > 0.035 + 0.02 * allow:
            cuts.append(int(b))
    cuts.append(n)
    return [(s, e) for s, e in zip(cuts[:-1], cuts[1:]) if e > s]


def measure_landmarks(landmarks: np.ndarray, *, fps: float, size: tuple[int, int] | None = None,
                      source: str = "") -> DriverMeasurement:
    """Figures, good frames and shots of a landmark sequence.

    Args:
        landmarks: (n, K, 3) or (n, K, 2) pixel landmarks in MediaPipe face-mesh order (K = 478,
            or 468 without the irises); NaN rows where no face was found. Without depth (2D
            points, or z all 0) head yaw and pitch are estimated from 2D cues (approximate,
            relative only).
        fps: frames per second of the sequence.
        size: (width, height) of the frames, to tell when the face leaves the frame.
        source: description for messages.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] not in (2, 3):
        raise VideoError(f"landmarks must be (frames, 468 or 478, 2 or 3), got {lm.shape}")
    if lm.shape[0] == 0:
        raise VideoError(f"the driving sequence {source or ''} has no frames".replace("  ", " "))
    flat = lm.shape[2] == 2 or not np.any(np.nan_to_num(lm[..., 2]))
    if lm.shape[2] == 2:
        lm = np.concatenate([lm, np.zeros(lm.shape[:2] + (1,))], axis=-1)
    figs, good = _figures(lm, size, flat)
    if not good.any():
        raise NoFaceFound(f"no usable face in any frame of the driving video {source}".rstrip())
    segs = _segments(figs, good, fps)
    return DriverMeasurement(fps=float(fps), figures=figs, good=good, segments=segs, source=source,
                             size=None if size is None else (int(size[0]), int(size[1])),
                             meta={"frames": int(lm.shape[0]), "good_frames": int(good.sum()),
                                   "cuts": [s for s, _ in segs[1:]], "depth": not flat})


def _describe(src: Any) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"data ({len(src)} bytes)"
    try:
        return repr(os.fspath(src))
    except TypeError:
        return "frames"


def measure_driver(src: Any, *, source_fps: float | None = None, max_frames: int | None = None,
                   progress: ProgressFn | None = None) -> DriverMeasurement:
    """Measure a driving video (path or bytes, any format FFmpeg reads) or a sequence of RGB
    frames into per-frame figures.

    Args:
        src: a video path or bytes, or an iterable of (H, W, 3) uint8 RGB frames.
        source_fps: frame rate of ``src`` when it is frames (default 25); ignored for files.
        max_frames: measure at most this many frames (the rest of the video is not decoded).
        progress: ``progress("analyze_video", fraction)`` while measuring.

    Raises:
        VideoError: unreadable, corrupt or empty video.
        NoFaceFound: no usable face in any frame.
    """
    from echomimic.quality.measure import N_LANDMARKS, FaceMeasurer

    name = _describe(src)
    if isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)):
        from echomimic.media.video import iter_video_frames, probe_video

        info = probe_video(src)
        fps = float(info["fps"]) or 25.0
        total = int(info["n_frames"]) or None
        frames: Iterable[np.ndarray] = iter_video_frames(src, max_frames=max_frames)
    else:
        fps = float(source_fps or 25.0)
        total = None
        frames = src if max_frames is None else _take(src, max_frames)
        try:
            total = len(src)  # type: ignore[arg-type]
        except TypeError:
            pass
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"video {name} has no valid frame rate")
    if max_frames is not None and total:
        total = min(total, max_frames)
    rows: list[np.ndarray] = []
    nan = np.full((N_LANDMARKS, 3), np.nan, np.float32)
    size = None
    with FaceMeasurer() as meter:
        for i, frame in enumerate(frames):
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[2] < 3 or frame.dtype != np.uint8:
                raise VideoError(f"driving frames must be (H, W, 3) uint8 RGB, got {frame.shape} "
                                 f"{frame.dtype}")
            if size is not None and (frame.shape[1], frame.shape[0]) != size:
                meter.reset()        # frame size changed: start tracking afresh
            size = (int(frame.shape[1]), int(frame.shape[0]))
            lm = meter.landmarks(frame)
            rows.append(nan if lm is None else lm)
            if progress is not None and (i % 25 == 0):
                progress("analyze_video", min(1.0, (i + 1) / total) if total else 0.0)
    if not rows:
        raise VideoError(f"the driving video {name} has no frames")
    if progress is not None:
        progress("analyze_video", 1.0)
    return measure_landmarks(np.stack(rows), fps=fps, size=size, source=name)


def _take(it: Iterable[np.ndarray], n: int) -> Iterable[np.ndarray]:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


# ================================================================================================
# retargeting
# ================================================================================================


def _soft_limit(x: np.ndarray, lim: float, knee: float = 0.7) -> np.ndarray:
    """Identity up to ``knee * lim``, then eased (tanh) towards ``lim``; odd in ``x``."""
    a = np.abs(x)
    k = knee * lim
    span = lim - k
    eased = k + span * np.tanh((a - k) / span)
    return np.sign(x) * np.where(a > k, eased, a)


def _hold_fill(v: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Bad frames take the last good value (leading bad frames the first good one)."""
    idx = np.where(good, np.arange(len(v)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.flatnonzero(good)[0])
    idx[idx < 0] = first
    return v[idx]


def _neutral(figs: dict[str, np.ndarray], sl: slice) -> dict[str, float]:
    """The driver's neutral in one shot: closed lips (its most-closed frames, at most
    :data:`_CLOSED_GAP` apart), open eyes, median for the rest."""
    out: dict[str, float] = {}
    gap = figs["gap"][sl]
    most_closed = float(np.nanpercentile(gap, 5))
    out["gap"] = min(most_closed, _CLOSED_GAP)
    closed = gap <= most_closed + 0.03
    for key in ("width", "corner_up", "corner_up_l", "corner_up_r"):
        col = figs[key][sl]
        sel = col[closed & np.isfinite(col)]
        out[key] = float(np.median(sel)) if sel.size >= 3 else float(np.nanmedian(col))
    for key, col in figs.items():
        if key in out or key.startswith("_"):
            continue
        col = col[sl]
        if key.startswith("open_"):
            out[key] = float(np.nanpercentile(col, 75))
        else:
            out[key] = float(np.nanmedian(col))
    return out


def _expression(figs: dict[str, np.ndarray], nt: dict[str, float]) -> dict[str, np.ndarray]:
    """Blendshapes from figures relative to the neutral ``nt``, through the rig's gains."""
    out: dict[str, np.ndarray] = {}
    dgap = np.maximum(figs["gap"] - nt["gap"], 0.0)
    jaw = np.interp(dgap, _JAW_GAP, _JAW_VAL)
    out["jawOpen"] = jaw
    out["mouthClose"] = np.zeros_like(jaw)
    smile_sum = np.zeros_like(jaw)
    for side, key in (("Right", "corner_up_l"), ("Left", "corner_up_r")):   # image-left = R
        up = figs[key] - nt[key] + _JAW_CORNER_DROP * jaw
        out[f"mouthSmile{side}"] = np.clip(up / _SMILE_UP, 0.0, 1.0)
        out[f"mouthFrown{side}"] = np.clip(-up / _FROWN_DOWN, 0.0, 1.0)
        smile_sum += out[f"mouthSmile{side}"]
    dw = figs["width"] - nt["width"] - _JAW_WIDTH * jaw - _SMILE_WIDTH * 0.5 * smile_sum
    stretch = np.clip(dw / _STRETCH_WIDTH, 0.0, 1.0)
    out["mouthStretchLeft"] = stretch
    out["mouthStretchRight"] = stretch.copy()
    out["mouthPucker"] = np.clip(-dw / (_PUCKER_NARROW * max(nt["width"], 1e-3)), 0.0, 1.0)
    for side, key in (("Right", "open_il"), ("Left", "open_ir")):
        ratio = figs[key] / max(nt[key], 1e-3)
        out[f"eyeBlink{side}"] = np.interp(ratio, _BLINK_OPEN, _BLINK_VAL)
    if "gaze_x_il" in figs:
        gx = 0.5 * (figs["gaze_x_il"] - nt["gaze_x_il"] + figs["gaze_x_ir"] - nt["gaze_x_ir"]) / _LOOK
        gy = 0.5 * (figs["gaze_y_il"] - nt["gaze_y_il"] + figs["gaze_y_ir"] - nt["gaze_y_ir"]) / _LOOK
        right, left = np.clip(gx, 0, 1), np.clip(-gx, 0, 1)       # towards the image's right/left
        out["eyeLookOutLeft"], out["eyeLookInRight"] = right, right.copy()
        out["eyeLookInLeft"], out["eyeLookOutRight"] = left, left.copy()
        up, down = np.clip(-gy, 0, 1), np.clip(gy, 0, 1)
        out["eyeLookUpLeft"], out["eyeLookUpRight"] = up, up.copy()
        out["eyeLookDownLeft"], out["eyeLookDownRight"] = down, down.copy()
    inner = 0.5 * (figs["brow_in_il"] - nt["brow_in_il"] + figs["brow_in_ir"] - nt["brow_in_ir"])
    out["browInnerUp"] = np.clip(inner / _BROW_UP, 0.0, 1.0)
    for side, s in (("Right", "il"), ("Left", "ir")):
        outer = figs[f"brow_out_{s}"] - nt[f"brow_out_{s}"]
        mid = figs[f"brow_mid_{s}"] - nt[f"brow_mid_{s}"]
        out[f"browOuterUp{side}"] = np.clip(outer / _BROW_UP, 0.0, 1.0)
        out[f"browDown{side}"] = np.clip(-mid / _BROW_DOWN, 0.0, 1.0)
    return out


def _head(figs: dict[str, np.ndarray], pose0: tuple[float, float, float] | None,
          first: int, place: tuple[float, float, float] = (0.0, 0.0, 1.0)
          ) -> dict[str, np.ndarray]:
    """Head channels, anchored at the driver's first pose: the frame ``first`` (the shot's first
    good frame, which stands for the portrait).

    Rotation relative to that first pose (``pose0`` None, relative) or to ``pose0`` (absolute:
    the portrait's own angles). Translation and scale relative to the first pose's position and
    size, plus ``place`` = (tx, ty, scale) of the driver's head relative to the portrait's there
    (absolute placement; (0, 0, 1) puts the first pose exactly where the portrait's head is)."""
    def at_first(key: str) -> float:
        return float(figs[key][first])

    ref = (at_first("yaw"), at_first("pitch"), at_first("roll")) if pose0 is None else pose0
    out = {"yaw": figs["yaw"] - ref[0], "pitch": figs["pitch"] - ref[1],
           "roll": figs["roll"] - ref[2]}
    e0 = max(at_first("e3"), 1e-6)
    out["tx"] = place[0] + (figs["px"] - at_first("px")) / e0
    out["ty"] = place[1] + (figs["py"] - at_first("py")) / e0
    out["scale"] = place[2] * figs["e3"] / e0
    return out


def _placement(figs: dict[str, np.ndarray], first: int, size: tuple[int, int] | None,
               portrait: Portrait | None) -> tuple[float, float, float]:
    """(tx, ty, scale) of the driver's head at its first pose (frame ``first``) relative to the
    portrait's head, both read in their own frames (the driver's frame scaled onto the
    portrait's): where the driver's head actually is, for absolute placement. Only when the
    framings match (same aspect ratio, the head within the rig's translation and scale range, as
    when the portrait is a frame of the driving video); otherwise (0, 0, 1): the head starts where
    the portrait's is."""
    none = (0.0, 0.0, 1.0)
    if portrait is None or size is None:
        return none
    wp, hp = portrait.size
    wd, hd = size
    if min(wp, hp, wd, hd) <= 0 or abs((wp / hp) / (wd / hd) - 1.0) > 0.01:
        return none
    pf, ok = _figures(np.asarray(portrait.landmarks, np.float64)[None])
    if not ok[0]:
        return none
    k = wp / wd
    ep = float(pf["e3"][0])
    cx, cy, e3 = (float(figs[key][first]) for key in ("cx", "cy", "e3"))
    tx = (k * cx - float(pf["cx"][0])) / ep
    ty = (k * cy - float(pf["cy"][0])) / ep
    sc = k * e3 / ep
    if not (np.isfinite([tx, ty, sc]).all() and abs(tx) <= HEAD_SOFT_LIMITS["tx"]
            and abs(ty) <= HEAD_SOFT_LIMITS["ty"] and abs(sc - 1.0) <= HEAD_SOFT_LIMITS["scale"]):
        return none
    return (tx, ty, sc)


#: One-Euro settings per kind of channel: (min_cutoff Hz, beta per unit/s).
_SMOOTH = {"angle": (1.2, 0.08), "trans": (1.2, 3.0), "expr": (2.5, 4.0), "blink": (4.0, 8.0)}


def _smooth_kind(name: str) -> str:
    if name in ("yaw", "pitch", "roll"):
        return "angle"
    if name in ("tx", "ty", "scale"):
        return "trans"
    if name.startswith("eyeBlink"):
        return "blink"
    return "expr"


def retarget(meas: DriverMeasurement, *, relative: bool = True,
             portrait: Portrait | None = None, smooth: bool = True) -> MotionTrack:
    """The driver's motion as a :class:`MotionTrack` at the driver's frame rate (every channel
    of :data:`VIDEO_CHANNELS`, unscaled).

    Args:
        meas: from :func:`measure_driver` or :func:`measure_landmarks`.
        relative: head rotation relative to the driver's first pose (True), or the driver's
            absolute pose applied to the portrait (False: the portrait turns to the driver's
            angles; without ``portrait`` its pose counts as frontal). Translation and scale are
            relative to each shot's first good frame (it stands for the portrait); with
            ``relative=False`` and a portrait framed like the driver (same aspect ratio, head
            within the rig's range) the head is also placed where the driver's head sits
            relative to the portrait's. Expressions are always relative to the driver's neutral.
        portrait: the portrait, for absolute head pose.
        smooth: apply the One-Euro filter (per channel, per shot).
    """
    n = meas.n_frames
    figs, good = meas.figures, meas.good
    pose0 = None
    if not meas.meta.get("depth", True):
        relative = True           # 2D points: the absolute yaw/pitch are not known
    if not relative:
        if portrait is not None:
            from echomimic.quality.measure import head_pose

            y, p, r = head_pose(np.asarray(portrait.landmarks, np.float64)[None])
            pose0 = (float(y[0]), float(p[0]), float(r[0]))
        else:
            pose0 = (0.0, 0.0, 0.0)
    cols = {c: np.full(n, NEUTRAL[c], np.float64) for c in VIDEO_CHANNELS}
    fps = meas.fps
    for s, e in meas.segments:
        sl = slice(s, e)
        seg_good = good[sl]
        if not seg_good.any():
            continue
        f_seg = {k: v[sl] for k, v in figs.items() if not k.startswith("_")}
        nt = _neutral(figs, sl)
        # the shot's first good frame stands for the portrait. One frame, not a median over the
        # first few: a speaker may turn several degrees within a fifth of a second
        first = int(np.flatnonzero(seg_good)[0])
        place = (0.0, 0.0, 1.0) if relative else _placement(f_seg, first, meas.size, portrait)
        vals = {**_head(f_seg, pose0, first, place), **_expression(f_seg, nt)}
        held: dict[str, np.ndarray] = {}
        for c in VIDEO_CHANNELS:
            v = vals.get(c)
            if v is None:
                continue
            v = _hold_fill(np.asarray(v, np.float64), seg_good)
            if c not in HEAD_CHANNELS:
                v = _fade_gaps(v, seg_good, NEUTRAL[c], fps)
            held[c] = v
        # where the face comes back, the held pose eases to the new one before smoothing (the
        # One-Euro filter follows a fast step closely: eased after it, the step would snap)
        _ease_steps(held, _gap_ends(seg_good), fps)
        for c, v in held.items():
            if smooth and len(v) > 1:
                mc, beta = _SMOOTH[_smooth_kind(c)]
                v = one_euro(v, fps, min_cutoff=mc, beta=beta)
            cols[c][sl] = v
    # frames before the first good shot hold that shot's first frame
    first = next(s for s, e in meas.segments if good[s:e].any())
    if first > 0:
        for c in VIDEO_CHANNELS:
            cols[c][:first] = cols[c][first]
    _ease_steps(cols, [s for s, _ in meas.segments[1:]], fps)
    for c, lim in HEAD_SOFT_LIMITS.items():
        if c == "scale":
            cols[c] = 1.0 + _soft_limit(cols[c] - 1.0, lim)
        else:
            cols[c] = _soft_limit(cols[c], lim)
    values = np.stack([cols[c] for c in VIDEO_CHANNELS], axis=1)
    meta = {"generator": "video", "source": meas.source, "source_fps": fps,
            "relative": bool(relative), **meas.meta}
    return MotionTrack(fps=fps, channels=list(VIDEO_CHANNELS), values=values.astype(np.float32),
                       meta=meta)


def _fade_gaps(v: np.ndarray, good: np.ndarray, neutral: float, fps: float) -> np.ndarray:
    """In runs of bad frames an expression holds for 0.2 s, then eases to neutral over 0.3 s."""
    out = v.copy()
    hold, fade = 0.2 * fps, 0.3 * fps
    run = 0
    for i in range(len(v)):
        run = 0 if good[i] else run + 1
        if run > hold:
            t = min(1.0, (run - hold) / max(fade, 1.0))
            t = t * t * (3 - 2 * t)
            out[i] = v[i] + (neutral - v[i]) * t
    return out


def _gap_ends(good: np.ndarray) -> list[int]:
    """Frames where a face comes back after bad frames."""
    return [int(i) for i in np.flatnonzero(good[1:] & ~good[:-1]) + 1]


#: fastest head turn (degrees per second, on average over the ease) when a step is eased in
_EASE_DEG_PER_S = 30.0


def _ease_steps(cols: dict[str, np.ndarray], starts: Sequence[int], fps: float,
                seconds: float = 0.2) -> None:
    """Blend the step at each frame of ``starts`` in over ``seconds`` (in place), longer when the
    head must turn further than ``_EASE_DEG_PER_S`` allows in that time (no snap after a long
    gap)."""
    for s in sorted(set(starts)):
        if s <= 0:
            continue
        turn = max((abs(float(cols[c][s] - cols[c][s - 1])) for c in ("yaw", "pitch", "roll")
                    if c in cols), default=0.0)
        k = max(1, int(round(max(seconds, turn / _EASE_DEG_PER_S) * fps)))
        for c, v in cols.items():
            n = len(v)
            e = min(n, s + k)
            step = v[s] - v[s - 1]
            if step == 0:
                continue
            t = (np.arange(s, e) - s + 1) / (k + 1)
            w = 1.0 - t * t * (3 - 2 * t)            # 1 -> 0
            v[s:e] -= step * w


# ================================================================================================
# timing, regions, scales
# ================================================================================================


def loop_positions(n_out: int, fps_out: float, n_src: int, fps_src: float, loop: str) -> np.ndarray:
    """Source frame position (float) of each output frame, with ``loop`` past the source's end.

    ``pingpong`` plays forwards then backwards, ``repeat`` starts again, ``hold`` keeps the last
    frame.
    """
    if loop not in LOOP_MODES:
        raise InvalidOption(f"loop must be one of {', '.join(LOOP_MODES)}, got {loop!r}")
    pos = np.arange(n_out, dtype=np.float64) * (float(fps_src) / float(fps_out))
    last = max(n_src - 1, 0)
    if last == 0:
        return np.zeros(n_out)
    if loop == "hold":
        return np.minimum(pos, last)
    if loop == "repeat":
        return np.mod(pos, float(n_src))
    period = 2.0 * last
    p = np.mod(pos, period)
    return np.where(p <= last, p, period - p)


def _sample(values: np.ndarray, pos: np.ndarray, loop: str) -> np.ndarray:
    """Rows of ``values`` at fractional positions (linear; ``repeat`` wraps to the start)."""
    n = values.shape[0]
    i0 = np.floor(pos).astype(np.int64)
    w = (pos - i0)[:, None]
    i0 = np.clip(i0, 0, n - 1)
    i1 = (i0 + 1) % n if loop == "repeat" else np.minimum(i0 + 1, n - 1)
    return values[i0] * (1.0 - w) + values[i1] * w


def drive_channels(drive: str | Iterable[str] = "all") -> tuple[str, ...]:
    """Channels of :data:`VIDEO_CHANNELS` that follow the video for a ``drive`` value:
    comma-separated regions among ``head``, ``eyes``, ``brows``, ``lips``, or ``all``."""
    parts = [p.strip().lower() for p in (drive.split(",") if isinstance(drive, str) else drive)]
    parts = [p for p in parts if p]
    if not parts:
        raise InvalidOption("drive is empty: give regions among head, eyes, brows, lips, or all")
    unknown = [p for p in parts if p != "all" and p not in DRIVE_REGIONS]
    if unknown:
        raise InvalidOption(f"unknown drive region(s) {', '.join(map(repr, unknown))}: "
                            f"choose among head, eyes, brows, lips, all")
    if "all" in parts:
        return VIDEO_CHANNELS
    wanted = {c for p in parts for c in DRIVE_REGIONS[p]}
    return tuple(c for c in VIDEO_CHANNELS if c in wanted)


def _check_scale(name: str, value: float, hi: float = 3.0) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidOption(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= hi:
        raise InvalidOption(f"{name} must be between 0 and {hi:g}, got {value!r}")
    return value


def conform(track: MotionTrack, *, fps: float, n_frames: int | None = None, drive: str = "all",
            motion_scale: float = 1.0, expression_scale: float = 1.0,
            head_motion_scale: float = 1.0, loop: str = "pingpong") -> MotionTrack:
    """A driver-rate video track at the output's frame rate and length, with only the driven
    channels, their offsets from neutral scaled (``motion_scale`` times ``head_motion_scale``
    for the head, times ``expression_scale`` for the face)."""
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidOption(f"fps must be a positive number, got {fps!r}")
    ms = _check_scale("motion_scale", motion_scale)
    es = _check_scale("expression_scale", expression_scale)
    hs = _check_scale("head_motion_scale", head_motion_scale)
    chans = drive_channels(drive)
    if loop not in LOOP_MODES:
        raise InvalidOption(f"loop must be one of {', '.join(LOOP_MODES)}, got {loop!r}")
    n_src = track.n_frames
    if n_frames is None:
        n_frames = max(1, int(round(n_src / float(track.fps) * fps)))
    if isinstance(n_frames, bool) or int(n_frames) < 0:
        raise InvalidOption(f"n_frames must be a non-negative integer, got {n_frames!r}")
    n_frames = int(n_frames)
    src = np.stack([track.get(c).astype(np.float64) for c in chans], axis=1) if chans else \
        np.zeros((n_src, 0))
    pos = loop_positions(n_frames, fps, n_src, float(track.fps), loop)
    vals = _sample(src, pos, loop) if n_src else np.zeros((n_frames, len(chans)))
    neutral = np.array([NEUTRAL[c] for c in chans])
    gain = np.array([ms * (hs if c in HEAD_CHANNELS else es) for c in chans])
    vals = neutral + (vals - neutral) * gain
    # blendshapes stay in [0, 1]
    for j, c in enumerate(chans):
        if c not in HEAD_CHANNELS:
            vals[:, j] = np.clip(vals[:, j], 0.0, 1.0)
    meta = dict(track.meta)
    meta.update({"drive": ",".join(sorted({p for p in DRIVE_REGIONS
                                           if set(DRIVE_REGIONS[p]) & set(chans)})) or "none",
                 "motion_scale": ms, "loop": loop})
    return MotionTrack(fps=fps, channels=list(chans), values=vals.astype(np.float32), meta=meta)


# ================================================================================================
# public entry points
# ================================================================================================


def landmarks_track(landmarks: np.ndarray, *, source_fps: float, fps: float | None = None,
                    n_frames: int | None = None, size: tuple[int, int] | None = None,
                    drive: str = "all", motion_scale: float = 1.0, relative: bool = True,
                    loop: str = "pingpong", portrait: Portrait | None = None,
                    expression_scale: float = 1.0, head_motion_scale: float = 1.0,
                    source: str = "") -> MotionTrack:
    """A motion track from a face-landmark sequence (see :func:`measure_landmarks`): the same
    retargeting as :func:`video_track`, for landmarks measured elsewhere (pose files)."""
    meas = measure_landmarks(landmarks, fps=source_fps, size=size, source=source)
    raw = retarget(meas, relative=relative, portrait=portrait)
    return conform(raw, fps=fps or source_fps, n_frames=n_frames, drive=drive,
                   motion_scale=motion_scale, expression_scale=expression_scale,
                   head_motion_scale=head_motion_scale, loop=loop)


def video_track(path_or_frames: Any, *, fps: float, n_frames: int | None = None,
                drive: str = "all", motion_scale: float = 1.0, relative: bool = True,
                loop: str = "pingpong", portrait: Portrait | None = None,
                expression_scale: float = 1.0, head_motion_scale: float = 1.0,
                source_fps: float | None = None,
                progress: ProgressFn | None = None) -> MotionTrack:
    """The face and head motion of a driving video, retargeted for the portrait.

    Args:
        path_or_frames: a video (path or bytes; any resolution, frame rate, length and face
            size FFmpeg and the face mesh handle) or an iterable of RGB uint8 frames.
        fps: the output's frame rate; the video's motion is resampled to it.
        n_frames: output frames; default the video's duration. Longer than the video: ``loop``.
        drive: regions that follow the video: comma-separated ``head``, ``eyes``, ``brows``,
            ``lips``, or ``all``. Only their channels are in the track (see
            :func:`fill_undriven` for the others).
        motion_scale: strength of the video's motion (0-3; offset from neutral is multiplied).
        relative: head pose relative to the video's first pose (default: the portrait keeps
            its own pose and place at the start) or absolute (the portrait takes the driver's
            angles; needs ``portrait``).
        loop: ``pingpong`` (default), ``repeat`` or ``hold`` when the output is longer.
        portrait: the portrait, for ``relative=False``.
        expression_scale, head_motion_scale: multiply on top of ``motion_scale`` (face / head).
        source_fps: frame rate of ``path_or_frames`` when it is frames (default 25).
        progress: ``progress("analyze_video", fraction)`` while measuring.

    Returns:
        A :class:`MotionTrack` at ``fps`` with the driven channels of :data:`VIDEO_CHANNELS`;
        ``meta`` says where it came from (``generator: "video"``, cuts, good frames).

    Raises:
        VideoError: unreadable, corrupt or empty video. NoFaceFound: no usable face in any
        frame. InvalidOption: a bad ``drive``, ``loop``, scale or ``fps``.
    """
    drive_channels(drive)                         # fail on bad options before decoding
    for name, v in (("motion_scale", motion_scale), ("expression_scale", expression_scale),
                    ("head_motion_scale", head_motion_scale)):
        _check_scale(name, v)
    if loop not in LOOP_MODES:
        raise InvalidOption(f"loop must be one of {', '.join(LOOP_MODES)}, got {loop!r}")
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidOption(f"fps must be a positive number, got {fps!r}")
    max_frames = None
    if n_frames is not None:
        # never decode more of the video than the output can use
        src_fps = _source_fps(path_or_frames, source_fps)
        max_frames = int(math.ceil(int(n_frames) * src_fps / fps)) + 2
    meas = measure_driver(path_or_frames, source_fps=source_fps, max_frames=max_frames,
                          progress=progress)
    raw = retarget(meas, relative=relative, portrait=portrait)
    return conform(raw, fps=fps, n_frames=n_frames, drive=drive, motion_scale=motion_scale,
                   expression_scale=expression_scale, head_motion_scale=head_motion_scale,
                   loop=loop)


def _source_fps(src: Any, source_fps: float | None) -> float:
    if isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)):
        from echomimic.media.video import probe_video

        return float(probe_video(src)["fps"]) or 25.0
    return float(source_fps or 25.0)


def extract_motion(path: Any, *, fps: float | None = None, relative: bool = True,
                   progress: ProgressFn | None = None) -> MotionTrack:
    """A video's whole motion as a reusable template (every channel of :data:`VIDEO_CHANNELS`,
    unscaled), at ``fps`` (default: the video's own frame rate). Save it with
    :func:`echomimic.motion.save_motion`; replay it with ``motion=``."""
    meas = measure_driver(path, progress=progress)
    raw = retarget(meas, relative=relative)
    track = conform(raw, fps=fps or raw.fps, loop="hold")
    track.meta["generator"] = "video"
    return track


def fill_undriven(video: MotionTrack, base: MotionTrack) -> MotionTrack:
    """One base track: the video's channels, and every other channel of ``base`` (idle life)
    resampled to the video's frame rate and length. Use it when ``drive`` leaves regions to idle
    life; hand the result to the mixer as its base."""
    from echomimic.motion.mix import resample_track

    vals = resample_track(base, video.n_frames, video.fps)
    chans = list(video.channels)
    cols = [video.values.astype(np.float64)]
    for j, c in enumerate(base.channels):
        if c not in chans:
            chans.append(c)
            cols.append(vals[:, j:j + 1])
    meta = dict(video.meta)
    meta["filled_from"] = base.meta.get("generator", "track")
    return MotionTrack(fps=video.fps, channels=chans, values=np.concatenate(cols, axis=1), meta=meta)
