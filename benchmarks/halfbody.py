"""Half-body animation on the development photos: wrists following a pose sequence or a video,
lip-sync and identity against a portrait render, contact sheets.

    python benchmarks/halfbody.py                          # pose + video cases, three photos
    python benchmarks/halfbody.py --cases video --photos halfbody_0014
    python benchmarks/halfbody.py --cases face             # lip-sync / identity vs portrait
    python benchmarks/halfbody.py --cases pose,gestures,prompt --sheets sheets/

Cases (each renders the photo at 768 x 768 with ``walden.wav``, 8.1 s of English speech):

* ``pose``: driven by the EchoMimic V2 demo sequence ``poses/halfbody_01`` (converted with
  ``convert_v2_folder(trust_pickle=True)``: a local folder we trust). MediaPipe Pose/Hands on the
  encoded output (:func:`echomimic.quality.body.wrist_tracks`) against the sequence's own wrists:
  Pearson r of x and y per wrist over the frames where the hand is visible in both.
* ``video``: driven by ``video/phone_3.mp4`` (``video=``: its body drives the arms, relative
  retargeting). The output's wrist tracks against the driver's, both measured with MediaPipe
  Pose/Hands (the driver's first seconds, put on the output's time base).
* ``gestures``: speech gestures only; wrist motion energy during speech over that in pauses
  longer than 0.5 s.
* ``prompt``: the prompt "waves with the right hand" (for the contact sheet).
* ``face``: lip-sync and identity (``echomimic.quality.evaluate_video``) of the half-body render
  against a portrait render (``crop=face``, 512) of the same photo and speech: the figures and
  their differences.

``--sheets DIR`` writes a contact sheet (8 frames) per photo and case. Figures go to stdout
and, as JSON, to ``--json``. Uses ../shared/media when present and skips it with a message
otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
PHOTOS = ["halfbody_0014", "halfbody_0035", "halfbody_0047"]
CASES = ("pose", "video", "gestures", "prompt", "face")
SPEECH = "walden.wav"
DRIVER = "phone_3.mp4"
PROMPT = "waves with the right hand"


def square_photo(name: str, work: Path, side: int = 768) -> Path:
    """The development photo as a ``side`` x ``side`` PNG (as ``echomimic bench --halfbody``)."""
    from PIL import Image

    from echomimic.bench import make_halfbody_frame

    frame, _ = make_halfbody_frame(MEDIA / "portraits" / f"{name}.png", side)
    out = work / f"{name}_{side}.png"
    Image.fromarray(frame).save(out)
    return out


def write_sheet(video: Path, path: Path, n: int = 8) -> None:
    from echomimic.media import contact_sheet, save_png
    from echomimic.quality.measure import iter_video_frames

    frames = list(iter_video_frames(video))
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    save_png(path, contact_sheet([frames[i] for i in idx], cols=4, width=1600,
                                 labels=[f"{i / 25:.1f}s" for i in idx]))


def corr_line(r: dict) -> str:
    return ", ".join(f"{s} x {r[s]['x']:.2f} y {r[s]['y']:.2f} ({r[s]['frames']} fr)"
                     for s in ("left", "right"))


def gesture_energy(video: Path, audio: Path) -> dict:
    from echomimic.quality.body import motion_energy, wrist_tracks
    from echomimic.quality.evaluate import load_audio
    from echomimic.quality.metrics import speech_pauses

    tr = wrist_tracks(video, need_hand=False)
    samples, _ = load_audio(audio)
    pause = speech_pauses(samples, 16000, tr.fps, tr.n_frames, min_pause=0.5, margin=0)
    t = np.arange(tr.n_frames) / tr.fps
    edges = np.flatnonzero(np.diff(np.r_[0, pause.astype(int), 0]))
    pauses = [(t[a], t[b - 1] + 1 / tr.fps) for a, b in zip(edges[::2], edges[1::2])]
    e_pause = motion_energy(tr, pauses) if pauses else np.array([np.nan])
    # speech: every frame outside those pauses
    e_speech = motion_energy(tr, [(t[i], t[i] + 1 / tr.fps) for i in range(tr.n_frames)
                                  if not pause[i]])
    es, ep = float(np.nanmean(e_speech)), float(np.nanmean(e_pause))
    return {"energy_speech": es, "energy_pause": ep, "ratio": es / ep if ep > 0 else float("inf"),
            "pauses": len(pauses)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--cases", default="pose,video")
    ap.add_argument("--sheets", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="keep the renders here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not MEDIA.is_dir():
        print(f"skipped: {MEDIA} (the development media) is not present")
        return 0
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {CASES}")
    from echomimic import animate
    from echomimic.quality.body import wrist_correlation, wrist_tracks, wrist_tracks_from_poses

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="echomimic-halfbody-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    if args.sheets:
        args.sheets.mkdir(parents=True, exist_ok=True)
    audio = MEDIA / "audio" / SPEECH
    driver = MEDIA / "video" / DRIVER
    results: dict = {}
    seq = ref_video = None
    for name in [p for p in args.photos.split(",") if p]:
        photo = square_photo(name, work)
        res: dict = {}
        for case in cases:
            out = work / f"{name}_{case}.mp4"
            kw: dict = {"audio": audio, "crop": "none", "max_side": 0, "seed": 0}
            if case == "pose":
                if seq is None:
                    from echomimic.motion.body_pose import convert_v2_folder

                    seq = convert_v2_folder(MEDIA / "poses" / "halfbody_01", trust_pickle=True)
                kw["pose"] = seq
            elif case == "video":
                kw["video"] = driver
            elif case == "prompt":
                kw["prompt"] = PROMPT
            elif case == "face":
                kw.update(crop="face", size=512)
            t0 = time.perf_counter()
            c0 = time.process_time()
            r = animate(photo, out, **kw)
            row: dict = {"frames": r.n_frames, "wall_s": time.perf_counter() - t0,
                         "cpu_s": time.process_time() - c0, "body": r.meta.get("body")}
            if case == "pose":
                row["wrist_r"] = wrist_correlation(wrist_tracks_from_poses(seq), wrist_tracks(out))
                print(f"{name} pose  : {corr_line(row['wrist_r'])}")
            elif case == "video":
                measured = wrist_tracks(out)
                if ref_video is None:
                    from echomimic.media.video import probe_video

                    vfps = float(probe_video(driver)["fps"])
                    ref_video = wrist_tracks(driver, max_frames=int(np.ceil(
                        measured.n_frames / measured.fps * vfps)) + 1)
                row["wrist_r"] = wrist_correlation(ref_video, measured)
                print(f"{name} video : {corr_line(row['wrist_r'])}")
            elif case == "gestures":
                row["energy"] = gesture_energy(out, audio)
                print(f"{name} gestures: energy ratio speech/pauses {row['energy']['ratio']:.1f}")
            if "face" in cases and case in ("face", "gestures"):
                from echomimic.quality.evaluate import evaluate_video

                ev = evaluate_video(out, image=photo, audio=audio)
                row["eval"] = {k: ev.get(k) for k in ("lipsync_loudness_r", "identity_mean",
                                                       "identity_max", "silence_closure")}
            if args.sheets:
                write_sheet(out, args.sheets / f"{name}_{case}.png")
            res[case] = row
        if "face" in cases and "gestures" in res and "eval" in res["gestures"]:
            a, b = res["gestures"]["eval"], res["face"]["eval"]
            diff = {k: (a[k] - b[k]) if a[k] is not None and b[k] is not None else None for k in a}
            res["face_vs_halfbody"] = diff
            print(f"{name} half-body vs portrait: " + ", ".join(
                f"{k} {a[k]:.3f} vs {b[k]:.3f} ({diff[k]:+.3f})" for k in a
                if a[k] is not None and b[k] is not None))
        results[name] = res
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
