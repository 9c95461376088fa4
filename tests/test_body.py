"""Half-body motion and rendering: body channels (echomimic.motion/2), speech gestures, pose
retargeting, prompt body actions, and the warp renderer's body layer.

The renderer tests draw a synthetic half-body figure (a striped torso, red sleeves, skin
forearms and green hands over a textured background) with a known skeleton, so they need no
photo and no detector: every check measures the drawn hands in the rendered frames.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from echomimic.analysis.body import BodyPose
from echomimic.errors import MotionError
from echomimic.motion.body import mix_body, pose_body_track, split_body
from echomimic.motion.gestures import _runs, speech_gestures
from echomimic.motion.io import motion_from_json, motion_to_json
from echomimic.types import BODY_JOINTS, MotionTrack, Portrait, Speech

FPS = 25.0
HAND = np.array([60, 160, 70])          # the drawn hands' colour
SLEEVE = np.array([170, 50, 40])


# ------------------------------------------------------------------------------------------
# a synthetic half-body figure
# ------------------------------------------------------------------------------------------

def _figure(size: int = 320, folded: bool = False):
    """A drawn half-body figure; ``folded``: its right forearm points up at the camera, drawn in
    front of its upper arm (wrist above the elbow, hand above the wrist)."""
    s = size / 384.0
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    bg = np.stack([60 + 80 * xx / size, 90 + 60 * yy / size, 140 - 40 * xx / size], -1)
    img = np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)

    def P(x, y):
        return int(round(x * s)), int(round(y * s))

    J = {"nose": (192, 95), "neck": (192, 150), "r_shoulder": (130, 160), "r_elbow": (112, 245),
         "r_wrist": (118, 320), "l_shoulder": (254, 160), "l_elbow": (272, 245),
         "l_wrist": (266, 320), "r_hip": (150, 380), "l_hip": (234, 380), "r_eye": (178, 85),
         "l_eye": (206, 85), "r_ear": (165, 92), "l_ear": (219, 92)}
    if folded:
        J["r_wrist"] = (116, 195)
    body = np.zeros((18, 3), np.float32)
    for k, (x, y) in J.items():
        body[BODY_JOINTS.index(k)] = (x * s / size, y * s / size, 0.9)
    torso = np.array([P(135, 150), P(249, 150), P(240, 384), P(144, 384)])
    cv2.fillPoly(img, [torso], (200, 60, 50))
    cv2.fillPoly(mask, [torso], 1)
    for yv in range(160, 384, 18):
        cv2.line(img, P(140, yv), P(244, yv), (230, 200, 60), max(1, int(3 * s)))
    cv2.ellipse(img, P(192, 90), P(30, 38), 0, 0, 360, (215, 175, 145), -1)
    cv2.ellipse(mask, P(192, 90), P(30, 38), 0, 0, 360, 1, -1)
    cv2.rectangle(img, P(180, 120), P(204, 152), (210, 170, 140), -1)
    cv2.rectangle(mask, P(180, 120), P(204, 152), 1, -1)
    hands = np.zeros((2, 21, 3), np.float32)
    for side, slot in (("r", 1), ("l", 0)):
        S, E, W = J[side + "_shoulder"], J[side + "_elbow"], J[side + "_wrist"]
        cv2.line(img, P(*S), P(*E), tuple(int(v) for v in SLEEVE), max(2, int(26 * s)))
        cv2.line(mask, P(*S), P(*E), 1, max(2, int(26 * s)))
        cv2.line(img, P(*E), P(*W), (225, 180, 150), max(2, int(20 * s)))
        cv2.line(mask, P(*E), P(*W), 1, max(2, int(20 * s)))
        up = -1 if folded and side == "r" else 1        # the hand below or above the wrist
        c = (W[0], W[1] + 14 * up)
        cv2.circle(img, P(*c), int(13 * s), tuple(int(v) for v in HAND), -1)
        cv2.circle(mask, P(*c), int(13 * s), 1, -1)
        for j in range(21):
            ang = (j % 5 - 2) * 0.35
            r = 0 if j == 0 else 6 + 5 * ((j - 1) // 5)
            hands[slot, j] = ((W[0] + r * np.sin(ang)) * s / size, (W[1] + (4 + r) * up) * s / size,
                              0.9)
    pose = BodyPose(body=body, hands=hands, face=np.zeros((68, 3), np.float32), width=size,
                    height=size)
    portrait = Portrait(image=img, landmarks=np.zeros((478, 3), np.float32),
                        face_box=(0, 0, 1, 1), person_mask=mask.astype(np.float32), body=pose)
    return portrait


@pytest.fixture(scope="module")
def figure():
    return _figure()


@pytest.fixture(scope="module")
def layer(figure):
    from echomimic.render.warp.body import BodyLayer

    bl = BodyLayer.create(figure)
    assert bl is not None and len(bl.arms) == 2
    return bl


def _hand_centroids(frame: np.ndarray) -> np.ndarray:
    """Centroids (x, y) of the green hands, left of the image first; NaN when not seen."""
    d = np.abs(frame.astype(int) - HAND).sum(-1) < 40
    n, lab, stats, cent = cv2.connectedComponentsWithStats(d.astype(np.uint8))
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > 20]
    big.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    pts = sorted([cent[i] for i in big[:2]], key=lambda c: c[0])
    out = np.full((2, 2), np.nan)
    for k, c in enumerate(pts):
        out[k] = c
    return out


def _synthetic_speech(seed: int = 1, duration: float = 12.0) -> tuple[Speech, np.ndarray]:
    """Phrases of 1.5-3 s separated by 0.7-1.5 s pauses; syllable-rate loudness with jitter."""
    rng = np.random.default_rng(seed)
    hop = 0.01
    n = int(duration / hop)
    act = np.zeros(n, np.float32)
    t = 0.5
    while t < duration - 1.0:
        length = rng.uniform(1.5, 3.0)
        a, b = int(t / hop), min(n, int((t + length) / hop))
        act[a:b] = 1.0
        t += length + rng.uniform(0.7, 1.5)
    tt = np.arange(n) * hop
    syl = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * tt * rng.uniform(3.5, 4.5) + rng.normal(0, 0.3, n).cumsum() * 0.05))
    loud = (act * syl * rng.uniform(0.6, 1.0, n)).astype(np.float32)
    pitch = np.where(act > 0, 140 + 30 * np.sin(2 * np.pi * 0.7 * tt), 0).astype(np.float32)
    sp = Speech(duration=duration, hop=hop, activity=act, loudness=loud, pitch=pitch,
                articulation={k: np.zeros(n, np.float32) for k in ("open", "round", "spread", "close", "labiodental")})
    return sp, act


def _pause_and_speech_frames(act: np.ndarray, hop: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n_frames) / FPS
    on = np.interp(t, (np.arange(len(act)) + 0.5) * hop, act) >= 0.5
    pause = np.zeros(n_frames, bool)
    for a, b in _runs(~on):
        if (b - a) / FPS > 0.5:
            pause[a:b] = True
    return on, pause


def _energy(xy: np.ndarray, sel: np.ndarray) -> float:
    v = np.diff(xy, axis=0)
    e = np.nansum(v ** 2, axis=tuple(range(1, v.ndim)))
    return float(np.mean(e[sel[1:]]))


# ------------------------------------------------------------------------------------------
# motion files
# ------------------------------------------------------------------------------------------

def test_motion_v2_round_trip_and_v1_still_loads():
    n = 5
    tr = MotionTrack.neutral(n, FPS, channels=["yaw", "jawOpen"])
    tr.set("body.r_wrist.x", np.linspace(0, 0.5, n))
    tr.set("body.l_hand.index_4.y", np.linspace(0, -0.25, n))
    text = motion_to_json(tr)
    assert json.loads(text)["schema"] == "echomimic.motion/2"
    back = motion_from_json(text)
    assert back.channels == tr.channels
    np.testing.assert_allclose(back.values, tr.values, atol=1e-6)
    # a track without body channels stays version 1, and version-1 text loads
    v1 = motion_to_json(MotionTrack.neutral(3, FPS, channels=["yaw"]))
    assert json.loads(v1)["schema"] == "echomimic.motion/1"
    assert motion_from_json(v1).channels == ["yaw"]
    # body channels are not valid in a version-1 document, and unknown joints are refused
    doc = json.loads(text)
    doc["schema"] = "echomimic.motion/1"
    with pytest.raises(MotionError, match="channel"):
        motion_from_json(json.dumps(doc))
    doc["schema"] = "echomimic.motion/2"
    doc["channels"][2] = "body.r_tail.x"
    with pytest.raises(MotionError, match="unknown body channel"):
        motion_from_json(json.dumps(doc))


def test_split_body_separates_channels():
    tr = MotionTrack.neutral(4, FPS, channels=["yaw", "body.r_wrist.x"])
    face, body = split_body(tr)
    assert face.channels == ["yaw"] and body.channels == ["body.r_wrist.x"]
    assert split_body(MotionTrack.neutral(4, FPS, channels=["yaw"]))[1] is None


# ------------------------------------------------------------------------------------------
# speech gestures
# ------------------------------------------------------------------------------------------

def test_speech_gestures_move_in_speech_settle_in_pauses():
    sp, act = _synthetic_speech()
    n = int(sp.duration * FPS)
    tr = speech_gestures(sp, n, FPS, seed=3)
    on, pause = _pause_and_speech_frames(act, sp.hop, n)
    assert pause.sum() > 20 and on.sum() > 100
    w = np.stack([[tr.get(f"body.{s}_wrist.x"), tr.get(f"body.{s}_wrist.y")] for s in ("r", "l")], 1)
    w = np.moveaxis(w, -1, 0)                      # (frames, 2 arms, 2)
    ratio = _energy(w, on) / max(_energy(w, pause), 1e-12)
    assert ratio >= 3.0, ratio
    assert np.abs(w).max() > 0.1                  # visible motion (shoulder widths)
    # settled: by the end of pauses longer than 1.2 s the hands are back at rest
    ends = [b - 1 for a, b in _runs(pause) if b - a > 1.2 * FPS and b < n]
    assert ends and np.abs(w[ends]).max() < 0.03


def test_speech_gestures_reproducible_scaled_not_periodic():
    sp, _ = _synthetic_speech(seed=2)
    n = int(sp.duration * FPS)
    a = speech_gestures(sp, n, FPS, seed=5)
    b = speech_gestures(sp, n, FPS, seed=5)
    c = speech_gestures(sp, n, FPS, seed=6)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    half = speech_gestures(sp, n, FPS, seed=5, scale=0.5)
    np.testing.assert_allclose(half.values, 0.5 * a.values, atol=1e-6)
    zero = speech_gestures(sp, n, FPS, seed=5, scale=0.0)
    assert not zero.values.any()
    # never periodic: the wrist's velocity has no strong autocorrelation peak past 0.3 s
    v = np.diff(a.get("body.r_wrist.y") + a.get("body.l_wrist.y"))
    v = v - v.mean()
    ac = np.correlate(v, v, "full")[len(v) - 1:]
    ac = ac / ac[0]
    assert ac[int(0.3 * FPS):int(4 * FPS)].max() < 0.6


def test_gesture_scale_zero_gives_no_body_channels():
    from echomimic.pipeline import AnimateOptions, drive

    sp, _ = _synthetic_speech()
    n = int(sp.duration * FPS)
    rest = {"r_shoulder": np.array([-0.5, 0.0]), "r_elbow": np.array([-0.6, 0.8]),
            "r_wrist": np.array([-0.6, 1.5]), "l_shoulder": np.array([0.5, 0.0]),
            "l_elbow": np.array([0.6, 0.8]), "l_wrist": np.array([0.6, 1.5])}
    moving = drive(speech=sp, motion=None, n_frames=n, opts=AnimateOptions(), body_rest=rest)
    assert any(c.startswith("body.") for c in moving.channels)
    still = drive(speech=sp, motion=None, n_frames=n, opts=AnimateOptions(gesture_scale=0.0),
                  body_rest=rest, prompt="waves with the right hand")
    assert not any(c.startswith("body.") for c in still.channels)


# ------------------------------------------------------------------------------------------
# prompt body actions
# ------------------------------------------------------------------------------------------

def test_prompt_wave_raises_and_swings_the_named_hand():
    from echomimic.motion.prompt import parse_prompt

    res = parse_prompt("waves with the right hand", duration=4.0, fps=FPS)
    assert not res.warnings
    assert [a.name for a in res.actions] == ["wave_right"]
    tr = res.overlays[0]
    # the viewer's right hand is the person's left ("l_")
    y = tr.get("body.l_wrist.y")
    x = tr.get("body.l_wrist.x")
    assert y.min() < -0.5                           # raised (image y up is negative)
    assert np.abs(tr.get("body.r_wrist.y")).max() == 0
    held = y < 0.8 * y.min()
    sw = np.diff(np.sign(np.diff(x[held])))
    assert (sw != 0).sum() >= 3                     # swings side to side
    for prompt, name in (("opens both palms", "open_palms"), ("points left", "point_left"),
                         ("shrugs", "shrug"), ("puts his hands together", "hands_together"),
                         ("gives a thumbs up", "thumbs_up"), ("raises a hand", "raise_hand"),
                         ("挥手", "wave")):
        r = parse_prompt(prompt, duration=4.0, fps=FPS)
        assert [a.name for a in r.actions] == [name] and not r.warnings, prompt
        assert any(c.startswith("body.") for c in r.overlays[0].channels)


# ------------------------------------------------------------------------------------------
# pose sequences
# ------------------------------------------------------------------------------------------

def _pose_sequence(n: int, *, size: int = 512, scale: float = 1.0):
    """Another person, framed differently: the right wrist (image left) circles."""
    from echomimic.motion.body_pose import PoseSequence

    seq = PoseSequence.empty(n, fps=24.0, width=size, height=size)
    t = np.arange(n) / 24.0
    sw = 150.0 * scale
    base = {"neck": (256, 200), "r_shoulder": (256 - sw / 2, 210), "l_shoulder": (256 + sw / 2, 210),
            "r_elbow": (256 - sw / 2 - 10, 210 + 0.7 * sw), "l_elbow": (256 + sw / 2 + 10, 210 + 0.7 * sw),
            "r_wrist": (256 - sw / 2, 210 + 1.3 * sw), "l_wrist": (256 + sw / 2, 210 + 1.3 * sw)}
    for k, (x, y) in base.items():
        j = BODY_JOINTS.index(k)
        seq.body[:, j, 0] = x / size
        seq.body[:, j, 1] = y / size
        seq.body[:, j, 2] = 1.0
    j = BODY_JOINTS.index("r_wrist")
    seq.body[:, j, 0] += (0.25 * sw * np.sin(2 * np.pi * 0.5 * t)) / size
    seq.body[:, j, 1] += (-0.3 * sw * (1 - np.cos(2 * np.pi * 0.5 * t)) / 2) / size
    return seq


def test_pose_retargeting_relative_scales_to_the_photo(figure):
    from echomimic.render.warp.body import skeleton_pixels

    body, hands = skeleton_pixels(figure.body, figure.image.shape)
    a = pose_body_track(_pose_sequence(48), body, hands, image_size=(320, 320), n_frames=48 * 25 // 24,
                        fps=FPS)
    b = pose_body_track(_pose_sequence(48, size=512, scale=0.5), body, hands, image_size=(320, 320),
                        n_frames=48 * 25 // 24, fps=FPS)
    # the same motion in shoulder widths whatever the other person's size
    np.testing.assert_allclose(a.get("body.r_wrist.x"), b.get("body.r_wrist.x"), atol=2e-3)
    assert abs(a.get("body.r_wrist.x")).max() == pytest.approx(0.25, abs=0.02)
    assert a.get("body.r_wrist.x")[0] == pytest.approx(0.0, abs=1e-6)


def test_wrist_follows_the_hand_models_wrist_when_the_hand_is_found(figure):
    """A video's pose model places the wrist coarsely; where the hand model found the hand its
    wrist point leads, and where the hand is lost the body's wrist takes over without a jump."""
    from echomimic.render.warp.body import skeleton_pixels

    body, hands = skeleton_pixels(figure.body, figure.image.shape)
    n = 48
    seq = _pose_sequence(n)
    j = BODY_JOINTS.index("r_wrist")
    hand_xy = seq.body[:, j, :2].copy()
    rng = np.random.default_rng(3)
    # the pose model's wrist: off by a constant and jittering; the hand's wrist: the true path
    seq.body[:, j, :2] += 0.05 + rng.normal(0, 0.004, (n, 2))
    seq.hands[:, 1, 0, :2] = hand_xy
    seq.hands[:, 1, 0, 2] = 0.9
    seq.hands[30:, 1, 0, 2] = 0.0                 # the hand is lost for the last frames
    t = pose_body_track(seq, body, hands, image_size=(320, 320), n_frames=n, fps=24.0, smooth=0)
    x = t.get("body.r_wrist.x")
    sw = 150.0
    want = (hand_xy[:, 0] - hand_xy[0, 0]) * 512 / sw
    np.testing.assert_allclose(x[:30], want[:30], atol=1e-3)
    # where the hand is lost: the pose model's wrist shifted by the median offset (without the
    # shift the track would jump by 0.05 * 512 / 150 = 0.17 shoulder widths)
    assert np.abs(x[30:] - want[30:]).max() < 0.06


