"""Video driving and pose sequences: motion measured from a driving video, retargeted as a track.

The driving video is made here: the astronaut photo rendered by the warp renderer with a known
motion (the jaw opening and closing, a blink, the head turning), encoded to H.264. Measuring it
back must recover that motion; bad drivers (faces missing, leaving the frame, a cut, no frames,
a corrupt file) must give a clear error or hold the last good pose.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from echomimic.errors import InvalidOption, MotionError, NoFaceFound, VideoError
from echomimic.types import ALL_CHANNELS, HEAD_CHANNELS, MotionTrack

FPS_SRC = 20.0
N_SRC = 64
BLINK = (30, 34)          # frames with the eyes closed


def _known_motion() -> dict[str, np.ndarray]:
    t = np.arange(N_SRC) / FPS_SRC
    jaw = np.clip(0.45 * np.sin(2 * np.pi * 0.7 * t), 0, None)
    blink = np.zeros(N_SRC)
    blink[BLINK[0] - 2:BLINK[0]] = [0.4, 0.8]
    blink[BLINK[0]:BLINK[1]] = 1.0
    blink[BLINK[1]:BLINK[1] + 2] = [0.7, 0.3]
    yaw = 9.0 * np.sin(2 * np.pi * 0.35 * t)
    pitch = 6.0 * np.sin(2 * np.pi * 0.5 * t + 1.0)
    return {"jawOpen": jaw, "eyeBlinkLeft": blink, "eyeBlinkRight": blink, "yaw": yaw,
            "pitch": pitch}


@pytest.fixture(scope="module")
def face_portrait(astronaut_rgb):
    from echomimic.analysis import analyze_face, prepare_portrait

    rgb = np.array(astronaut_rgb)
    p = prepare_portrait(rgb, analyze_face(rgb), crop="face", size=384)
    p.image = np.array(p.image)          # writable for the renderer
    return p


@pytest.fixture(scope="module")
def driver(face_portrait, tmp_path_factory):
    """(path of the driving mp4, its frames, the motion that made it)."""
    from echomimic.media import Mp4Writer
    from echomimic.render.warp.renderer import WarpRenderer

    motion = _known_motion()
    r = WarpRenderer(face_portrait)
    frames = [r.render({k: float(v[i]) for k, v in motion.items()}) for i in range(N_SRC)]
    path = tmp_path_factory.mktemp("driver") / "driver.mp4"
    h, w = frames[0].shape[:2]
    with Mp4Writer(path, w, h, FPS_SRC, crf=12) as wr:
        for f in frames:
            wr.write(f)
    return path, frames, motion


def _at(src: np.ndarray, n: int, fps: float) -> np.ndarray:
    """A source-rate column sampled at ``n`` frames of ``fps``."""
    t = np.arange(n) / fps * FPS_SRC
    return np.interp(t, np.arange(len(src)), src)


def _r(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------------------------------
# recovering the motion
# ------------------------------------------------------------------------------------------


def test_video_track_recovers_the_driving_motion(driver, measured):
    from echomimic.motion.video import VIDEO_CHANNELS, video_track

    path, _, motion = driver
    track = video_track(path, fps=25)
    n = int(round(N_SRC / FPS_SRC * 25))
    assert track.fps == 25 and track.n_frames == n            # frame-rate conversion
    assert track.channels == list(VIDEO_CHANNELS)
    assert set(track.channels) <= set(ALL_CHANNELS)
    assert np.isfinite(track.values).all()
    r_jaw = _r(track["jawOpen"], _at(motion["jawOpen"], n, 25))
    r_yaw = _r(track["yaw"], _at(motion["yaw"], n, 25))
    r_pitch = _r(track["pitch"], _at(motion["pitch"], n, 25))
    measured("video driver r jawOpen", f"{r_jaw:.3f}")
    measured("video driver r yaw", f"{r_yaw:.3f}")
    measured("video driver r pitch", f"{r_pitch:.3f}")
    assert r_jaw > 0.9 and r_yaw > 0.9 and r_pitch > 0.7
    # the jaw is mapped through the rig's gain: the driver's 0.45 comes back near 0.45
    assert 0.3 < float(track["jawOpen"].max()) < 0.65
    # the blink is found where it was, and nowhere else
    blink = 0.5 * (track["eyeBlinkLeft"] + track["eyeBlinkRight"])
    t_blink = np.arange(n) / 25 * FPS_SRC
    inside = (t_blink >= BLINK[0]) & (t_blink < BLINK[1])
    far = (t_blink < BLINK[0] - 5) | (t_blink > BLINK[1] + 6)
    assert blink[inside].max() > 0.7
    assert blink[far].max() < 0.35
    # relative: the driver's median pose is neutral
    assert abs(float(np.median(track["yaw"]))) < 2.0


def test_absolute_pose_takes_the_drivers_angles(driver, face_portrait):
    """With the portrait that made the video, absolute angles equal the rendered ones."""
    from echomimic.motion.video import video_track

    _, frames, motion = driver
    track = video_track(frames, fps=FPS_SRC, source_fps=FPS_SRC, relative=False,
                        portrait=face_portrait)
    err = np.abs(track["yaw"] - motion["yaw"])
    assert float(np.median(err)) < 2.5
    rel = video_track(frames, fps=FPS_SRC, source_fps=FPS_SRC, relative=True)
    # relative and absolute differ by the driver's median pose offset only
    assert _r(rel["yaw"], track["yaw"]) > 0.99


def test_head_placement_is_anchored_at_the_portrait(face_portrait):
    """Translation and scale start from the frame that stands for the portrait, not from the
    driver's average position: a driver whose head sits off-centre most of the time must not
    move the portrait's head at frame 0 (relative), and in absolute mode the head is placed where
    the driver's head really is."""
    from echomimic.motion.video import measure_driver, retarget
    from echomimic.quality import measure_frames
    from echomimic.render.warp.renderer import WarpRenderer

    n = 40
    # the driver's head: 0.03 eye distances right for 8 frames, then at 0.08 for most of the clip
    tx = np.concatenate([np.full(8, 0.03), np.linspace(0.03, 0.08, 8), np.full(n - 16, 0.08)])
    r = WarpRenderer(face_portrait)
    frames = [r.render({"tx": float(v)}) for v in tx]
    meas = measure_driver(frames, source_fps=FPS_SRC)
    rel = retarget(meas, relative=True)
    ab = retarget(meas, relative=False, portrait=face_portrait)
    # relative: frame 0 is the portrait's place; the later shift is followed
    assert abs(float(rel["tx"][0])) < 0.005 and abs(float(rel["scale"][0]) - 1) < 0.005
    assert abs(float(rel["tx"][-1]) - 0.05) < 0.015
    # absolute: where the driver's head is, relative to the photo's
    assert abs(float(ab["tx"][0]) - 0.03) < 0.01 and abs(float(ab["tx"][-1]) - 0.08) < 0.015
    # rendered: the head of frame 0 coincides with the portrait's (the renderer at rest)
    pic = [r.render({}), r.render(dict(zip(rel.channels, rel.values[0].tolist()))), frames[0]]
    lm = measure_frames(pic, static_image_mode=True).landmarks[..., :2].astype(np.float64)
    e = float(np.linalg.norm(lm[0, 263] - lm[0, 33]))
    nose = lm[:, [1, 4, 5, 195, 197]].mean(axis=1)
    assert np.linalg.norm(nose[1] - nose[0]) / e < 0.012
    assert np.linalg.norm(nose[2] - nose[0]) / e > 0.02         # the driver's head is elsewhere


