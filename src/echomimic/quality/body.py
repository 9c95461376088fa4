"""Body measurements: wrist tracks, how well two wrist tracks agree, wrist motion energy.

Used to check half-body animation: does the rendered person's wrists follow the driving pose
sequence or video, do the arms move more while speaking than in pauses, do they stay still when
asked to.

* :func:`wrist_tracks` – the wrists in every frame of a video (or an iterable of frames), found
  with :class:`echomimic.analysis.body.BodyTracker` (MediaPipe Pose + Hands);
  :func:`wrist_tracks_from_poses` – the same from a
  :class:`~echomimic.motion.body_pose.PoseSequence`.
* :func:`wrist_correlation` – Pearson r of x and of y of each wrist between two tracks, over the
  frames where that hand is visible in both (after putting them on one time base).
* :func:`motion_energy` – mean squared wrist speed in time windows.

A wrist is *visible* in a frame when the hand model found that hand (its 21 points have a score),
or, with ``need_hand=False``, when the pose model's wrist visibility is at least
:data:`echomimic.analysis.body.MIN_VISIBILITY`. Positions are fractions of the frame (x of the
width, y of the height); missing frames are NaN. Left and right are the person's. MediaPipe's pose
model now and then mirrors a frontal skeleton for a frame or two; wrists measured in a video are
kept on their sides by continuity (:func:`keep_sides`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = ["WristTracks", "wrist_tracks", "wrist_tracks_from_poses", "wrist_correlation",
           "motion_energy", "pearson", "keep_sides"]

_SIDES = ("left", "right")
# person's left/right: hand slot and COCO-18 wrist index
_HAND_SLOT = {"left": 0, "right": 1}
_BODY_WRIST = {"left": 7, "right": 4}


@dataclass
class WristTracks:
    """Wrist positions per frame: ``left`` and ``right`` (n, 2) arrays of x, y as fractions of
    the frame (NaN where not visible); ``fps``; ``width``/``height`` of the frames; ``body``
    (n,) True where a body was found."""

    left: np.ndarray
    right: np.ndarray
    fps: float
    width: int
    height: int
    body: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.left.shape[0])

    def visible(self, side: str) -> np.ndarray:
        """(n,) bool: frames where wrist ``side`` ('left' or 'right') is visible."""
        return np.isfinite(getattr(self, side)).all(axis=1)

    def resampled(self, fps: float, n_frames: int) -> "WristTracks":
        """This track on another time base: frame i takes the nearest frame at time i / fps
        (NaN past the end)."""
        t = np.arange(int(n_frames)) / float(fps)
        src = np.round(t * self.fps).astype(np.int64)
        ok = src < self.n_frames
        src = np.clip(src, 0, max(0, self.n_frames - 1))

        def take(a: np.ndarray) -> np.ndarray:
            out = a[src].astype(np.float64, copy=True)
            out[~ok] = np.nan
            return out

        body = self.body[src] & ok
        return WristTracks(take(self.left), take(self.right), float(fps), self.width,
                           self.height, body)


def _from_arrays(body: np.ndarray, hands: np.ndarray, fps: float, width: int, height: int,
                 need_hand: bool) -> WristTracks:
    out = {}
    for side in _SIDES:
        hand = hands[:, _HAND_SLOT[side], 0]           # the hand model's wrist point
        pose = body[:, _BODY_WRIST[side]]
        xy = np.full((len(body), 2), np.nan)
        have_hand = hand[:, 2] > 0
        xy[have_hand] = hand[have_hand, :2]
        if not need_hand:
            use_pose = ~have_hand & (pose[:, 2] > 0)
            xy[use_pose] = pose[use_pose, :2]
        out[side] = xy
    found = body[:, [1, 2, 5], 2].max(axis=1) > 0
    return WristTracks(out["left"], out["right"], float(fps), int(width), int(height), found)


def wrist_tracks_from_poses(seq: Any, *, need_hand: bool = True) -> WristTracks:
    """Wrist tracks of a :class:`~echomimic.motion.body_pose.PoseSequence`."""
    return _from_arrays(np.asarray(seq.body), np.asarray(seq.hands), seq.fps, seq.width,
                        seq.height, need_hand)


#: A frame's wrists are swapped back when the crossed assignment is this much nearer (sum of
#: distances) the wrists of the last frame where both were seen ...
SWAP_RATIO = 0.5
#: ... that frame being at most this many frames earlier. Two wrists closer than this (a
#: fraction of the frame) are one hand found twice: the side it is farther from loses it.
SWAP_WINDOW = 5
SAME_POINT = 0.02


def keep_sides(tracks: WristTracks) -> WristTracks:
    """``tracks`` with left/right mix-ups of the detector undone, by continuity (a wrist does not
    cross the body in a frame), against each side's last position within :data:`SWAP_WINDOW`
    frames: two wrists each far nearer the other side's last position than their own
    (:data:`SWAP_RATIO`) exchange sides; one hand taken for both wrists stays with the side it
    is nearer; a lone wrist far nearer the other side's last position moves there."""
    sides = [tracks.left.copy(), tracks.right.copy()]
    last: list[tuple[int, np.ndarray] | None] = [None, None]

    def dist(p: np.ndarray, k: int, i: int) -> float:
        seen = last[k]
        return (float(np.hypot(*(p - seen[1]))) if seen is not None and i - seen[0] <= SWAP_WINDOW
                else float("nan"))

    for i in range(len(sides[0])):
        vis = [bool(np.isfinite(s[i]).all()) for s in sides]
        p = [s[i].copy() for s in sides]
        if vis[0] and vis[1]:
            own = dist(p[0], 0, i) + dist(p[1], 1, i)
            crossed = dist(p[0], 1, i) + dist(p[1], 0, i)
            if crossed < SWAP_RATIO * own:
                sides[0][i], sides[1][i] = p[1], p[0]
            elif np.hypot(*(p[0] - p[1])) < SAME_POINT:
                # one hand taken for both: it belongs to the side it is nearer
                drop = 0 if dist(p[0], 0, i) > dist(p[1], 1, i) else 1
                sides[drop][i] = np.nan
        elif vis[0] or vis[1]:
            k = 0 if vis[0] else 1
            if dist(p[k], 1 - k, i) < SWAP_RATIO * dist(p[k], k, i):
                sides[1 - k][i], sides[k][i] = p[k], np.nan
        for k in (0, 1):
            if np.isfinite(sides[k][i]).all():
                last[k] = (i, sides[k][i].copy())
    return WristTracks(sides[0], sides[1], tracks.fps, tracks.width, tracks.height, tracks.body)