def test_short_pose_sequence_loops_and_never_cuts(figure):
    from echomimic.render.warp.body import skeleton_pixels

    body, hands = skeleton_pixels(figure.body, figure.image.shape)
    seq = _pose_sequence(24)                        # 1 s
    n = 100                                         # 4 s clip
    pp = pose_body_track(seq, body, hands, image_size=(320, 320), n_frames=n, fps=FPS)
    assert pp.n_frames == n
    x = pp.get("body.r_wrist.x")
    assert np.abs(x[60:]).max() > 0.1               # still moving after the sequence's end
    rep = pose_body_track(seq, body, hands, image_size=(320, 320), n_frames=n, fps=FPS, loop="repeat")
    np.testing.assert_allclose(rep.get("body.r_wrist.x")[25:48], x[:23], atol=0.02)
    hand = pose_body_track(seq, body, hands, image_size=(320, 320), n_frames=n, fps=FPS, loop="speech")
    sp, _ = _synthetic_speech(duration=4.0)
    g = speech_gestures(sp, n, FPS, seed=0)
    mixed = mix_body(base=hand, n_frames=n, fps=FPS, fallback=g)
    col = mixed.channels.index("body.r_wrist.y")
    np.testing.assert_allclose(mixed.values[-10:, col], g.get("body.r_wrist.y")[-10:], atol=1e-5)


