"""Body-pose files (echomimic.pose/1), EchoMimic V2 conversion, body/hand detection, extract-pose,
and the wrist measurements used to check half-body animation."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from echomimic.cli import app
from echomimic.errors import MotionError, PoseError
from echomimic.motion import body_pose as bp
from echomimic.motion.body_pose import (POSE_SCHEMA_ID, PoseSequence, is_body_pose_file,
                                        load_pose_sequence, save_pose_sequence)

runner = CliRunner()


def _sequence(n: int = 6, seed: int = 0) -> PoseSequence:
    rng = np.random.default_rng(seed)
    seq = PoseSequence.empty(n, fps=24, width=640, height=480)
    for arr in (seq.body, seq.hands, seq.face):
        arr[..., :2] = rng.uniform(-0.2, 1.2, arr[..., :2].shape)
        arr[..., 2] = rng.uniform(0.3, 1.0, arr[..., 2].shape)
    seq.body[min(1, n - 1), 9:14] = 0   # legs missing in frame 1
    seq.hands[min(2, n - 1), 0] = 0     # left hand missing in frame 2
    seq.face[min(3, n - 1)] = 0         # no face in frame 3
    return seq


def _json_doc(n: int = 3) -> dict:
    seq = _sequence(n)
    return bp.pose_to_dict(seq)


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path, suffix):
    seq = _sequence()
    path = save_pose_sequence(seq, tmp_path / f"p{suffix}")
    assert is_body_pose_file(path)
    back = load_pose_sequence(path)
    assert back.n_frames == seq.n_frames
    assert (back.fps, back.width, back.height) == (24.0, 640, 480)
    tol = 0 if suffix == ".npz" else 10 ** -bp.DECIMALS
    for part in ("body", "hands", "face"):
        assert getattr(back, part).shape == getattr(seq, part).shape
        np.testing.assert_allclose(getattr(back, part), getattr(seq, part), atol=tol, rtol=0)
    # missing points stay missing
    assert (back.hands[2, 0, :, 2] == 0).all() and (back.face[3, :, 2] == 0).all()
    # loading from bytes gives the same
    again = load_pose_sequence(path.read_bytes())
    np.testing.assert_array_equal(again.body, back.body)


def test_json_is_the_documented_layout(tmp_path):
    path = save_pose_sequence(_sequence(2), tmp_path / "p.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == POSE_SCHEMA_ID and doc["layout"] == "dwpose"
    assert {"fps", "width", "height", "frames"} <= doc.keys()
    fr = doc["frames"][0]
    assert np.asarray(fr["body"]).shape == (18, 3)
    assert np.asarray(fr["hands"]).shape == (2, 21, 3)
    assert np.asarray(fr["face"]).shape == (68, 3)
    # and it validates against the shipped JSON Schema
    import jsonschema

    jsonschema.validate(doc, bp.pose_schema())


def test_json_hands_and_face_may_be_omitted():
    doc = _json_doc(3)
    del doc["frames"][0]["face"]
    doc["frames"][1]["hands"] = None
    seq = load_pose_sequence(json.dumps(doc).encode())
    assert (seq.face[0, :, 2] == 0).all() and (seq.hands[1, ..., 2] == 0).all()
    assert (seq.face[1, :, 2] > 0).any()


# ------------------------------------------------------------------------------------------
# malformed files: one named error
# ------------------------------------------------------------------------------------------


def _bad_json(mutate) -> bytes:
    doc = _json_doc(3)
    mutate(doc)
    return json.dumps(doc).encode()


def _set(path, value):
    def mutate(doc):
        obj = doc
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return mutate


BAD_JSON = {
    "wrong schema": (_set(["schema"], "echomimic.pose/9"), "unsupported pose schema"),
    "motion schema": (_set(["schema"], "echomimic.motion/1"), "motion file"),
    "wrong layout": (_set(["layout"], "coco-wholebody"), "layout"),
    "no fps": (lambda d: d.pop("fps"), "fps"),
    "zero fps": (_set(["fps"], 0), "fps"),
    "zero width": (_set(["width"], 0), "width"),
    "17 body points": (lambda d: d["frames"][0]["body"].pop(), "body"),
    "17 body points later": (lambda d: d["frames"][2]["body"].pop(), "frame 2"),
    "one hand": (lambda d: d["frames"][1]["hands"].pop(), "hands"),
    "2d points": (lambda d: d["frames"][2].__setitem__("face", [[0.5, 0.5]] * 68), "face"),
    "out of range": (lambda d: d["frames"][2]["body"].__setitem__(3, [5.0, 0.5, 1.0]), "outside"),
    "score above 1": (lambda d: d["frames"][1]["body"].__setitem__(3, [0.5, 0.5, 1.5]), "score"),
    "text value": (lambda d: d["frames"][0]["body"].__setitem__(0, ["a", 0.5, 1.0]), "body"),
    "no frames": (_set(["frames"], []), "frames"),
    "extra field": (_set(["colour"], "red"), "colour"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_malformed_json_refused(case):
    mutate, words = BAD_JSON[case]
    with pytest.raises(PoseError, match=words):
        load_pose_sequence(_bad_json(mutate))


def test_nan_and_infinity_refused():
    text = _bad_json(lambda d: None).decode()
    for token in ("NaN", "Infinity", "-Infinity"):
        bad = text.replace("[[", f"[[{token}, 0.5, 1.0], [", 1)
        with pytest.raises(PoseError, match=token.lstrip("-") if token != "NaN" else "NaN"):
            load_pose_sequence(bad.encode())
    seq = _sequence(3)
    seq.hands[1, 1, 4, 0] = np.nan
    buf = io.BytesIO()
    np.savez(buf, body=seq.body, hands=seq.hands, face=seq.face, fps=24, width=64, height=64)
    with pytest.raises(PoseError, match="hands of frame 1 holds NaN"):
        load_pose_sequence(buf.getvalue())


def test_a_million_frames_refused():
    head = json.dumps({"schema": POSE_SCHEMA_ID, "fps": 25, "width": 8, "height": 8,
                       "layout": "dwpose"})[:-1]
    text = head + ', "frames": [' + ",".join(["{}"] * 1_000_000) + "]}"
    with pytest.raises(PoseError, match="1000000 frames; the limit is"):
        load_pose_sequence(text.encode())
    buf = io.BytesIO()
    np.savez_compressed(buf, body=np.zeros((1_000_000, 18, 3), np.uint8), fps=25, width=8,
                        height=8)
    with pytest.raises(PoseError, match="1000000 frames; the limit is"):
        load_pose_sequence(buf.getvalue())


def test_too_large_refused(tmp_path, monkeypatch):
    path = save_pose_sequence(_sequence(4), tmp_path / "p.json")
    monkeypatch.setattr(bp, "MAX_POSE_BYTES", 1000)
    with pytest.raises(PoseError, match="larger than"):
        load_pose_sequence(path)
    npz = tmp_path / "p.npz"
    np.savez_compressed(npz, body=np.zeros((100, 18, 3)), fps=25, width=8, height=8)
    assert npz.stat().st_size < 1000
    with pytest.raises(PoseError, match="unpacks to more than"):
        load_pose_sequence(npz)


def test_npz_shape_and_type_errors():
    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    seq = _sequence(2)
    good = dict(body=seq.body, hands=seq.hands, face=seq.face, fps=24, width=64, height=64)
    load_pose_sequence(npz(**good))
    cases = [
        (dict(good, body=seq.body[:, :17]), "body must have shape"),
        (dict(good, hands=seq.hands[:1]), "different numbers of frames"),
        (dict(good, face=seq.face[..., :2]), "face must have shape"),
        (dict(good, fps=np.array([24, 25])), "fps"),
        (dict(good, schema=np.array("echomimic.pose/2")), "unsupported pose schema"),
        ({k: v for k, v in good.items() if k != "width"}, "lacks"),
        (dict(landmarks=np.zeros((2, 478, 3)), fps=25), "face-landmark sequence"),
    ]
    for arrays, words in cases:
        with pytest.raises(PoseError, match=words):
            load_pose_sequence(npz(**arrays))


# ------------------------------------------------------------------------------------------
# pickles are never loaded
# ------------------------------------------------------------------------------------------


class _Boom:
    """Unpickling this would create a file: proof that the loader ran a pickle."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_pickled_npy_refused_by_the_loader(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "0.npy"
    np.save(path, np.array({"bodies": _Boom(str(target))}, dtype=object), allow_pickle=True)
    with pytest.raises(PoseError, match="pickle.*convert-poses"):
        load_pose_sequence(path)
    with pytest.raises(PoseError, match="pickle"):
        load_pose_sequence(path.read_bytes())
    # a bare pickle stream and an NPZ holding an object array are refused too
    with pytest.raises(PoseError, match="pickle"):
        load_pose_sequence(pickle.dumps(_Boom(str(target))))
    buf = io.BytesIO()
    np.savez(buf, body=np.array([_Boom(str(target))], dtype=object), fps=25, width=8, height=8)
    with pytest.raises(PoseError, match="pickle"):
        load_pose_sequence(buf.getvalue())
    assert not target.exists()
    # a plain numeric .npy is not a pose file either
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((2, 18, 3)))
    with pytest.raises(PoseError, match="single .npy"):
        load_pose_sequence(plain)