def test_lips_that_never_close_still_open_the_jaw(face_portrait):
    """A driver whose lips stay apart all along (teeth showing at rest) has them apart: the jaw
    reads the same whether or not the clip also shows the lips closed (the warp closes the
    photo's lips at jawOpen 0, so the whole gap must open the jaw)."""
    from echomimic.motion.video import measure_driver, retarget
    from echomimic.render.warp.renderer import WarpRenderer

    t = np.arange(32) / FPS_SRC
    jaw = 0.35 + 0.12 * np.sin(2 * np.pi * 0.8 * t)          # never below 0.23
    r = WarpRenderer(face_portrait)
    # a painted interior: the photo's own teeth (kept at any opening) make the face mesh read
    # the lips nearer than they are, and this test is about the retargeting, not that reading
    r.mouth.photo_mouth = None
    frames = [r.render({"jawOpen": float(v)}) for v in jaw]
    rest = [r.render({})] * 8                                   # the same, after closed lips
    apart = retarget(measure_driver(frames, source_fps=FPS_SRC), smooth=False)["jawOpen"]
    with_closed = retarget(measure_driver(rest + frames, source_fps=FPS_SRC),
                           smooth=False)["jawOpen"][8:]
    assert float(np.median(with_closed)) > 0.15
    assert float(np.median(np.abs(apart - with_closed))) < 0.04    # before: ~0.2 apart
    assert _r(apart, jaw) > 0.8