# ------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------

def _render(layer, figure, track: MotionTrack) -> list[np.ndarray]:
    layer.prepare(list(track.channels), track.values)
    buf = [figure.image.copy() for _ in range(3)]      # reused buffers, as the pipeline does
    out = []
    for i in range(track.n_frames):
        f = buf[i % 3]
        layer.restore(f)
        layer.render_into(dict(zip(track.channels, track.values[i].tolist())), f)
        out.append(f.copy())
    return out


def test_gesture_scale_zero_keeps_the_arms_bit_identical(layer, figure):
    sp, _ = _synthetic_speech(duration=3.0)
    n = int(3.0 * FPS)
    still = mix_body(base=None, n_frames=n, fps=FPS, scale=0.0,
                     fallback=speech_gestures(sp, n, FPS, seed=0))
    frames = _render(layer, figure, still)
    for f in frames:
        assert np.array_equal(f, figure.image)


def test_pose_driven_render_moves_the_wrist_with_the_sequence(layer, figure):
    from echomimic.render.warp.body import skeleton_pixels

    body, hands = skeleton_pixels(figure.body, figure.image.shape)
    n = 50
    tr = pose_body_track(_pose_sequence(48), body, hands, image_size=(320, 320), n_frames=n, fps=FPS)
    frames = _render(layer, figure, tr)
    c = np.array([_hand_centroids(f)[0] for f in frames])   # the image-left hand (person's right)
    ok = ~np.isnan(c).any(1)
    assert ok.mean() > 0.9
    want = np.stack([tr.get("body.r_wrist.x"), tr.get("body.r_wrist.y")], 1)
    for a in range(2):
        r = np.corrcoef(c[ok, a], want[ok, a])[0, 1]
        assert r >= 0.85, (a, r)
    # and about as far as the sequence says, in shoulder widths (the drawn hand's centre lies
    # past the wrist, on the turning forearm's lever, so it travels a little further)
    span = np.ptp(c[ok, 0]) / layer.sw
    assert 0.8 <= span / np.ptp(want[:, 0]) <= 1.4


