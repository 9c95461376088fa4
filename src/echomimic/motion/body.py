"""Body motion: the body channels of a clip, from a pose sequence, a driving video or the speech.

Precedence (the base body motion, one source):

1. a pose sequence (``pose=FILE``, :func:`pose_body_track`);
2. a driving video in which a body is visible (:func:`video_body_track`);
3. gestures synthesized from the speech (:func:`~echomimic.motion.gestures.speech_gestures`);

and a prompt's body actions add on top at their times (:func:`mix_body`). ``gesture_scale``
multiplies the whole body motion last (0: the arms do not move).

Retargeting (:func:`pose_body_track`). Body channels are displacements of the DWPose joints
from the photo's own rest skeleton in units of the photo's shoulder width. *Relative* (the
default): each joint's motion in the sequence, measured from the sequence's first frame where
it is seen and divided by the sequence's shoulder width, becomes the photo's displacement, so a
sequence made from another person, framing or zoom moves this photo's arms the same way without
deforming it. *Absolute* (``absolute=True``, EchoMimic V2's behaviour): joints go where the
sequence puts them in the frame (its normalised coordinates on the photo), displacement = that
place minus the photo's joint.

Length: a sequence shorter than the clip loops (``loop``: ``pingpong`` — forwards, backwards,
…; ``repeat``; ``hold`` — its last frame stays; ``speech`` — speech gestures take over,
cross-faded over half a second). The clip always lasts as long as the speech.

Missing points (score 0, or below 0.3) are interpolated over time from their neighbours, held at
the ends, and 0 (the photo's pose) when a joint is never seen.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidOption
from ..types import BODY_CHANNELS, BODY_JOINTS, HAND_JOINTS, HANDS, MotionTrack, is_body_channel

__all__ = ["pose_body_track", "video_body_track", "mix_body", "split_body", "rest_in_shoulder_units",
           "BODY_LOOPS", "MIN_SCORE", "sequence_shoulder_width"]

MIN_SCORE = 0.3
#: ways a short pose sequence fills a longer clip
BODY_LOOPS = ("pingpong", "repeat", "hold", "speech")
_BODY_INDEX = {c: i for i, c in enumerate(BODY_CHANNELS)}


def split_body(track: MotionTrack | None) -> tuple[MotionTrack | None, MotionTrack | None]:
    """(the track without body channels, a track of its body channels or None)."""
    if track is None:
        return None, None
    body = [i for i, c in enumerate(track.channels) if is_body_channel(c)]
    if not body:
        return track, None
    rest = [i for i in range(len(track.channels)) if i not in set(body)]
    face = MotionTrack(fps=track.fps, channels=[track.channels[i] for i in rest],
                       values=track.values[:, rest], meta=dict(track.meta))
    bt = MotionTrack(fps=track.fps, channels=[track.channels[i] for i in body],
                     values=track.values[:, body], meta=dict(track.meta))
    return face, bt


def _fill_missing(xy: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Interpolate (F, 2) points over frames where ``ok`` is False; NaN where never seen."""
    out = xy.astype(np.float64).copy()
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        out[:] = np.nan
        return out
    f = np.arange(len(xy))
    for a in range(2):
        out[:, a] = np.interp(f, idx, xy[idx, a])
    return out


def sequence_shoulder_width(body_px: np.ndarray) -> float:
    """Median shoulder width (pixels) of a (F, 18, 3) pixel sequence; 0 when never seen."""
    ok = (body_px[:, 2, 2] > MIN_SCORE) & (body_px[:, 5, 2] > MIN_SCORE)
    if not ok.any():
        return 0.0
    return float(np.median(np.hypot(*(body_px[ok, 2, :2] - body_px[ok, 5, :2]).T)))