def test_drive_regions_scales_and_loops(driver):
    from echomimic.motion.video import (DRIVE_REGIONS, VIDEO_CHANNELS, conform, drive_channels,
                                        measure_driver, retarget)

    _, frames, _ = driver
    raw = retarget(measure_driver(frames[:40], source_fps=FPS_SRC))
    assert raw.fps == FPS_SRC and raw.n_frames == 40
    head = conform(raw, fps=FPS_SRC, drive="head")
    assert head.channels == list(HEAD_CHANNELS)
    eb = conform(raw, fps=FPS_SRC, drive="eyes, brows")
    assert set(eb.channels) == {c for c in VIDEO_CHANNELS if c.startswith(("eye", "brow"))}
    assert set(conform(raw, fps=FPS_SRC, drive="lips").channels) <= set(DRIVE_REGIONS["lips"])
    assert drive_channels("all") == VIDEO_CHANNELS
    for bad in ("nose", "", "head,ears"):
        with pytest.raises(InvalidOption):
            conform(raw, fps=FPS_SRC, drive=bad)
    # motion_scale multiplies the offset from neutral; 0 keeps everything neutral
    zero = conform(raw, fps=FPS_SRC, motion_scale=0.0)
    assert np.allclose(zero["yaw"], 0) and np.allclose(zero["scale"], 1)
    assert np.allclose(zero["jawOpen"], 0)
    half = conform(raw, fps=FPS_SRC, motion_scale=0.5, head_motion_scale=2.0)
    assert np.allclose(half["yaw"], raw["yaw"], atol=1e-4)
    assert np.allclose(conform(raw, fps=FPS_SRC, motion_scale=0.5)["yaw"], 0.5 * raw["yaw"],
                       atol=1e-4)
    with pytest.raises(InvalidOption):
        conform(raw, fps=FPS_SRC, motion_scale=-1)
    # longer than the video: pingpong mirrors, repeat starts again, hold keeps the last frame
    ping = conform(raw, fps=FPS_SRC, n_frames=79, loop="pingpong")["yaw"]
    assert np.allclose(ping[39:79], raw["yaw"][::-1], atol=1e-5)
    rep = conform(raw, fps=FPS_SRC, n_frames=80, loop="repeat")["yaw"]
    assert np.allclose(rep[40:80], raw["yaw"], atol=1e-5)
    hold = conform(raw, fps=FPS_SRC, n_frames=60, loop="hold")["yaw"]
    assert np.allclose(hold[40:], raw["yaw"][-1])
    with pytest.raises(InvalidOption):
        conform(raw, fps=FPS_SRC, n_frames=60, loop="bounce")


def test_loop_positions_and_frame_rate():
    from echomimic.motion.video import loop_positions

    p = loop_positions(7, 1.0, 4, 1.0, "pingpong")
    assert p.tolist() == [0, 1, 2, 3, 2, 1, 0]
    assert loop_positions(6, 1.0, 4, 1.0, "repeat").tolist() == [0, 1, 2, 3, 0, 1]
    assert loop_positions(6, 1.0, 4, 1.0, "hold").tolist() == [0, 1, 2, 3, 3, 3]
    # 50 fps out of a 25 fps source: half-frame steps
    assert np.allclose(loop_positions(5, 50.0, 10, 25.0, "hold"), [0, 0.5, 1, 1.5, 2])


def test_extract_motion_round_trip(driver, tmp_path):
    from echomimic.motion import load_motion, quantize, save_motion
    from echomimic.motion.video import extract_motion

    path, _, _ = driver
    track = extract_motion(path)
    assert track.fps == FPS_SRC and track.n_frames == N_SRC
    assert track.meta["generator"] == "video"
    out = tmp_path / "motion.json"
    save_motion(track, out)
    back = load_motion(out)
    assert back.channels == track.channels
    assert np.array_equal(back.values, quantize(track).values)
    assert json.loads(out.read_text())["schema"] == "echomimic.motion/1"