def test_no_holes_and_background_outside_the_envelope_is_untouched(layer, figure):
    n = 30
    tr = MotionTrack.neutral(n, FPS, channels=["body.l_wrist.x", "body.l_wrist.y",
                                               "body.r_wrist.x", "body.r_wrist.y"])
    ramp = np.linspace(0, 1, n)
    tr.set("body.l_wrist.x", 0.35 * ramp)
    tr.set("body.l_wrist.y", -0.5 * ramp)
    tr.set("body.r_wrist.x", 0.4 * ramp)
    tr.set("body.r_wrist.y", -0.3 * ramp)
    frames = _render(layer, figure, tr)
    env = layer.envelope
    assert 0.0 < env.mean() < 0.7                  # the envelope is not the whole frame
    for f in frames:
        assert np.array_equal(f[~env], figure.image[~env])
    last = frames[-1]
    # the moved hands are elsewhere, and where they were is filled, not left black or empty
    uncovered = layer.hole & (np.abs(last.astype(int) - figure.image.astype(int)).sum(-1) > 0)
    assert uncovered.sum() > 50
    assert layer.last_disoccluded > 0
    assert not (last[uncovered] == 0).all(-1).any()
    hand_left = (np.abs(last[uncovered].astype(int) - HAND).sum(-1) < 40).mean()
    assert hand_left < 0.05                        # no copy of the hand stays behind
    rep = layer.report()
    assert rep["moved_frames"] >= n - 1 and rep["disoccluded_px_max"] > 0