def wrist_tracks(video: Any | Iterable[np.ndarray], *, fps: float | None = None,
                 need_hand: bool = True, max_frames: int | None = None,
                 progress: Callable[[str, float], None] | None = None) -> WristTracks:
    """Wrist tracks of the person in a video (path or bytes) or in an iterable of (H, W, 3) uint8
    RGB frames (then ``fps`` is required). Raw detections, not smoothed; left/right swaps of the
    detector undone (:func:`keep_sides`)."""
    from echomimic.analysis.body import BodyTracker

    total = 0
    if isinstance(video, (str, bytes, bytearray, memoryview)) or hasattr(video, "__fspath__"):
        from echomimic.media.video import iter_video_frames, probe_video

        info = probe_video(video)
        fps = fps or info["fps"] or 25.0
        total = info["n_frames"]
        frames: Iterable[np.ndarray] = iter_video_frames(video, max_frames=max_frames)
    else:
        if not fps:
            raise ValueError("fps is required when frames are given")
        frames = video
    body, hands = [], []
    width = height = 0
    with BodyTracker() as tracker:
        for i, rgb in enumerate(frames):
            if max_frames is not None and i >= max_frames:
                break
            p = tracker(rgb)
            height, width = rgb.shape[:2]
            body.append(p.body)
            hands.append(p.hands)
            if progress is not None and total:
                progress("wrists", min(1.0, (i + 1) / total))
    if not body:
        z = np.zeros((0, 2))
        return WristTracks(z, z.copy(), float(fps), 0, 0, np.zeros(0, bool))
    return keep_sides(_from_arrays(np.stack(body), np.stack(hands), float(fps), width, height,
                                   need_hand))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays over the entries finite in both; NaN when fewer
    than 3 such entries or either is constant."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def wrist_correlation(reference: WristTracks, measured: WristTracks, *,
                      sides: Sequence[str] = _SIDES) -> dict[str, dict[str, float]]:
    """Pearson r of each wrist's x and y between ``reference`` (e.g. the driving pose sequence)
    and ``measured`` (e.g. the rendered video), over the frames where that hand is visible in
    both. ``reference`` is first put on ``measured``'s time base (nearest frame).

    Returns ``{"left": {"x": r, "y": r, "frames": n}, "right": {...}}`` (r is NaN when fewer
    than 3 common frames or a track does not move).
    """
    ref = reference.resampled(measured.fps, measured.n_frames)
    out: dict[str, dict[str, float]] = {}
    for side in sides:
        a, b = getattr(ref, side), getattr(measured, side)
        both = ref.visible(side) & measured.visible(side)
        out[side] = {"x": pearson(np.where(both, a[:, 0], np.nan), b[:, 0]),
                     "y": pearson(np.where(both, a[:, 1], np.nan), b[:, 1]),
                     "frames": int(both.sum())}
    return out


def motion_energy(tracks: WristTracks, windows: Sequence[tuple[float, float]] | None = None, *,
                  sides: Sequence[str] = _SIDES) -> np.ndarray:
    """Mean squared wrist speed in each time window.

    Speed is the frame-to-frame displacement times the frame rate, in units of the frame's
    longer side per second, between consecutive frames where the wrist is visible; both wrists
    (``sides``) are pooled. ``windows`` is a list of ``(start, end)`` times in seconds (a frame
    step counts in the window holding its later frame); ``None`` means the whole clip.

    Returns an array with one energy per window (NaN for a window without any measured step).
    """
    n = tracks.n_frames
    s = float(max(tracks.width, tracks.height, 1))
    scale = np.array([tracks.width / s, tracks.height / s])
    if windows is None:
        windows = [(0.0, n / tracks.fps)]
    t = np.arange(n) / tracks.fps
    steps = []
    for side in sides:
        xy = getattr(tracks, side) * scale
        v = np.diff(xy, axis=0) * tracks.fps
        e = (v ** 2).sum(axis=1)                    # NaN where either frame is missing
        steps.append(np.r_[np.nan, e])
    energy = np.stack(steps, axis=1)                 # (n, sides)
    out = np.full(len(windows), np.nan)
    for k, (a, b) in enumerate(windows):
        sel = (t >= a) & (t < b)
        vals = energy[sel]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[k] = float(vals.mean())
    return out