def test_mixed_lips_never_leak(driver):
    """With speech, the mixer takes every lip channel from speech: the video's mouth is gone."""
    from echomimic.motion import mix_tracks
    from echomimic.motion.video import video_track

    path, _, _ = driver
    vt = video_track(path, fps=25)
    assert vt["jawOpen"].max() > 0.3
    lips = MotionTrack.neutral(vt.n_frames, 25, ["jawOpen", "mouthClose"])
    mixed = mix_tracks(speech=lips, base=vt, n_frames=vt.n_frames, fps=25)
    for c in vt.channels:
        if c.startswith(("jaw", "mouth")):
            assert np.allclose(mixed[c], 0), c
    assert np.allclose(mixed["yaw"], np.clip(vt["yaw"], -25, 25), atol=1e-5)
    assert np.allclose(mixed["eyeBlinkLeft"], vt["eyeBlinkLeft"], atol=1e-6)


def test_fill_undriven_takes_idle_life_for_the_rest(driver):
    from echomimic.motion import idle_track
    from echomimic.motion.video import fill_undriven, video_track

    path, _, _ = driver
    vt = video_track(path, fps=25, drive="lips")
    idle = idle_track(vt.n_frames, 25, seed=3)
    base = fill_undriven(vt, idle)
    assert np.array_equal(base["jawOpen"], vt["jawOpen"])
    assert np.allclose(base["yaw"], idle["yaw"])
    assert base.n_frames == vt.n_frames


# ------------------------------------------------------------------------------------------
# bad drivers
# ------------------------------------------------------------------------------------------


def test_frames_without_a_face_hold_the_last_good_pose(driver):
    from echomimic.motion.video import measure_driver, retarget

    _, frames, _ = driver
    frames = list(frames)
    blank = np.full_like(frames[0], 128)
    for i in range(20, 30):
        frames[i] = blank
    meas = measure_driver(frames, source_fps=FPS_SRC)
    assert not meas.good[20:30].any() and meas.good[:20].all()
    track = retarget(meas)
    assert np.isfinite(track.values).all()
    yaw = track["yaw"]
    assert np.ptp(yaw[20:30]) < 1.0 and abs(yaw[25] - yaw[19]) < 1.0   # the head holds
    assert track["jawOpen"][29] <= track["jawOpen"][19] + 1e-6     # expressions ease to rest
    assert np.abs(np.diff(yaw)).max() < 3.0                        # no snap when it comes back


def test_face_leaving_the_frame_is_not_trusted(driver):
    from echomimic.motion.video import measure_driver, retarget

    _, frames, _ = driver
    frames = [f.copy() for f in frames[:40]]
    w = frames[0].shape[1]
    for k, i in enumerate(range(20, 40)):          # slide the picture out to the right
        shift = int(w * 0.06 * (k + 1))
        moved = np.zeros_like(frames[i])
        if shift < w:
            moved[:, shift:] = frames[i][:, : w - shift]
        frames[i] = moved
    meas = measure_driver(frames, source_fps=FPS_SRC)
    assert meas.good[:20].all()
    assert not meas.good[-8:].any()
    track = retarget(meas)
    assert np.isfinite(track.values).all()
    assert abs(float(track["tx"][-1])) <= 0.12 + 1e-6               # eased, never beyond


def test_cut_to_another_shot_starts_a_new_neutral(driver):
    import cv2

    from echomimic.motion.video import measure_driver, retarget

    _, frames, _ = driver
    h, w = frames[0].shape[:2]
    # a second "shot": the same scene zoomed in and moved, as after a camera cut
    m = cv2.getRotationMatrix2D((w * 0.3, h * 0.6), 0, 1.35)
    shot2 = [cv2.warpAffine(f, m, (w, h), borderMode=cv2.BORDER_REFLECT) for f in frames[:24]]
    seq = list(frames[:24]) + shot2
    meas = measure_driver(seq, source_fps=FPS_SRC)
    assert meas.meta["cuts"] == [24]
    track = retarget(meas)
    # the jump in position and size is not read as head motion
    assert np.abs(track["tx"]).max() < 0.12 and np.abs(track["scale"] - 1).max() < 0.1
    assert np.abs(np.diff(track["yaw"])).max() < 4.0