def test_rendered_speech_gestures_move_in_speech_not_in_pauses(layer, figure):
    sp, act = _synthetic_speech(duration=10.0, seed=4)
    n = int(sp.duration * FPS)
    tr = mix_body(base=None, n_frames=n, fps=FPS, fallback=speech_gestures(sp, n, FPS, seed=1))
    frames = _render(layer, figure, tr)
    c = np.array([_hand_centroids(f) for f in frames])          # (n, 2 hands, 2)
    on, pause = _pause_and_speech_frames(act, sp.hop, n)
    e_on, e_pause = _energy(c, on), _energy(c, pause)
    assert e_on > 0.5                                            # pixels² per frame
    assert e_on >= 3.0 * e_pause, (e_on, e_pause)


# ------------------------------------------------------------------------------------------
# REST: the pose upload
# ------------------------------------------------------------------------------------------

def test_rest_pose_upload_is_validated(tmp_path, astronaut_png, short_speech):
    """A pickled or malformed pose upload is refused with a 4xx and a code before queueing."""
    import io
    import pickle

    from fastapi.testclient import TestClient

    from echomimic.service.app import create_app
    from echomimic.service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, auth=False))
    bad_shape = io.BytesIO()
    np.savez(bad_shape, body=np.zeros((3, 17, 3)), hands=np.zeros((3, 2, 21, 3)),
             face=np.zeros((3, 68, 3)), fps=25.0, width=64, height=64)
    cases = {"pickle": pickle.dumps({"bodies": {"candidate": [[0.5, 0.5]]}}),
             "npy-pickle": b"\x93NUMPY\x01\x00" + b"v" * 20,
             "shape": bad_shape.getvalue(),
             "schema": json.dumps({"schema": "echomimic.pose/9", "frames": []}).encode()}
    with TestClient(app) as client:
        for what, blob in cases.items():
            r = client.post("/api/v1/generate", files={
                "image": ("a.png", astronaut_png.read_bytes(), "image/png"),
                "audio": ("a.wav", short_speech.path.read_bytes(), "audio/wav"),
                "pose": ("p.npz", blob, "application/octet-stream")})
            assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
            body = r.json()
            assert body["code"] and "pose" in body["message"].lower(), (what, body)
            assert "Traceback" not in r.text