def _wrists_from_hands(body: np.ndarray, hands: np.ndarray) -> np.ndarray:
    """``body`` (F, 18, 3) with each wrist taken from its hand's wrist point where the hand model
    found the hand. A whole-body pose model places the wrist coarsely (MediaPipe Pose's wrist
    follows the hand's own wrist point with r ~0.8 on a gesturing speaker); the hand model's
    is sharper. Where the hand is missing, the body's wrist is used, shifted by the median
    offset between the two, so the track does not jump when the hand is lost or found."""
    out = body.copy()
    for slot, j in ((0, BODY_JOINTS.index("l_wrist")), (1, BODY_JOINTS.index("r_wrist"))):
        hw, bw = hands[:, slot, 0], body[:, j]
        have = hw[:, 2] > MIN_SCORE
        if not have.any():
            continue
        both = have & (bw[:, 2] > MIN_SCORE)
        off = np.median(hw[both, :2] - bw[both, :2], axis=0) if both.any() else np.zeros(2)
        w = out[:, j]
        w[~have, :2] = bw[~have, :2] + off
        w[have] = hw[have]
        w[have, 2] = np.maximum(hw[have, 2], bw[have, 2])
    return out


def _loop_index(n_out: int, n_src: int, loop: str) -> tuple[np.ndarray, np.ndarray]:
    """(source frame position for each output frame (float), weight of the sequence in [0, 1])."""
    i = np.arange(n_out, dtype=np.float64)
    w = np.ones(n_out)
    if n_src <= 1:
        return np.zeros(n_out), w
    last = n_src - 1
    if loop == "repeat":
        pos = np.mod(i, n_src)
    elif loop == "pingpong":
        period = 2 * last
        k = np.mod(i, period)
        pos = np.where(k <= last, k, period - k)
    else:   # hold / speech
        pos = np.minimum(i, last)
        if loop == "speech":
            w = np.clip(1.0 - (i - last) / 12.0, 0.0, 1.0)
    return pos, w


def pose_body_track(seq: Any, rest_px: np.ndarray, rest_hands_px: np.ndarray | None, *,
                    image_size: tuple[int, int], n_frames: int, fps: float,
                    loop: str = "pingpong", absolute: bool = False,
                    smooth: float = 1.0) -> MotionTrack:
    """Body channels that make the photo follow a pose sequence.

    Args:
        seq: a :class:`~echomimic.motion.body_pose.PoseSequence` (normalised coordinates).
        rest_px: the photo's skeleton, (18, 3) pixels and scores.
        rest_hands_px: the photo's hands, (2, 21, 3) pixels, or None.
        image_size: the photo's (width, height).
        n_frames, fps: the clip.
        loop: see :data:`BODY_LOOPS`; with ``speech`` the returned track's
            ``meta["weight"]`` holds, per output frame, how much of the sequence remains (the
            caller fades speech gestures in as it falls).
        absolute: place joints where the sequence says instead of moving them by its motion.
        smooth: temporal smoothing (Gaussian sigma in source frames) against detector jitter.
    """
    if loop not in BODY_LOOPS:
        raise InvalidOption(f"loop must be one of {', '.join(BODY_LOOPS)}, got {loop!r}")
    W, H = image_size
    body = np.asarray(seq.body, np.float64).copy()
    hands = np.asarray(seq.hands, np.float64).copy()
    sw_w, sw_h = float(seq.width), float(seq.height)
    body[..., 0] *= sw_w
    body[..., 1] *= sw_h
    hands[..., 0] *= sw_w
    hands[..., 1] *= sw_h
    F = body.shape[0]
    sw_seq = sequence_shoulder_width(body)
    rest_sw = float(np.hypot(*(rest_px[2, :2] - rest_px[5, :2]))) if (
        rest_px[2, 2] > 0 and rest_px[5, 2] > 0) else 0.0
    if rest_sw <= 0:
        raise InvalidOption("the photo's shoulders were not found; a pose sequence needs a "
                            "half-body photo")
    if not absolute and sw_seq <= 0:
        raise InvalidOption("the pose sequence never shows both shoulders; cannot scale its "
                            "motion to the photo (try absolute=True)")
    body = _wrists_from_hands(body, hands)
    points: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for j, name in enumerate(BODY_JOINTS):
        points.append((f"body.{name}", body[:, j], rest_px[j]))
    for h, hname in enumerate(HANDS):
        for j, pname in enumerate(HAND_JOINTS):
            rp = rest_hands_px[h, j] if rest_hands_px is not None else None
            points.append((f"body.{hname}.{pname}", hands[:, h, j], rp))
    cols: dict[str, np.ndarray] = {}
    from scipy.ndimage import gaussian_filter1d

    for name, arr, rp in points:
        ok = arr[:, 2] > MIN_SCORE
        if not ok.any():
            continue
        xy = _fill_missing(arr[:, :2], ok)
        if smooth > 0 and F > 3:
            xy = gaussian_filter1d(xy, smooth, axis=0, mode="nearest")
        if absolute:
            if rp is None or rp[2] <= MIN_SCORE:
                continue
            target = xy / [sw_w, sw_h] * [W, H]
            d = (target - rp[:2]) / rest_sw
        else:
            first = int(np.flatnonzero(ok)[0])
            d = (xy - xy[first]) / sw_seq
        cols[name + ".x"] = d[:, 0]
        cols[name + ".y"] = d[:, 1]
    # resample to the output rate, then loop
    src_fps = float(seq.fps)
    n_src = max(1, int(round(F * fps / src_fps)))
    pos, weight = _loop_index(int(n_frames), n_src, loop)
    src_pos = np.clip(pos * src_fps / fps, 0, F - 1)
    names = sorted(cols, key=lambda c: _BODY_INDEX[c])
    vals = np.zeros((int(n_frames), len(names)), np.float64)
    fr = np.arange(F)
    for k, c in enumerate(names):
        vals[:, k] = np.interp(src_pos, fr, cols[c])
    meta = {"generator": "pose-sequence", "loop": loop, "absolute": bool(absolute),
            "source_frames": int(F), "source_fps": src_fps}
    track = MotionTrack(fps=float(fps), channels=names, values=vals.astype(np.float32), meta=meta)
    if loop == "speech":
        track.meta["weight"] = weight.tolist()
    return track