def test_body_pose_and_face_landmark_files_told_apart(tmp_path):
    from echomimic.motion.pose_io import is_pose_file, load_landmark_sequence

    body = save_pose_sequence(_sequence(2), tmp_path / "b.json")
    body_npz = save_pose_sequence(_sequence(2), tmp_path / "b.npz")
    face = tmp_path / "f.json"
    face.write_text(json.dumps({"fps": 25, "landmarks": [np.zeros((478, 3)).tolist()]}))
    assert is_body_pose_file(body) and is_body_pose_file(body_npz)
    assert not is_body_pose_file(face)
    assert is_pose_file(face) and not is_pose_file(body)
    for path in (body, body_npz):
        with pytest.raises(MotionError, match="body-pose sequence.*--pose"):
            load_landmark_sequence(path)
    with pytest.raises(PoseError, match="face-landmark sequence"):
        load_pose_sequence(face)


# ------------------------------------------------------------------------------------------
# CLI: errors as one line, exit 2
# ------------------------------------------------------------------------------------------


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["wrong schema", "17 body points", "out of range"])
def test_cli_refuses_malformed_pose_file(tmp_path, case):
    src = tmp_path / "bad.json"
    src.write_bytes(_bad_json(BAD_JSON[case][0]))
    out = tmp_path / "out.npz"
    line = _one_error_line(runner.invoke(app, ["convert-poses", str(src), "-o", str(out)]))
    assert "bad.json" in line
    assert not out.exists()