def test_a_face_crop_skips_the_body_detector(astronaut_png, monkeypatch):
    """A head-and-shoulders crop has no room below the chin for an arm: the (costly) body
    detector is not run, and no body motion is made; a pose sequence still asks for it."""
    from echomimic.analysis import cache
    from echomimic.errors import InvalidOption
    from echomimic.motion import body as body_mod
    from echomimic.options import AnimateOptions
    from echomimic.pipeline import load_portrait

    portrait = load_portrait(str(astronaut_png), AnimateOptions(crop="face", size=256))
    assert not body_mod._room_for_arms(portrait)
    calls = []

    def fake_detect(rgb):
        calls.append(rgb.shape)
        raise RuntimeError("no body here")

    monkeypatch.setattr(cache, "body_cached", fake_detect)
    assert body_mod.photo_body(portrait) is None
    assert calls == []                                  # skipped
    with pytest.raises(InvalidOption):
        body_mod.photo_body(portrait, required=True)    # a pose file still runs the detector
    assert len(calls) == 1


def test_large_bend_keeps_the_forearm_in_one_piece(figure):
    """Bones turned far apart (the elbow bent by ~90 degrees, the wrist lifted high): the moved
    forearm and hand stay one piece (a pixel-wise inverse of the blended map tore them apart)."""
    n = 12
    tr = MotionTrack.neutral(n, FPS, channels=["body.r_wrist.x", "body.r_wrist.y",
                                               "body.r_elbow.x", "body.r_elbow.y"])
    ramp = np.linspace(0, 1, n)
    tr.set("body.r_wrist.x", -0.6 * ramp)
    tr.set("body.r_wrist.y", -0.7 * ramp)
    tr.set("body.r_elbow.x", -0.3 * ramp)
    from echomimic.render.warp.body import BodyLayer

    layer = BodyLayer.create(figure)
    layer.prepare(list(tr.channels), tr.values)
    frames = _render(layer, figure, tr)
    skin = np.array([225, 180, 150])
    for f in frames[-4:]:
        arm = ((np.abs(f.astype(int) - skin).sum(-1) < 40)
               | (np.abs(f.astype(int) - HAND).sum(-1) < 40)).astype(np.uint8)
        arm[:, int(0.4 * figure.image.shape[1]):] = 0     # the image-left arm (person's right),
        arm[:int(0.35 * figure.image.shape[0])] = 0        # not the head
        n_lab, lab, stats, _ = cv2.connectedComponentsWithStats(arm, connectivity=8)
        areas = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]
        assert areas.size and areas[0] >= 0.97 * areas.sum(), areas[:6]