def video_body_track(video: Any, rest_px: np.ndarray, rest_hands_px: np.ndarray | None, *,
                     image_size: tuple[int, int], n_frames: int | None, fps: float,
                     loop: str = "pingpong", max_frames: int = 108_000) -> MotionTrack | None:
    """Body channels from a driving video whose person's shoulders are visible (relative
    retargeting, as :func:`pose_body_track`); None when no body is seen in the video."""
    from ..media.video import probe_video
    from .body_pose import extract_pose

    if n_frames is not None:                  # only what the clip uses (a loop plays it back)
        vfps = float(probe_video(video).get("fps") or 0.0)
        if 0 < vfps <= 240:
            max_frames = min(max_frames, int(math.ceil(n_frames / fps * vfps)) + 1)
    seq = extract_pose(video, face=False, smooth=True, max_frames=max_frames)
    if seq.n_frames == 0:
        return None
    b = seq.body
    seen = (b[:, 2, 2] > MIN_SCORE) & (b[:, 5, 2] > MIN_SCORE)
    arms = (b[:, [3, 4, 6, 7], 2] > MIN_SCORE).any(1)
    if seen.mean() < 0.5 or arms.mean() < 0.3:
        return None
    n = n_frames if n_frames is not None else max(1, int(round(seq.duration * fps)))
    loop = loop if loop in BODY_LOOPS else "pingpong"
    return pose_body_track(seq, rest_px, rest_hands_px, image_size=image_size, n_frames=n,
                           fps=fps, loop=loop)


def mix_body(*, base: MotionTrack | None, overlays: list[MotionTrack] = (), n_frames: int,
             fps: float, scale: float = 1.0, fallback: MotionTrack | None = None) -> MotionTrack:
    """One track of every body channel: ``base`` (resampled to ``fps``), cross-faded into
    ``fallback`` where ``base.meta["weight"]`` falls (a pose sequence handing over to speech
    gestures), plus the overlays' values, all times ``scale``; clamped to ±4 shoulder widths."""
    from .mix import resample_track

    out = np.zeros((int(n_frames), len(BODY_CHANNELS)), np.float64)

    def add(track: MotionTrack, weight: np.ndarray | None = None) -> None:
        vals = resample_track(track, int(n_frames), float(fps))
        for j, c in enumerate(track.channels):
            if c not in _BODY_INDEX:
                continue
            col = vals[:, j] if weight is None else vals[:, j] * weight
            out[:, _BODY_INDEX[c]] += col

    w = None
    if base is not None:
        if "weight" in base.meta:
            w = np.asarray(base.meta["weight"], np.float64)
            w = np.resize(w, int(n_frames)) if len(w) != int(n_frames) else w
        add(base, w)
    if fallback is not None:
        add(fallback, None if base is None else (1.0 - w if w is not None else np.zeros(int(n_frames))))
    for o in overlays or ():
        add(o)
    out = np.clip(out * float(scale), -4.0, 4.0)
    return MotionTrack(fps=float(fps), channels=list(BODY_CHANNELS), values=out.astype(np.float32),
                       meta={"generator": "body-mix"})