def test_empty_corrupt_and_faceless_videos(tmp_path, driver):
    import av

    from echomimic.motion.video import measure_driver, video_track

    # a container with a video stream and no frames
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    with pytest.raises(VideoError):
        video_track(empty, fps=25)
    with pytest.raises(VideoError):
        video_track([], fps=25)
    # random bytes, and a real file cut short
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError):
        video_track(junk, fps=25)
    path, frames, _ = driver
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    try:
        track = video_track(cut, fps=25)      # decodable frames before the damage are used
        assert np.isfinite(track.values).all()
    except VideoError:
        pass                                  # or a clear error; never anything else
    with pytest.raises(VideoError):
        video_track(tmp_path / "missing.mp4", fps=25)
    # no face anywhere
    with pytest.raises(NoFaceFound):
        measure_driver([np.full((96, 96, 3), 90, np.uint8)] * 4)
    with pytest.raises(VideoError):
        measure_driver([np.zeros((4, 4), np.float32)])


# ------------------------------------------------------------------------------------------
# pose sequences
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver_landmarks(driver):
    from echomimic.quality import measure_frames

    _, frames, _ = driver
    return measure_frames(frames).landmarks.astype(np.float64)


def test_pose_sequences_json_and_npz(driver, driver_landmarks, tmp_path):
    from echomimic.motion.pose_io import is_pose_file, load_landmark_sequence, pose_track

    _, frames, motion = driver
    h, w = frames[0].shape[:2]
    lm = driver_landmarks
    # npz: 3D pixels, with the frame rate
    npz = tmp_path / "pose.npz"
    np.savez(npz, landmarks=lm, fps=FPS_SRC, width=w, height=h)
    t3 = pose_track(npz, fps=FPS_SRC)
    assert t3.meta["generator"] == "pose" and t3.n_frames == N_SRC
    assert _r(t3["jawOpen"], motion["jawOpen"]) > 0.9
    assert _r(t3["yaw"], motion["yaw"]) > 0.9
    # JSON: 2D normalized points, one frame without a face
    frames_json = [(p[:, :2] / [w, h]).round(5).tolist() for p in lm]
    frames_json[5] = None
    js = tmp_path / "pose.json"
    js.write_text(json.dumps({"fps": FPS_SRC, "width": w, "height": h, "landmarks": frames_json}))
    seq = load_landmark_sequence(js)
    assert seq.landmarks.shape == (N_SRC, 478, 2) and np.isnan(seq.landmarks[5]).all()
    t2 = pose_track(js, fps=25)
    assert t2.n_frames == int(round(N_SRC / FPS_SRC * 25))
    n = t2.n_frames
    assert _r(t2["jawOpen"], _at(motion["jawOpen"], n, 25)) > 0.9
    assert _r(t2["yaw"], _at(motion["yaw"], n, 25)) > 0.8             # from 2D cues
    assert is_pose_file(js) and is_pose_file(npz)


def test_pose_files_refuse_pickles_and_bad_shapes(tmp_path):
    from echomimic.motion import save_motion
    from echomimic.motion.pose_io import is_pose_file, load_landmark_sequence

    pick = tmp_path / "pose.npy"
    np.save(pick, np.array([{"lmks": np.zeros((478, 3))}], dtype=object), allow_pickle=True)
    with pytest.raises(MotionError, match="pickle"):
        load_landmark_sequence(pick)
    obj = tmp_path / "obj.npz"
    np.savez(obj, landmarks=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MotionError):
        load_landmark_sequence(obj)
    for doc in ({"landmarks": [[[0, 0]] * 68]}, {"frames": "x"}, {"nothing": 1}, [[1, 2, 3]],
                {"landmarks": [[[0.1, 0.2]] * 478], "fps": -3}):
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(doc))
        with pytest.raises(MotionError):
            load_landmark_sequence(p)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(MotionError):
        load_landmark_sequence(bad)
    with pytest.raises(MotionError):
        load_landmark_sequence(tmp_path / "missing.json")
    motion = tmp_path / "m.json"
    save_motion(MotionTrack.neutral(3, 25, ["yaw"]), motion)
    assert not is_pose_file(motion)
    with pytest.raises(MotionError, match="motion file"):
        load_landmark_sequence(motion)