def test_a_forearm_folded_over_the_upper_arm_moves_whole(figure):
    """A forearm pointing at the camera lies over its upper arm in the photo (as in most
    half-body portraits). Swung out to the side, it is drawn whole from the elbow to the hand:
    its pixels over the upper arm go with the forearm, not with the upper arm (which left most of
    the moved forearm as clean plate between the elbow and the hand)."""
    from echomimic.render.warp.body import BodyLayer

    folded = _figure(folded=True)
    layer = BodyLayer.create(folded)
    n = 8
    tr = MotionTrack.neutral(n, FPS, channels=["body.r_wrist.x", "body.r_wrist.y"])
    ramp = np.linspace(0, 1, n)
    tr.set("body.r_wrist.x", -0.45 * ramp)
    tr.set("body.r_wrist.y", 0.25 * ramp)
    layer.prepare(list(tr.channels), tr.values)
    frames = _render(layer, folded, tr)
    arm = next(a for a in layer.arms if a.side == "r")
    pose = arm.solve(dict(zip(tr.channels, tr.values[-1].tolist())))
    E2, W2 = pose.targets[1], pose.targets[2]
    assert np.hypot(*(W2 - arm.W)) > 0.4 * arm.sw          # the wrist swung out
    skin = np.array([225, 180, 150])
    t = np.linspace(0.25, 0.75, 21)
    pts = np.round(E2[None] + t[:, None] * (W2 - E2)[None]).astype(int)
    on = np.abs(frames[-1][pts[:, 1], pts[:, 0]].astype(int) - skin).sum(-1) < 60
    assert on.mean() >= 0.9, on.astype(int)