def rest_in_shoulder_units(rest_px: np.ndarray) -> dict[str, np.ndarray] | None:
    """The photo's arm joints in shoulder widths (for prompt body actions), or None."""
    if rest_px is None or rest_px[2, 2] <= 0 or rest_px[5, 2] <= 0:
        return None
    sw = float(np.hypot(*(rest_px[2, :2] - rest_px[5, :2])))
    if sw <= 0:
        return None
    out = {}
    for name in ("r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist"):
        j = BODY_JOINTS.index(name)
        if rest_px[j, 2] <= MIN_SCORE:
            return None
        out[name] = rest_px[j, :2] / sw
    return out


#: Least room below the chin, in face heights (forehead 10 to chin 152), for an elbow and a wrist
#: to show: the shoulders sit about 0.5 below the chin and the upper arm is about 1.3 long.
ARM_ROOM = 1.5


def _room_for_arms(portrait: Any) -> bool:
    """Whether the photo extends far enough below the chin for a whole arm to be visible."""
    lm = np.asarray(getattr(portrait, "landmarks", None), np.float64)
    if lm.ndim != 2 or lm.shape[0] < 153:
        return True
    face_h = float(np.linalg.norm(lm[152, :2] - lm[10, :2]))
    below = portrait.image.shape[0] - float(lm[152, 1])
    return face_h <= 0 or below >= ARM_ROOM * face_h


def photo_body(portrait: Any, *, required: bool = False) -> dict[str, np.ndarray] | None:
    """Detect the photo's skeleton once (MediaPipe, cached by the image's content), set
    ``portrait.body``, and return its arms in shoulder widths (None when no whole arm shows).

    Raises:
        InvalidOption: ``required`` and no shoulders/arm are found in the photo.
    """
    from ..analysis.cache import body_cached

    if not required and getattr(portrait, "body", None) is None and not _room_for_arms(portrait):
        return None        # a head-and-shoulders crop: no arm can show, skip the detector
    if getattr(portrait, "body", None) is None:
        try:
            portrait.body = body_cached(portrait.image)
        except Exception as exc:   # a detector failure only disables body motion
            if required:
                raise InvalidOption(f"could not find the body in the photo: {exc}") from None
            portrait.body = None
    pose = portrait.body
    rest = None
    if pose is not None:
        H, W = portrait.image.shape[:2]
        px = np.asarray(pose.body, np.float64).copy()
        px[:, 0] *= W
        px[:, 1] *= H
        rest = rest_in_shoulder_units(px)
    if rest is None:
        if required:
            raise InvalidOption("a pose sequence needs a half-body photo: no shoulders, elbows "
                                "and wrists were found in this one")
        return None
    return rest


def base_body_track(portrait: Any, *, pose: Any = None, video: Any = None, n_frames: int,
                    fps: float, loop: str = "pingpong", relative: bool = True) -> MotionTrack | None:
    """The base body motion by precedence: a pose sequence, else a driving video's body."""
    H, W = portrait.image.shape[:2]
    b = portrait.body
    rest = np.asarray(b.body, np.float64).copy()
    rest[:, 0] *= W
    rest[:, 1] *= H
    hands = np.asarray(b.hands, np.float64).copy()
    hands[..., 0] *= W
    hands[..., 1] *= H
    if pose is not None:
        return pose_body_track(pose, rest, hands, image_size=(W, H), n_frames=n_frames, fps=fps,
                               loop=loop, absolute=not relative)
    if video is not None:
        return video_body_track(video, rest, hands, image_size=(W, H), n_frames=n_frames,
                                fps=fps, loop=loop)
    return None
