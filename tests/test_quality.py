"""Tests of the quality metrics (face measurements, audio figures, identity, evaluation)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from echomimic.errors import ImageError, InvalidOption, VideoError
from echomimic.quality import (
    FaceTracks,
    background_diff,
    best_lag_correlation,
    evaluate_video,
    head_pose,
    jitter,
    lipsync_loudness_r,
    loudness_envelope,
    measure_frames,
    measure_image,
    opening_percentiles,
    silence_closure,
    speech_pauses,
)

PORTRAITS = Path(__file__).resolve().parents[2] / "shared" / "media" / "portraits"
SR = 16000
FPS = 25


# ------------------------------------------------------------------------------------------
# Helpers that make the test data
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def astro_tracks(astronaut) -> FaceTracks:
    return measure_image(astronaut)


def open_mouth(img: np.ndarray, lm: np.ndarray, amount: float) -> np.ndarray:
    """Move the lower lip and jaw down by ``amount`` pixels and paint the opened gap dark.

    ``lm`` are the photo's face-mesh landmarks; the gap opens between the inner lips and tapers
    to nothing at the inner mouth corners (78, 308).
    """
    if amount <= 0:
        return img.copy()
    h, w = img.shape[:2]
    lower_inner = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
    px, py = lm[lower_inner, 0], lm[lower_inner, 1]
    order = np.argsort(px)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    lip_line = np.interp(xs[0], px[order], py[order])[None, :]    # top of the lower lip
    cx, half = 0.5 * (lm[78, 0] + lm[308, 0]), 0.5 * abs(lm[308, 0] - lm[78, 0])
    wx = np.clip(1.0 - ((xs - cx) / half) ** 2, 0.0, 1.0)
    y_low = lm[17, 1]                                              # under the lower lip
    y_end = lm[152, 1] + 0.4 * (lm[152, 1] - y_low)                # below the chin
    wy = np.where(ys < lip_line, 0.0,
                  np.where(ys <= y_low, 1.0, np.clip((y_end - ys) / (y_end - y_low), 0, 1)))
    dy = (amount * wx * wy).astype(np.float32)
    out = cv2.remap(img, xs, ys - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gap = (ys >= lip_line) & (ys - dy < lip_line)
    out[gap] = (55, 22, 28)
    return out


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """cv2 rotation about the image centre (positive = counter-clockwise on screen)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def tone_pattern(segments: list[tuple[str, float]], sr: int = SR, seed: int = 0) -> np.ndarray:
    """Concatenate ('tone'|'silence'|'noise', seconds) segments of a 220 Hz tone."""
    rng = np.random.default_rng(seed)
    parts = []
    for kind, dur in segments:
        n = int(round(dur * sr))
        t = np.arange(n) / sr
        if kind == "tone":
            parts.append(0.5 * np.sin(2 * np.pi * 220 * t))
        elif kind == "noise":
            parts.append(rng.normal(0.0, 0.003, n))
        else:
            parts.append(np.zeros(n))
    return np.concatenate(parts).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Face measurements
# ------------------------------------------------------------------------------------------


def test_astronaut_measurements(astro_tracks):
    t = astro_tracks
    assert t.n_frames == 1 and t.found.all()
    assert t.landmarks.shape == (1, 478, 3)
    # The astronaut smiles with the lips slightly parted over the teeth: a small gap.
    print(f"astronaut lip_gap={t.lip_gap[0]:.4f} eye_open={t.eye_open_left[0]:.3f}/"
          f"{t.eye_open_right[0]:.3f} yaw={t.yaw[0]:.2f} pitch={t.pitch[0]:.2f} "
          f"roll={t.roll[0]:.2f} mouth_corner_y={t.mouth_corner_y[0]:.3f}")
    assert 0.0 <= t.lip_gap[0] < 0.2
    assert t.eye_open_left[0] > 0.2 and t.eye_open_right[0] > 0.2
    assert 40 < t.eye_dist[0] < 120
    assert 0.5 < t.mouth_width[0] < 1.0
    assert -1.0 < t.mouth_corner_y[0] < -0.3        # mouth corners below the eye line
    assert abs(t.yaw[0]) < 10 and abs(t.roll[0]) < 10 and abs(t.pitch[0]) < 20