def test_cli_refuses_pickled_npy_file(tmp_path):
    src = tmp_path / "0.npy"
    np.save(src, np.array({"bodies": {}}, dtype=object), allow_pickle=True)
    res = runner.invoke(app, ["convert-poses", str(src), "-o", str(tmp_path / "o.npz"),
                              "--trust-pickle"])
    assert "pickle" in _one_error_line(res)


def test_cli_converts_between_json_and_npz(tmp_path):
    src = save_pose_sequence(_sequence(3), tmp_path / "a.json")
    res = runner.invoke(app, ["convert-poses", str(src), "-o", str(tmp_path / "a.npz")])
    assert res.exit_code == 0, res.output
    a, b = load_pose_sequence(src), load_pose_sequence(tmp_path / "a.npz")
    np.testing.assert_array_equal(a.hands, b.hands)


# ------------------------------------------------------------------------------------------
# EchoMimic V2 demo folders
# ------------------------------------------------------------------------------------------


def _v2_folder(folder: Path, n: int = 3) -> dict:
    """A folder of pickled per-frame dicts with EchoMimic V2's structure: coordinates relative to
    a drawing rectangle of 384 x 512 pasted at columns 64:448 of a 512 x 512 canvas."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    truth = []
    for i in range(n):
        cand = rng.uniform(0.1, 0.9, (18, 2))
        subset = np.arange(18, dtype=np.float64)[None].copy()
        subset[0, [9, 10, 12, 13]] = -1                       # legs not visible
        score = rng.uniform(0.5, 1.08, (1, 18))               # DWPose scores can exceed 1
        hands = rng.uniform(0.2, 0.8, (2, 21, 2))
        hands_score = rng.uniform(0.5, 1.0, (2, 21))
        hands_score[1, 5:] = 0.1                              # right-hand fingers uncertain
        faces = rng.uniform(0.3, 0.6, (1, 68, 2))
        faces_score = np.full((1, 68), 0.95)
        d = {"bodies": {"candidate": cand, "subset": subset, "score": score}, "hands": hands,
             "hands_score": hands_score, "faces": faces, "faces_score": faces_score, "num": i,
             "draw_pose_params": [512, 384, 0, 512, 64, 448]}
        np.save(folder / f"{i}.npy", np.array(d, dtype=object), allow_pickle=True)
        truth.append(d)
    return {"frames": truth}


def test_convert_poses_v2_folder(tmp_path):
    truth = _v2_folder(tmp_path / "poses")["frames"]
    out = tmp_path / "poses.npz"
    res = runner.invoke(app, ["convert-poses", str(tmp_path / "poses"), "-o", str(out),
                              "--trust-pickle", "--fps", "24"])
    assert res.exit_code == 0, res.output
    seq = load_pose_sequence(out)
    assert (seq.n_frames, seq.fps, seq.width, seq.height) == (3, 24.0, 512, 512)
    d = truth[2]
    cand = d["bodies"]["candidate"]
    # x: 64 px offset + 384 px wide rectangle, y: the whole 512 px height
    np.testing.assert_allclose(seq.body[2, 0, 0], (64 + cand[0, 0] * 384) / 512, atol=1e-6)
    np.testing.assert_allclose(seq.body[2, 0, 1], cand[0, 1], atol=1e-6)
    assert (seq.body[2, [9, 10, 12, 13], 2] == 0).all()       # subset -1: missing
    assert seq.body[2, :, 2].max() <= 1.0                     # scores clipped
    # hands keep their order (left first) and uncertain points are missing
    np.testing.assert_allclose(seq.hands[2, 0, 0, 0], (64 + d["hands"][0, 0, 0] * 384) / 512,
                               atol=1e-6)
    assert (seq.hands[2, 1, 5:, 2] == 0).all() and (seq.hands[2, 1, :5, 2] > 0).all()
    assert (seq.face[:, :, 2] > 0).all()


def test_convert_poses_refuses_pickles_without_the_flag(tmp_path, monkeypatch):
    _v2_folder(tmp_path / "poses")
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    out = tmp_path / "poses.npz"
    line = _one_error_line(runner.invoke(app, ["convert-poses", str(tmp_path / "poses"),
                                               "-o", str(out)]))
    assert "--trust-pickle" in line and "pickle" in line
    assert not out.exists()
    assert True not in calls                                  # nothing was unpickled
    with pytest.raises(PoseError, match="trust-pickle"):
        bp.convert_v2_folder(tmp_path / "poses")
    # the loader used everywhere refuses the folder, pointing to convert-poses
    with pytest.raises(PoseError, match="convert-poses"):
        load_pose_sequence(tmp_path / "poses")


# ------------------------------------------------------------------------------------------
# detection
# ------------------------------------------------------------------------------------------


def test_detect_body_on_astronaut(astronaut_rgb):
    from echomimic.analysis.body import BODY_POINTS, detect_body

    pose = detect_body(np.asarray(astronaut_rgb), face=True)
    assert pose.found and (pose.width, pose.height) == (512, 512)
    b = {name: pose.body[i] for i, name in enumerate(BODY_POINTS)}
    for name in ("nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye"):
        assert b[name][2] > 0.5, name
    # the person's right is on the left of the picture
    assert b["r_shoulder"][0] < b["nose"][0] < b["l_shoulder"][0]
    assert b["r_eye"][0] < b["l_eye"][0]
    # shoulders well below the eyes, wider apart than the eyes, neck between the shoulders
    eye_y = (b["r_eye"][1] + b["l_eye"][1]) / 2
    eye_w = b["l_eye"][0] - b["r_eye"][0]
    for s in ("r_shoulder", "l_shoulder"):
        assert b[s][1] > eye_y + 2 * eye_w
    assert b["l_shoulder"][0] - b["r_shoulder"][0] > 3 * eye_w
    np.testing.assert_allclose(b["neck"][:2], (b["r_shoulder"][:2] + b["l_shoulder"][:2]) / 2,
                               atol=1e-6)
    # legs are out of the picture: missing, not invented
    assert (pose.body[[9, 10, 12, 13], 2] == 0).all()
    # the 68 face points surround the nose
    face = pose.face[pose.face[:, 2] > 0]
    assert len(face) == 68
    assert face[:, 0].min() < b["nose"][0] < face[:, 0].max()
    assert face[:, 1].min() < b["nose"][1] < face[:, 1].max()


def test_nobody_means_every_score_zero(faceless_png):
    from PIL import Image

    from echomimic.analysis.body import detect_body

    pose = detect_body(np.asarray(Image.open(faceless_png).convert("RGB")))
    assert not pose.found
    assert pose.body[:, 2].max() == 0 and pose.hands[..., 2].max() == 0


def test_hands_assigned_by_wrist_proximity_then_label():
    from echomimic.analysis.body import LEFT_HAND, RIGHT_HAND, _assign_hands

    body = np.zeros((18, 3))
    body[2] = (0.3, 0.4, 1)      # r-shoulder (picture left)
    body[5] = (0.7, 0.4, 1)      # l-shoulder
    body[4] = (0.25, 0.8, 1)     # r-wrist
    body[7] = (0.75, 0.8, 1)     # l-wrist

    def hand_at(x, y):
        pts = np.zeros((21, 2))
        pts[:] = (x, y)
        return pts

    # MediaPipe's labels assume a mirrored picture: "Left" is the person's right hand
    hands = _assign_hands(body, [(hand_at(0.26, 0.8), "Left", 0.9)], aspect=1.0)
    assert hands[RIGHT_HAND, 0, 2] == pytest.approx(0.9) and hands[LEFT_HAND, 0, 2] == 0
    # proximity to the pose's wrists wins over a wrong label
    hands = _assign_hands(body, [(hand_at(0.74, 0.79), "Left", 0.8),
                                 (hand_at(0.26, 0.81), "Left", 0.7)], aspect=1.0)
    assert hands[LEFT_HAND, 0, 0] == pytest.approx(0.74)
    assert hands[RIGHT_HAND, 0, 0] == pytest.approx(0.26)
    # the same hand found twice is kept once, in its own slot
    hands = _assign_hands(body, [(hand_at(0.26, 0.8), "Left", 0.7),
                                 (hand_at(0.262, 0.801), "Right", 0.9)], aspect=1.0)
    assert hands[RIGHT_HAND, 0, 2] == pytest.approx(0.9) and hands[LEFT_HAND, 0, 2] == 0
    # a hand far from both wrists (someone else's) is not assigned
    hands = _assign_hands(body, [(hand_at(0.5, 0.05), "Right", 0.9)], aspect=1.0)
    assert hands[..., 2].max() == 0
    # without pose wrists the label decides
    body[[4, 7]] = 0
    hands = _assign_hands(body, [(hand_at(0.5, 0.5), "Right", 0.9)], aspect=1.0)
    assert hands[LEFT_HAND, 0, 2] > 0 and hands[RIGHT_HAND, 0, 2] == 0


# ------------------------------------------------------------------------------------------
# extract-pose on a short synthetic video
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moving_astronaut(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """12 frames at 10 fps of the astronaut sliding right by 6 px a frame (mp4)."""
    import av
    import cv2
    import skimage.data

    img = skimage.data.astronaut()
    shifts = np.arange(12) * 6.0
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 512, 512, "yuv420p"
        s.options = {"crf": "18"}
        for dx in shifts:
            m = np.float32([[1, 0, dx], [0, 1, 0]])
            frame = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path, shifts


def test_extract_pose_cli(tmp_path, moving_astronaut):
    video, shifts = moving_astronaut
    out = tmp_path / "pose.json"
    res = runner.invoke(app, ["extract-pose", str(video), "-o", str(out), "--no-face"])
    assert res.exit_code == 0, res.output
    seq = load_pose_sequence(out)
    assert (seq.n_frames, seq.width, seq.height) == (12, 512, 512)
    assert seq.fps == pytest.approx(10.0)
    assert (seq.body[:, 1, 2] > 0).all()                      # body in every frame
    neck_x = seq.body[:, 1, 0] * 512
    assert np.corrcoef(neck_x, shifts)[0, 1] > 0.95
    moved = neck_x[-1] - neck_x[0]
    assert 0.6 * shifts[-1] < moved < 1.3 * shifts[-1]
    assert (seq.face[..., 2] == 0).all()                      # --no-face


def test_extract_pose_errors(tmp_path):
    _one_error_line(runner.invoke(app, ["extract-pose", str(tmp_path / "nope.mp4"), "-o",
                                        str(tmp_path / "p.json")]))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    _one_error_line(runner.invoke(app, ["extract-pose", str(bad), "-o", str(tmp_path / "p.json")]))


def test_smoothing_keeps_missing_points_missing():
    seq = PoseSequence.empty(20, fps=25, width=100, height=100)
    rng = np.random.default_rng(3)
    seq.body[:, 1, :2] = 0.5 + rng.normal(0, 0.01, (20, 2))
    seq.body[:, 1, 2] = 1
    seq.body[8:11, 1] = 0                                      # a gap
    sm = bp.smooth_poses(seq)
    assert (sm.body[8:11, 1] == 0).all()
    assert np.std(np.diff(sm.body[:8, 1, 0])) < np.std(np.diff(seq.body[:8, 1, 0]))


# ------------------------------------------------------------------------------------------
# wrist measurements
# ------------------------------------------------------------------------------------------


def test_wrist_correlation_and_energy():
    from echomimic.quality.body import motion_energy, wrist_correlation, wrist_tracks_from_poses

    n = 48
    t = np.arange(n) / 24.0
    ref = PoseSequence.empty(n, fps=24, width=768, height=768)
    ref.hands[:, :, 0, 2] = 1
    ref.hands[:, 0, 0, 0] = 0.6 + 0.1 * np.sin(2 * np.pi * t)
    ref.hands[:, 0, 0, 1] = 0.7 + 0.05 * np.cos(3 * t)
    ref.hands[:, 1, 0, 0] = 0.3 + 0.05 * t
    ref.hands[:, 1, 0, 1] = 0.8 - 0.02 * t ** 2
    # the "rendered" person: another framing (scaled, shifted), one hand lost for some frames
    out = PoseSequence.empty(n, fps=24, width=512, height=512)
    out.hands[:, :, 0, 2] = 1
    out.hands[:, :, 0, :2] = 0.2 + 0.5 * ref.hands[:, :, 0, :2]
    out.hands[10:20, 1, 0] = 0
    out.hands[30, 0, 0, 0] = 0.99                              # a glitch lowers r a little
    r = wrist_correlation(wrist_tracks_from_poses(ref), wrist_tracks_from_poses(out))
    assert r["right"]["frames"] == n - 10
    assert r["right"]["x"] == pytest.approx(1.0) and r["right"]["y"] == pytest.approx(1.0)
    assert 0.5 < r["left"]["x"] < 0.99 and r["left"]["y"] == pytest.approx(1.0)
    # a still clip has no correlation to speak of
    still = PoseSequence.empty(n, fps=24, width=512, height=512)
    still.hands[:, :, 0] = (0.5, 0.5, 1)
    assert np.isnan(wrist_correlation(wrist_tracks_from_poses(ref),
                                      wrist_tracks_from_poses(still))["left"]["x"])
    # energy: the moving first second versus a still second
    moving = PoseSequence.empty(n, fps=24, width=512, height=512)
    moving.hands[:, :, 0, 2] = 1
    moving.hands[:24, 0, 0, 0] = 0.5 + 0.1 * np.sin(2 * np.pi * t[:24])
    moving.hands[24:, 0, 0, 0] = 0.5
    e = motion_energy(wrist_tracks_from_poses(moving), [(0.0, 1.0), (1.05, 2.0), (5.0, 6.0)])
    assert e[0] > 100 * max(e[1], 1e-12)
    assert e[1] == 0 and np.isnan(e[2])


def test_left_right_mix_ups_of_the_detector_are_undone():
    """The pose model now and then mirrors a frontal skeleton for a frame, takes one hand for
    both wrists, or puts a lone hand on the wrong side: wrists measured in a video are kept on
    their sides by continuity, and the true tracks are left alone."""
    from echomimic.quality.body import WristTracks, keep_sides, wrist_correlation

    n = 60
    t = np.arange(n) / 25.0
    left = np.stack([0.8 + 0.05 * np.sin(3 * t), 0.7 + 0.03 * np.cos(2 * t)], 1)
    right = np.stack([0.2 - 0.05 * np.sin(2 * t), 0.7 + 0.04 * np.sin(3 * t)], 1)
    truth = WristTracks(left.copy(), right.copy(), 25.0, 768, 768, np.ones(n, bool))
    assert np.array_equal(keep_sides(truth).left, truth.left)
    assert np.array_equal(keep_sides(truth).right, truth.right)
    seen_l, seen_r = left.copy(), right.copy()
    seen_l[[17, 18]], seen_r[[17, 18]] = right[[17, 18]], left[[17, 18]]    # mirrored
    seen_l[30] = right[30] + 0.005                                          # one hand twice
    seen_l[41], seen_r[41] = right[41], np.nan                              # a lone hand
    seen = WristTracks(seen_l, seen_r, 25.0, 768, 768, np.ones(n, bool))
    r = wrist_correlation(truth, seen)
    assert r["left"]["x"] < 0.5                                             # what it did to r
    fixed = keep_sides(seen)
    ok = [i for i in range(n) if i not in (30, 41)]
    assert np.allclose(fixed.left[ok], left[ok]) and np.allclose(fixed.right[:41], right[:41])
    assert np.isnan(fixed.left[[30, 41]]).all()
    assert np.allclose(fixed.right[30], right[30]) and np.allclose(fixed.right[41], right[41])
    r = wrist_correlation(truth, fixed)
    assert r["left"]["x"] == pytest.approx(1.0) and r["right"]["x"] == pytest.approx(1.0)


def test_docs_carry_the_packaged_schema():
    from importlib import resources

    packaged = resources.files("echomimic").joinpath("schemas", "pose.schema.json").read_bytes()
    docs = (Path(__file__).resolve().parents[1] / "docs" / "pose.schema.json").read_bytes()
    assert packaged == docs


def test_wrist_tracks_from_frames(monkeypatch):
    """wrist_tracks feeds every frame to one tracker and keeps hand wrists (or, when asked, the
    pose's wrists) per frame, NaN where not visible."""
    import echomimic.analysis.body as body_mod
    from echomimic.quality.body import wrist_tracks

    seen = []

    class FakeTracker:
        def __init__(self, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def __call__(self, rgb):
            i = len(seen)
            seen.append(rgb.shape)
            p = body_mod.BodyPose.empty(rgb.shape[1], rgb.shape[0])
            p.body[[1, 2, 5], 2] = 1
            p.body[4] = (0.3, 0.8, 0.9)                 # right wrist seen by the pose
            if i % 3:                                    # the hand model finds it 2 frames in 3
                p.hands[1, :, :2] = (0.31 + 0.01 * i, 0.81)
                p.hands[1, :, 2] = 0.9
            return p

    monkeypatch.setattr(body_mod, "BodyTracker", FakeTracker)
    frames = [np.zeros((40, 60, 3), np.uint8)] * 9
    tracks = wrist_tracks(iter(frames), fps=12)
    assert len(seen) == 9 and tracks.n_frames == 9 and (tracks.width, tracks.height) == (60, 40)
    vis = tracks.visible("right")
    np.testing.assert_array_equal(vis, [i % 3 != 0 for i in range(9)])
    np.testing.assert_allclose(tracks.right[vis, 0], [0.31 + 0.01 * i for i in range(9) if i % 3])
    assert not tracks.visible("left").any() and tracks.body.all()
    loose = wrist_tracks(iter(frames), fps=12, need_hand=False)
    assert loose.visible("right").all() and loose.right[0, 0] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        wrist_tracks(iter(frames))                       # frames need a frame rate
