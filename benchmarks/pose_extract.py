"""Pose extraction on real videos: body and hand detection rates and time per frame.

    python benchmarks/pose_extract.py                           # the development phone videos
    python benchmarks/pose_extract.py clip.mp4 --sheet sheets/  # + contact sheets of the poses

For each video: frames, the share of frames with a body, and for each hand the share of the
frames where it is *visible* in which the hand model found it. A hand counts as visible when the
pose model sees that wrist (MediaPipe visibility >= 0.5, an independent model from the hand
model) inside the picture. Time per frame is CPU time of this process (the figure that does not
depend on what else the machine runs) and wall time. Uses ../shared/media when present and skips
it with a message otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "video"
DEFAULT = ["phone_3.mp4", "phone_1.mp4", "phone_2.mp4"]


def hand_recall(seq, side: str) -> tuple[int, int]:
    """(frames where the hand is visible, of those the frames where it was found)."""
    slot, wi = {"left": (0, 7), "right": (1, 4)}[side]
    w = seq.body[:, wi]
    visible = (w[:, 2] >= 0.5) & (w[:, 0] > 0) & (w[:, 0] < 1) & (w[:, 1] > 0) & (w[:, 1] < 1)
    found = seq.hands[:, slot, 0, 2] > 0
    return int(visible.sum()), int((visible & found).sum())


def sheet(seq, video, path: Path, n: int = 6) -> None:
    import cv2

    from echomimic.analysis.body import draw_pose
    from echomimic.media.video import iter_video_frames

    want = set(np.linspace(0, seq.n_frames - 1, n).round().astype(int).tolist())
    tiles = []
    for i, rgb in enumerate(iter_video_frames(video, max_frames=seq.n_frames)):
        if i in want:
            im = draw_pose(rgb, seq.body[i], seq.hands[i], seq.face[i])
            s = 360 / max(im.shape[:2])
            im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)),
                            interpolation=cv2.INTER_AREA)
            cv2.putText(im, str(i), (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 0), 2)
            tiles.append(im)
    cv2.imwrite(str(path), cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> int:
    from echomimic.motion.body_pose import extract_pose, save_pose_sequence

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", help="videos (default: the development phone videos)")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--sheet", type=Path, help="folder for contact sheets of the poses")
    ap.add_argument("--save", type=Path, help="folder for the extracted pose files (JSON)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    videos = [Path(v) for v in a.videos]
    if not videos:
        if not MEDIA.is_dir():
            print(f"skipped: {MEDIA} not found (give videos on the command line)")
            return 0
        videos = [MEDIA / v for v in DEFAULT if (MEDIA / v).exists()]
    rows = []
    for video in videos:
        c0, t0 = time.process_time(), time.perf_counter()
        seq = extract_pose(video, max_frames=a.max_frames)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        row = {"video": video.name, "frames": seq.n_frames, "size": f"{seq.width}x{seq.height}",
               "body": float((seq.body[:, 1, 2] > 0).mean()),
               "cpu_ms_per_frame": 1000 * cpu / seq.n_frames,
               "wall_ms_per_frame": 1000 * wall / seq.n_frames}
        for side in ("left", "right"):
            vis, found = hand_recall(seq, side)
            row[f"{side}_visible"] = vis
            row[f"{side}_recall"] = found / vis if vis else float("nan")
        rows.append(row)
        print(f"{row['video']:<14} {row['frames']:>5} frames {row['size']:>10}  body "
              f"{row['body']:.1%}  left hand {row['left_recall']:.1%} of {row['left_visible']}  "
              f"right hand {row['right_recall']:.1%} of {row['right_visible']}  "
              f"{row['cpu_ms_per_frame']:.0f} ms CPU / {row['wall_ms_per_frame']:.0f} ms wall "
              f"per frame", flush=True)
        if a.save:
            a.save.mkdir(parents=True, exist_ok=True)
            save_pose_sequence(seq, a.save / f"{video.stem}.pose.json")
        if a.sheet:
            a.sheet.mkdir(parents=True, exist_ok=True)
            sheet(seq, video, a.sheet / f"{video.stem}.png")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main())