def test_opened_mouth_gives_larger_gap(astronaut, astro_tracks):
    lm = astro_tracks.landmarks[0]
    eye = astro_tracks.eye_dist[0]
    gaps = [measure_image(open_mouth(astronaut, lm, a * eye)).lip_gap[0] for a in (0.1, 0.35)]
    print(f"opened lip_gap: {gaps[0]:.3f} (0.1 eye), {gaps[1]:.3f} (0.35 eye)")
    assert gaps[0] > astro_tracks.lip_gap[0] + 0.05
    assert gaps[1] > gaps[0] + 0.05


def test_head_pose_signs_flip_and_rotation(astronaut, astro_tracks):
    orig = astro_tracks
    flipped = measure_image(np.ascontiguousarray(astronaut[:, ::-1]))
    # cv2's +10° is counter-clockwise on screen, so roll (clockwise positive) drops by 10.
    ccw = measure_image(rotate(astronaut, 10.0))
    cw = measure_image(rotate(astronaut, -10.0))
    print(f"roll orig={orig.roll[0]:.2f} flipped={flipped.roll[0]:.2f} "
          f"ccw10={ccw.roll[0]:.2f} cw10={cw.roll[0]:.2f}; "
          f"yaw orig={orig.yaw[0]:.2f} flipped={flipped.yaw[0]:.2f}")
    assert ccw.roll[0] - orig.roll[0] == pytest.approx(-10.0, abs=2.0)
    assert cw.roll[0] - orig.roll[0] == pytest.approx(10.0, abs=2.0)
    # A mirror image reverses roll and yaw.
    assert np.sign(flipped.roll[0]) == -np.sign(orig.roll[0])
    assert flipped.roll[0] == pytest.approx(-orig.roll[0], abs=1.5)
    assert flipped.yaw[0] == pytest.approx(-orig.yaw[0], abs=2.0)
    # The flipped face and a clockwise-rotated one tilt opposite ways.
    assert np.sign(flipped.roll[0]) == -np.sign(cw.roll[0])


def _rotate_landmarks(lm: np.ndarray, axis: str, degrees: float) -> np.ndarray:
    """Rotate 3D landmarks about the face centre (camera axes: x right, y down, z away)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "y":      # positive: the nose (towards -z) swings to +x
        r = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    elif axis == "x":    # positive: the nose swings to +y (down)
        r = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    else:                # "z", positive: clockwise on screen
        r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    centre = lm.mean(axis=0)
    return (lm - centre) @ r.T + centre


@pytest.mark.parametrize("axis,channel", [("y", "yaw"), ("x", "pitch"), ("z", "roll")])
def test_head_pose_follows_a_known_rotation(astro_tracks, axis, channel):
    lm = astro_tracks.landmarks[0].astype(np.float64)
    base = dict(zip(("yaw", "pitch", "roll"), (v[0] for v in head_pose(lm))))
    for deg in (-20.0, 15.0):
        got = dict(zip(("yaw", "pitch", "roll"),
                       (v[0] for v in head_pose(_rotate_landmarks(lm, axis, deg)))))
        assert got[channel] - base[channel] == pytest.approx(deg, abs=2.5)
        for other in {"yaw", "pitch", "roll"} - {channel}:
            assert abs(got[other] - base[other]) < 4.0


def test_tracking_a_video_and_missing_faces(astronaut, astro_tracks):
    lm = astro_tracks.landmarks[0]
    eye = astro_tracks.eye_dist[0]
    blank = np.full_like(astronaut, 128)
    frames = [open_mouth(astronaut, lm, a * eye) for a in (0.0, 0.15, 0.3, 0.15, 0.0)] + [blank]
    t = measure_frames(frames)
    assert t.n_frames == 6
    assert t.found.tolist() == [True] * 5 + [False]
    assert np.isnan(t.lip_gap[5]) and np.isnan(t.landmarks[5]).all()
    assert t.face_found_share == pytest.approx(5 / 6)
    assert t.lip_gap[2] > t.lip_gap[1] > t.lip_gap[0]


def test_small_face_in_big_frame_is_found_through_a_crop(astronaut):
    canvas = np.full((1440, 2560, 3), 70, np.uint8)
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    canvas[900:1156, 1900:2156] = small
    full = measure_image(canvas, crop="auto")
    assert full.found[0]
    ref = measure_image(small)
    # Landmarks come back in the big frame's pixels.
    shift = np.array([1900, 900])
    err = np.abs(full.landmarks[0, :, :2] - (ref.landmarks[0, :, :2] + shift)).mean()
    assert err < 3.0
    assert full.eye_dist[0] == pytest.approx(ref.eye_dist[0], rel=0.1)


def test_bad_frames_raise_image_error():
    with pytest.raises(ImageError):
        measure_image(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ImageError):
        measure_image(np.zeros((64, 64, 5), np.uint8))


# ------------------------------------------------------------------------------------------
# Audio and sequence metrics
# ------------------------------------------------------------------------------------------


def test_best_lag_correlation_finds_a_known_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    delayed = np.concatenate([np.zeros(4), a[:-4]])   # a, 4 samples later
    r, lag = best_lag_correlation(delayed, a, 6)
    assert lag == 4 and r == pytest.approx(1.0, abs=1e-9)
    r, lag = best_lag_correlation(a, delayed, 6)
    assert lag == -4 and r > 0.99
    # NaN-safe: gaps in either series are skipped.
    holes = delayed.copy()
    holes[::7] = np.nan
    r, lag = best_lag_correlation(holes, a, 6)
    assert lag == 4 and r > 0.99
    assert math.isnan(best_lag_correlation(np.full(10, np.nan), a[:10], 2)[0])
    # A shift beyond max_lag is not found.
    assert best_lag_correlation(delayed, a, 2)[0] < 0.5
    assert lipsync_loudness_r(delayed, a, max_lag=6) == pytest.approx(1.0)


@pytest.mark.parametrize("gap_kind", ["silence", "noise"])
def test_speech_pauses_finds_the_pause(gap_kind):
    x = tone_pattern([("tone", 1.0), (gap_kind, 0.5), ("tone", 1.0)])
    n = int(2.5 * FPS)
    pause = speech_pauses(x, SR, FPS, n)
    idx = np.flatnonzero(pause)
    print(f"pause frames ({gap_kind}): {idx.tolist()}")
    # The pause spans frames 25..37; the edge margins leave its middle.
    assert idx.size >= 6
    assert idx.min() >= 25 and idx.max() <= 37
    assert np.all(np.diff(idx) == 1)
    assert not pause[:25].any() and not pause[38:].any()
    # A pause shorter than min_pause is not one.
    assert not speech_pauses(x, SR, FPS, n, min_pause=0.6).any()
    # Without margins the whole gap is marked.
    full = np.flatnonzero(speech_pauses(x, SR, FPS, n, margin=0))
    assert full.size > idx.size


def test_speech_pauses_edge_cases():
    assert speech_pauses(np.zeros(SR), SR, FPS, 25).all()
    tone = tone_pattern([("tone", 1.0)])
    assert not speech_pauses(tone, SR, FPS, 25).any()
    # Video longer than the audio: the missing audio is silence.
    longer = speech_pauses(tone, SR, FPS, 50)
    assert not longer[:25].any() and longer[30:].all()


def test_loudness_envelope():
    x = tone_pattern([("tone", 1.0), ("noise", 0.5), ("tone", 1.0)])
    env = loudness_envelope(x, SR, FPS, int(2.5 * FPS))
    assert env.shape == (62,)
    assert env.min() >= 0.0 and env.max() <= 1.0
    assert env[2:23].min() > 0.9 and env[28:35].max() < 0.1
    # Half the amplitude is 6 dB quieter: lower, but well above the noise floor.
    y = x.copy()
    y[: SR] *= 0.5
    env2 = loudness_envelope(y, SR, FPS, 62)
    assert 0.6 < env2[10] < 0.99
    assert np.all(loudness_envelope(np.zeros(SR), SR, FPS, 25) == 0)


def test_silence_closure_and_opening_percentiles():
    gap = np.array([0.0, 0.01, 0.05, np.nan, 0.3, 0.2, 0.015, 0.1])
    pause = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    assert silence_closure(gap, pause) == pytest.approx(3 / 4)
    assert silence_closure(gap, pause, threshold=0.1) == pytest.approx(1.0)
    assert math.isnan(silence_closure(gap, np.zeros(8, bool)))
    p5, p50, p95 = opening_percentiles(gap, ~pause)
    assert p5 == pytest.approx(np.percentile([0.3, 0.2, 0.1], 5))
    assert p50 == pytest.approx(0.2) and p5 < p50 < p95
    assert all(math.isnan(v) for v in opening_percentiles(gap, np.zeros(8, bool)))


def test_background_diff():
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[:, :20] = True
    frame = photo.copy()
    frame[10:20, 30:50] = 0                          # inside the person: ignored
    assert background_diff(frame, photo, mask) == {"max_abs": 0, "n_diff": 0, "share": 0.0}
    frame[0, 0] = photo[0, 0].astype(int) ^ 7       # one background pixel changed
    d = background_diff(frame, photo, mask)
    assert d["n_diff"] == 1 and d["max_abs"] == 7 and d["share"] == pytest.approx(1 / 800)
    with pytest.raises(ValueError):
        background_diff(frame[:-1], photo, mask)


def test_jitter_ignores_rigid_head_motion(astro_tracks):
    lm = astro_tracks.landmarks[0].astype(np.float64)
    lips = [13, 14, 82, 87, 312, 317]
    seq = []
    for i in range(10):   # the head turns, rolls, moves and scales; the face does not change
        m = _rotate_landmarks(_rotate_landmarks(lm, "y", 2.0 * i), "z", -1.5 * i)
        seq.append(m * (1 + 0.01 * i) + np.array([3.0 * i, -2.0 * i, 0.0]))
    rigid = np.stack(seq)
    assert jitter(rigid, lips) < 1e-6
    shaky = rigid.copy()
    rng = np.random.default_rng(3)
    shaky[:, lips, :2] += rng.normal(0, 2.0, (10, len(lips), 2))
    j = jitter(shaky, lips)
    assert 0.01 < j < 0.2
    # Frames without a face are skipped.
    shaky[4] = np.nan
    assert np.isfinite(jitter(shaky, lips))


# ------------------------------------------------------------------------------------------
# Identity (dlib)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_model():
    pytest.importorskip("dlib")
    from echomimic.quality import IdentityModel

    return IdentityModel()


def test_identity_without_dlib_names_the_extra(monkeypatch):
    import sys

    from echomimic.quality import IdentityModel

    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ImportError, match=r"echomimic\[quality\]"):
        IdentityModel()


def test_identity_same_person(identity_model, astronaut):
    same = identity_model.distance(astronaut, astronaut)
    brighter = np.clip(astronaut.astype(np.int16) + 15, 0, 255).astype(np.uint8)
    moved = np.ascontiguousarray(np.roll(brighter, (5, 7), axis=(0, 1)))
    near = identity_model.distance(astronaut, moved)
    print(f"identity: self={same:.4f} brightened+shifted={near:.4f}")
    assert same < 0.1
    assert near < 0.4
    assert identity_model.descriptor(np.full((200, 200, 3), 127, np.uint8)) is None
    d = identity_model.distances(astronaut, [astronaut, np.zeros((100, 100, 3), np.uint8)])
    assert d[0] < 0.1 and np.isnan(d[1])


def test_identity_different_people(identity_model):
    from PIL import Image

    a, b = PORTRAITS / "real_man.jpg", PORTRAITS / "c.png"
    if not (a.is_file() and b.is_file()):
        pytest.skip("development portraits not available")
    ia = np.asarray(Image.open(a).convert("RGB"))
    ib = np.asarray(Image.open(b).convert("RGB"))
    dist = identity_model.distance(ia, ib)
    print(f"identity: real_man vs c = {dist:.3f}")
    assert dist > 0.6


# ------------------------------------------------------------------------------------------
# Whole-video evaluation
# ------------------------------------------------------------------------------------------


def _write_mp4(path: Path, frames: list[np.ndarray], audio: np.ndarray | None) -> None:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "18", "preset": "ultrafast"}
        if audio is not None:
            aus = out.add_stream("aac", rate=SR)
            aus.layout = "mono"
        for f in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode(None))
        if audio is not None:
            step = 1024
            for i in range(0, len(audio), step):
                chunk = audio[i:i + step].astype(np.float32)
                af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                af.sample_rate = SR
                af.pts = i
                out.mux(aus.encode(af))
            out.mux(aus.encode(None))


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory, astronaut, astro_tracks):
    """3 s clip: mouth opening follows a syllable-like tone envelope, with a pause."""
    n = 3 * FPS
    t = np.arange(3 * SR) / SR
    syll = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2          # 3 syllables / s
    speaking = (t < 1.2) | (t >= 2.0)
    amp = syll * speaking
    audio = (0.5 * amp * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    frame_amp = np.array([amp[int(i / FPS * SR): int((i + 1) / FPS * SR)].mean()
                          for i in range(n)])
    lm = astro_tracks.landmarks[0]
    eye = astro_tracks.eye_dist[0]
    frames = [open_mouth(astronaut, lm, 0.35 * eye * a / frame_amp.max()) for a in frame_amp]
    path = tmp_path_factory.mktemp("clip") / "talk.mp4"
    _write_mp4(path, frames, audio)
    return path


def test_evaluate_video(talking_clip, astronaut):
    pytest.importorskip("dlib")
    res = evaluate_video(talking_clip, image=astronaut)
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()})
    assert res["n_frames"] == 75 and res["fps"] == pytest.approx(25.0)
    assert res["has_audio"] is True
    assert res["face_found_share"] == 1.0
    assert res["lipsync_loudness_r"] > 0.7
    assert abs(res["lipsync_offset_frames"]) <= 1
    assert res["pause_frames"] >= 10
    assert res["open_p95"] > res["open_p5"] + 0.1
    # The photo's lips are parted over the teeth and the clip never closes them further.
    assert res["photo_lip_gap"] == pytest.approx(0.11, abs=0.04)
    assert res["open_p5"] == pytest.approx(res["photo_lip_gap"], abs=0.04)
    assert res["silence_closure"] == 0.0
    assert res["identity_mean"] < 0.4 and res["identity_frames"] >= 20
    assert res["identity_max"] >= res["identity_mean"]
    assert res["mouth_jitter"] >= 0.0


def test_evaluate_video_with_external_audio_and_mask(talking_clip, astronaut, tmp_path):
    import av

    # A silent wav: every frame is a pause, nothing correlates.
    wav = tmp_path / "quiet.wav"
    with av.open(str(wav), "w") as out:
        s = out.add_stream("pcm_s16le", rate=SR)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, SR * 3), np.int16), format="s16",
                                       layout="mono")
        f.sample_rate = SR
        f.pts = 0
        out.mux(s.encode(f))
        out.mux(s.encode(None))
    mask = np.zeros(astronaut.shape[:2], bool)
    mask[:, 400:] = True
    res = evaluate_video(talking_clip, image=astronaut, audio=wav, identity=False,
                         outside_mask=mask, max_frames=20)
    assert res["n_frames"] == 20
    assert res["pause_frames"] == 20
    assert math.isnan(res["lipsync_loudness_r"])
    assert "identity_mean" not in res
    # Lossy H.264 frames differ a little from the photo outside the person.
    assert 0 < res["background_max_abs"] < 60
    assert 0.0 < res["background_share_max"] <= 1.0


def test_evaluate_video_errors(tmp_path, talking_clip, astronaut):
    with pytest.raises(VideoError):
        evaluate_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoError):
        evaluate_video(junk)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageError):
        evaluate_video(talking_clip, image=bad, identity=False)
    with pytest.raises(InvalidOption):
        evaluate_video(talking_clip, image=astronaut, identity=False,
                       outside_mask=np.ones((10, 10), bool))
