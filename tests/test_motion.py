"""Tests of the motion stage: lip-sync, idle life, smoothing, mixing and motion files."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from echomimic.errors import InvalidOption, MotionError
from echomimic.motion import (
    LIP_CHANNELS,
    gaussian_smooth,
    idle_track,
    lipsync_track,
    load_motion,
    mix_tracks,
    motion_from_dict,
    motion_to_dict,
    one_euro,
    quantize,
    save_motion,
)
from echomimic.types import (
    ALL_CHANNELS,
    ARTICULATION_KEYS,
    HEAD_CHANNELS,
    MOTION_SCHEMA_ID,
    MotionTrack,
    Speech,
)

HOP = 0.01
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# Synthetic speech
# ------------------------------------------------------------------------------------------------


def make_speech(duration: float, segments: list[tuple[float, float, dict[str, float]]]) -> Speech:
    """Speech with activity 1 inside each (start, end, targets) segment and silence elsewhere.

    Outside speech, ``open`` = 0 and ``close`` = 1 (the speech stage's convention)."""
    n = int(round(duration / HOP))
    t = (np.arange(n) + 0.5) * HOP
    act = np.zeros(n)
    loud = np.zeros(n)
    pitch = np.zeros(n)
    art = {k: np.zeros(n) for k in ARTICULATION_KEYS}
    art["close"][:] = 1.0
    for start, end, targets in segments:
        m = (t >= start) & (t < end)
        act[m] = 1.0
        loud[m] = 0.6
        pitch[m] = 140.0
        art["close"][m] = 0.0
        for key, value in targets.items():
            art[key][m] = value
    return Speech(duration=duration, hop=HOP, activity=act.astype(np.float32),
                  loudness=loud.astype(np.float32), pitch=pitch.astype(np.float32),
                  articulation={k: v.astype(np.float32) for k, v in art.items()}, method="test")


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """Centre time of each frame window."""
    return (np.arange(n_frames) + 0.5) / fps


def peak_seconds(column: np.ndarray, fps: float) -> float:
    """Time of the maximum of a sampled curve, refined by a parabola through three frames."""
    i = int(np.argmax(column))
    a, b, c = (float(v) for v in column[i - 1:i + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c != 0 else 0.0
    return (i + 0.5 + offset) / fps


def count_blinks(column: np.ndarray) -> int:
    closed = column >= 0.5
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


# ------------------------------------------------------------------------------------------------
# Lip-sync
# ------------------------------------------------------------------------------------------------


def test_lipsync_silence_is_closed_mouth():
    speech = make_speech(2.0, [])
    track = lipsync_track(speech, 50, 25)
    assert track.n_frames == 50
    assert np.all(track["jawOpen"] == 0.0)
    assert np.all(track["mouthClose"] == 1.0)
    for channel in track.channels:
        if channel not in ("mouthClose",):
            assert np.all(track[channel] == 0.0), channel


@pytest.mark.parametrize("fps", [25, 30, 60])
def test_lipsync_mouth_leads_the_sound(fps):
    n = 300
    t = (np.arange(n) + 0.5) * HOP
    speech = make_speech(3.0, [(1.1, 1.9, {})])
    speech.articulation["open"][:] = np.exp(-0.5 * ((t - 1.5) / 0.06) ** 2) * speech.activity
    jaw = lipsync_track(speech, int(3 * fps), fps)["jawOpen"]
    peak_time = peak_seconds(jaw, fps)
    assert 1.5 - 0.07 <= peak_time <= 1.5 - 0.02, peak_time
    # Without lead the same pulse peaks about 40 ms later, close to the sound.
    no_lead = peak_seconds(lipsync_track(speech, int(3 * fps), fps, lead=0.0)["jawOpen"], fps)
    assert no_lead - peak_time >= 0.025
    assert abs(no_lead - 1.5) < 0.02
    assert 0.3 < jaw.max() <= 0.75


def test_lipsync_vowel_peak_natural_range_and_closes_after_speech():
    speech = make_speech(3.0, [(0.5, 1.5, {"open": 1.0})])
    fps = 100
    track = lipsync_track(speech, 300, fps)
    jaw, close = track["jawOpen"], track["mouthClose"]
    assert 0.5 <= jaw.max() <= 0.75
    t = frame_times(300, fps)
    after = t >= 1.5 + 0.08
    assert np.all(jaw[after] <= 1e-6)
    assert np.all(close[after] >= 1 - 1e-6)
    # Long pause: exactly at rest.
    assert np.all(jaw[t > 1.7] == 0.0)
    # Jaw motion is smooth (coarticulation): no jump above 0.3 between 10 ms frames.
    assert np.abs(np.diff(jaw)).max() < 0.3


@pytest.mark.parametrize("fps", [25, 30])
def test_lipsync_bilabial_closure_between_vowels(fps):
    # "a m a": 70 ms closure between two open vowels.
    speech = make_speech(2.0, [(0.5, 0.8, {"open": 1.0}), (0.8, 0.87, {"close": 1.0}),
                               (0.87, 1.2, {"open": 1.0})])
    track = lipsync_track(speech, int(2 * fps), fps)
    jaw = track["jawOpen"]
    t = frame_times(track.n_frames, fps)
    window = (t > 0.7) & (t < 0.9)
    assert jaw[window].min() <= 0.02                 # closure reached, not smoothed away
    assert track["mouthClose"][window].max() >= 0.99
    assert track["mouthPressLeft"][window].max() > 0.3
    assert jaw[(t > 0.55) & (t < 0.75)].max() > 0.4  # open before the closure ...
    assert jaw[(t > 0.95) & (t < 1.15)].max() > 0.4  # ... and after it


def test_lipsync_rounding_and_spreading():
    rounded = lipsync_track(make_speech(2.0, [(0.5, 1.5, {"open": 0.4, "round": 1.0})]), 50, 25)
    spread = lipsync_track(make_speech(2.0, [(0.5, 1.5, {"open": 0.4, "spread": 1.0})]), 50, 25)
    mid = slice(20, 30)
    r_stretch = rounded["mouthStretchLeft"][mid].max()
    assert rounded["mouthFunnel"][mid].mean() > r_stretch + 0.1
    assert rounded["mouthPucker"][mid].mean() > r_stretch + 0.1
    assert spread["mouthStretchLeft"][mid].mean() > spread["mouthPucker"][mid].max() + 0.1
    assert spread["mouthSmileLeft"][mid].mean() > 0
    np.testing.assert_array_equal(spread["mouthStretchLeft"], spread["mouthStretchRight"])


def test_lipsync_labiodental_tucks_lower_lip():
    track = lipsync_track(make_speech(2.0, [(0.5, 1.5, {"open": 0.3, "labiodental": 1.0})]), 50, 25)
    mid = slice(20, 30)
    assert track["mouthRollLower"][mid].mean() > 0.3
    assert track["mouthUpperUpLeft"][mid].mean() > 0.1
    assert track["jawOpen"][mid].max() < 0.1


def test_lipsync_expression_scale():
    speech = make_speech(2.0, [(0.5, 1.5, {"open": 1.0, "round": 0.5})])
    still = lipsync_track(speech, 50, 25, expression_scale=0.0)
    for channel in still.channels:
        assert np.ptp(still[channel]) == 0.0, channel
    assert np.all(still["jawOpen"] == 0.0)
    full = lipsync_track(speech, 50, 25)
    half = lipsync_track(speech, 50, 25, expression_scale=0.5)
    np.testing.assert_allclose(half["jawOpen"], 0.5 * full["jawOpen"], atol=1e-6)
    big = lipsync_track(speech, 50, 25, expression_scale=5.0)
    assert big.values.max() <= 1.0 and big.values.min() >= 0.0
    with pytest.raises(InvalidOption):
        lipsync_track(speech, 50, 25, expression_scale=-1.0)


def test_lipsync_frames_average_their_window():
    # Fast syllables (8 per second): each 40 ms frame is the mean of its four 10 ms windows,
    # not a point sample.
    n = 200
    t = (np.arange(n) + 0.5) * HOP
    speech = make_speech(2.0, [(0.3, 1.7, {})])
    speech.articulation["open"][:] = speech.activity * (0.5 + 0.5 * np.sin(2 * np.pi * 8 * t))
    coarse = lipsync_track(speech, 50, 25).values
    fine = lipsync_track(speech, 200, 100).values
    np.testing.assert_allclose(coarse, fine.reshape(50, 4, -1).mean(axis=1), atol=1e-6)


def test_lipsync_deterministic_and_pads_past_speech():
    speech = make_speech(1.0, [(0.2, 0.8, {"open": 0.8})])
    a = lipsync_track(speech, 60, 25)   # 2.4 s of video for 1 s of speech
    b = lipsync_track(speech, 60, 25)
    np.testing.assert_array_equal(a.values, b.values)
    assert np.all(a["jawOpen"][30:] == 0.0)
    assert a.values.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# Idle life
# ------------------------------------------------------------------------------------------------


def test_idle_blinks_natural_rate_and_full_closure():
    fps = 25
    counts = []
    for seed in range(5):
        track = idle_track(60 * fps, fps, seed=seed)
        blink = track["eyeBlinkLeft"]
        np.testing.assert_array_equal(blink, track["eyeBlinkRight"])
        counts.append(count_blinks(blink))
        # Every blink reaches full closure on some frame.
        closed = blink >= 0.5
        starts = np.flatnonzero(np.diff(np.concatenate([[0], closed.astype(int)])) == 1)
        ends = np.flatnonzero(np.diff(np.concatenate([closed.astype(int), [0]])) == -1)
        for s, e in zip(starts, ends):
            assert blink[s:e + 1].max() == 1.0
        # A blink is brief: closed (>= 0.5) for at most ~0.25 s.
        assert max(e - s + 1 for s, e in zip(starts, ends)) <= 0.25 * fps
    assert all(8 <= c <= 30 for c in counts), counts
    assert 13 <= np.mean(counts) <= 22, counts


def test_idle_blink_rate_option():
    fps = 25
    assert count_blinks(idle_track(60 * fps, fps, seed=3, blink_rate=0)["eyeBlinkLeft"]) == 0
    assert np.all(idle_track(60 * fps, fps, seed=3, blink_rate=0)["eyeBlinkLeft"] == 0)
    counts = [count_blinks(idle_track(60 * fps, fps, seed=s, blink_rate=30)["eyeBlinkLeft"])
              for s in range(4)]
    assert 24 <= np.mean(counts) <= 36, counts
    with pytest.raises(InvalidOption):
        idle_track(100, fps, blink_rate=-1)


def test_idle_head_bounded_and_smooth():
    fps = 25
    track = idle_track(60 * fps, fps, seed=1)
    for channel, limit, step in (("yaw", 5.0, 0.5), ("pitch", 5.0, 0.5), ("roll", 5.0, 0.5),
                                 ("tx", 0.02, 0.003), ("ty", 0.02, 0.003)):
        col = track[channel]
        assert np.abs(col).max() <= limit, channel
        assert np.abs(np.diff(col)).max() <= step, channel
        assert np.std(col) > 0.0, channel          # it does move
    assert np.all(np.abs(track["scale"] - 1.0) <= 0.02)
    assert np.all(np.abs(track["breath"]) <= 1.0)
    assert np.ptp(track["breath"]) > 1.0


def test_idle_breathing_rate():
    fps = 25
    breath = idle_track(120 * fps, fps, seed=2)["breath"]
    crossings = np.sum((breath[1:] >= 0) & (breath[:-1] < 0))
    assert 0.15 * 120 <= crossings <= 0.35 * 120, crossings


def test_idle_head_motion_scale_zero_freezes_head():
    fps = 25
    track = idle_track(30 * fps, fps, seed=4, head_motion_scale=0.0)
    for channel in HEAD_CHANNELS:
        assert np.ptp(track[channel]) == 0.0, channel
    assert np.all(track["scale"] == 1.0)
    # The eyes still blink.
    assert count_blinks(track["eyeBlinkLeft"]) > 0


def test_idle_seeded_determinism():
    a = idle_track(500, 25, seed=7)
    b = idle_track(500, 25, seed=7)
    c = idle_track(500, 25, seed=8)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a["yaw"], c["yaw"])
    # Changing the blink rate leaves the head motion unchanged (independent streams).
    d = idle_track(500, 25, seed=7, blink_rate=40)
    np.testing.assert_array_equal(a["yaw"], d["yaw"])


def _speaking(duration: float = 40.0) -> Speech:
    segments = []
    t = 0.5
    rng = np.random.default_rng(5)
    while t < duration - 4:
        length = float(rng.uniform(1.5, 3.5))
        segments.append((t, t + length, {"open": 0.5}))
        t += length + float(rng.uniform(0.5, 1.0))
    speech = make_speech(duration, segments)
    times = speech.times()
    # Stressed syllables every ~0.8 s, and a pitch rise at the same place.
    accent = np.maximum(0.0, np.sin(2 * np.pi * 1.25 * times)) ** 6
    speech.loudness[:] = speech.activity * (0.45 + 0.4 * accent)
    speech.pitch[:] = speech.activity * 140.0 * (1 + 0.3 * accent)
    return speech


def test_idle_speech_prosody_nods_brows_and_energy():
    fps = 25
    speech = _speaking()
    n = int(speech.duration * fps)
    talking = idle_track(n, fps, seed=0, speech=speech)
    quiet = idle_track(n, fps, seed=0)
    assert talking["browInnerUp"].max() > 0.1
    assert quiet["browInnerUp"].max() == 0.0
    # Nods add downward pitch while speaking.
    act = np.interp(frame_times(n, fps), speech.times(), speech.activity) > 0.5
    assert (talking["pitch"] - quiet["pitch"])[act].mean() > 0.2
    # More head energy while speaking than the same seed in silence.
    assert np.abs(np.diff(talking["yaw"]))[act[1:]].mean() > np.abs(np.diff(quiet["yaw"]))[act[1:]].mean()
    assert np.abs(np.diff(talking["pitch"])).max() <= 1.0
    brows_off = idle_track(n, fps, seed=0, speech=speech, expression_scale=0.0)
    assert brows_off["browInnerUp"].max() == 0.0


def test_idle_blinks_gather_at_phrase_ends():
    fps = 25
    speech = _speaking(60.0)
    quiet = speech.activity < 0.5
    ends = speech.times()[1:][quiet[1:] & ~quiet[:-1]]
    near_with, near_without = [], []
    for seed in range(4):
        for target, sp in ((near_with, speech), (near_without, None)):
            blink = idle_track(60 * fps, fps, seed=seed, speech=sp)["eyeBlinkLeft"]
            closed = blink >= 0.5
            onsets = np.flatnonzero(closed[1:] & ~closed[:-1]) / fps
            target.extend(float(np.min(np.abs(ends - o))) < 0.5 for o in onsets)
    assert np.mean(near_with) > np.mean(near_without) + 0.15


# ------------------------------------------------------------------------------------------------
# Smoothing
# ------------------------------------------------------------------------------------------------


def test_one_euro_smooths_jitter_and_follows_motion():
    fps = 30
    t = np.arange(300) / fps
    rng = np.random.default_rng(0)
    clean = np.stack([np.sin(2 * np.pi * 0.3 * t), np.where(t > 5, 1.0, 0.0)], axis=1)
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    out = one_euro(noisy, fps, min_cutoff=1.0, beta=0.0)
    assert out.shape == noisy.shape
    jitter = lambda x: np.std(np.diff(x[:, 0] - clean[:, 0]))  # noqa: E731
    assert jitter(out) < 0.5 * jitter(noisy)
    # A larger beta follows the step faster (less lag).
    slow = one_euro(noisy[:, 1], fps, min_cutoff=0.5, beta=0.0)
    fast = one_euro(noisy[:, 1], fps, min_cutoff=0.5, beta=5.0)
    k = 150 + 3
    assert fast[k] > slow[k] + 0.1
    # Columns are filtered independently: same result as one at a time.
    np.testing.assert_allclose(one_euro(noisy, fps, beta=2.0)[:, 0], one_euro(noisy[:, 0], fps, beta=2.0))
    with pytest.raises(InvalidOption):
        one_euro(noisy, 0)


def test_gaussian_smooth():
    x = np.zeros(101)
    x[50] = 1.0
    y = gaussian_smooth(x, 5.0)
    assert abs(y.sum() - 1.0) < 1e-9 and int(np.argmax(y)) == 50 and y.max() < 0.1
    np.testing.assert_allclose(gaussian_smooth(x, 0.05, fps=100), y)
    np.testing.assert_array_equal(gaussian_smooth(x, 0), x)


# ------------------------------------------------------------------------------------------------
# Mixing
# ------------------------------------------------------------------------------------------------


def _constant_track(n: int, fps: float, values: dict[str, float]) -> MotionTrack:
    track = MotionTrack.neutral(n, fps, list(values))
    for name, value in values.items():
        track.set(name, np.full(n, value))
    return track


def test_mix_precedence_lips_from_speech_head_from_base():
    n, fps = 40, 25
    speech = _constant_track(n, fps, {"jawOpen": 0.6, "mouthFunnel": 0.3})
    base = _constant_track(n, fps, {"yaw": 5.0, "jawOpen": 0.1, "mouthSmileLeft": 0.4,
                                    "eyeBlinkLeft": 0.2})
    out = mix_tracks(speech=speech, base=base, n_frames=n, fps=fps)
    assert out.channels == list(ALL_CHANNELS)
    np.testing.assert_allclose(out["jawOpen"], 0.6, atol=1e-6)
    np.testing.assert_allclose(out["mouthFunnel"], 0.3, atol=1e-6)
    np.testing.assert_allclose(out["mouthSmileLeft"], 0.0)    # lips belong to speech
    np.testing.assert_allclose(out["yaw"], 5.0)
    np.testing.assert_allclose(out["eyeBlinkLeft"], 0.2, atol=1e-6)
    np.testing.assert_allclose(out["scale"], 1.0)
    # Without speech the base supplies the lips.
    alone = mix_tracks(speech=None, base=base, n_frames=n, fps=fps)
    np.testing.assert_allclose(alone["jawOpen"], 0.1, atol=1e-6)
    assert "jawOpen" in LIP_CHANNELS and "tongueOut" in LIP_CHANNELS and "yaw" not in LIP_CHANNELS


def test_mix_overlays_scales_and_clamps():
    n, fps = 20, 25
    base = _constant_track(n, fps, {"yaw": 20.0, "browInnerUp": 0.5, "scale": 1.05})
    overlay = _constant_track(n, fps, {"yaw": 10.0, "browInnerUp": 0.3, "mouthSmileLeft": 0.4,
                                       "scale": 1.2})
    out = mix_tracks(speech=None, base=base, overlays=[overlay], n_frames=n, fps=fps)
    np.testing.assert_allclose(out["yaw"], 25.0)          # 30 clamped to the limit
    np.testing.assert_allclose(out["browInnerUp"], 0.8, atol=1e-6)
    np.testing.assert_allclose(out["scale"], 1.15, atol=1e-6)
    scaled = mix_tracks(speech=None, base=base, overlays=[overlay], n_frames=n, fps=fps,
                        scales={"browInnerUp": 0.5, "mouth*": 0.0})
    np.testing.assert_allclose(scaled["browInnerUp"], 0.4, atol=1e-6)
    np.testing.assert_allclose(scaled["mouthSmileLeft"], 0.0)
    with pytest.raises(InvalidOption):
        mix_tracks(speech=None, base=base, n_frames=n, fps=fps, scales={"notAChannel": 1.0})
    with pytest.raises(InvalidOption):
        mix_tracks(speech=None, base=base, n_frames=n, fps=fps, scales={"yaw": -1.0})


def test_mix_resamples_other_rates_and_lengths():
    src = MotionTrack.neutral(11, 10.0, ["yaw"])
    src.set("yaw", np.arange(11, dtype=np.float32))          # yaw = 10 * t (degrees)
    out = mix_tracks(speech=None, base=src, n_frames=60, fps=20.0)
    t = np.arange(60) / 20.0
    np.testing.assert_allclose(out["yaw"], np.minimum(10 * t, 10.0), atol=1e-5)
    # Same rate: exact copy (a motion file alone reproduces its frames).
    idle = idle_track(50, 25, seed=2)
    copy = mix_tracks(speech=None, base=idle, n_frames=50, fps=25)
    for channel in idle.channels:
        np.testing.assert_array_equal(copy[channel], idle[channel])


def test_mix_rejects_bad_tracks():
    bad = MotionTrack(25, ["yaw"], np.array([[np.nan]], np.float32))
    with pytest.raises(MotionError):
        mix_tracks(speech=None, base=bad, n_frames=1, fps=25)
    unknown = MotionTrack(25, ["wink"], np.zeros((1, 1), np.float32))
    with pytest.raises(MotionError):
        mix_tracks(speech=unknown, base=None, n_frames=1, fps=25)


# ------------------------------------------------------------------------------------------------
# Motion files
# ------------------------------------------------------------------------------------------------


def _mixed_track(n: int = 100) -> MotionTrack:
    speech = make_speech(n / 25, [(0.5, 2.5, {"open": 0.7, "round": 0.3})])
    lips = lipsync_track(speech, n, 25)
    life = idle_track(n, 25, seed=3, speech=speech)
    return mix_tracks(speech=lips, base=life, n_frames=n, fps=25)


def test_io_round_trip_exact_and_byte_identical(tmp_path):
    track = _mixed_track()
    track.meta["note"] = "round trip"
    first = save_motion(track, tmp_path / "a.json")
    loaded = load_motion(first)
    assert loaded.channels == track.channels and loaded.fps == track.fps
    assert loaded.meta["note"] == "round trip"
    np.testing.assert_array_equal(loaded.values, quantize(track).values)
    np.testing.assert_allclose(loaded.values, track.values, atol=1e-6)
    second = save_motion(loaded, tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    np.testing.assert_array_equal(quantize(loaded).values, loaded.values)
    doc = json.loads(first.read_text())
    assert doc["schema"] == MOTION_SCHEMA_ID and len(doc["frames"]) == track.n_frames


def test_io_round_trip_wide_values():
    rng = np.random.default_rng(1)
    channels = ["yaw", "pitch", "tx", "jawOpen"]
    values = rng.normal(0, 1, (500, 4)) * np.array([30.0, 1000.0, 0.001, 1.0])
    track = MotionTrack(30.0, channels, values)
    doc = motion_to_dict(track)
    again = motion_to_dict(motion_from_dict(json.loads(json.dumps(doc))))
    assert json.dumps(doc) == json.dumps(again)
    np.testing.assert_array_equal(motion_from_dict(doc).values, quantize(track).values)


def _valid_doc() -> dict:
    return {"schema": MOTION_SCHEMA_ID, "fps": 25, "channels": ["yaw", "jawOpen"],
            "frames": [[0.5, 0.1], [0.6, 0.2]], "meta": {}}


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(schema="echomimic.motion/9"), "unsupported motion schema"),
    (lambda d: d.update(channels=["yaw", "smirk"]), "unknown channel"),
    (lambda d: d.update(channels=["yaw", "yaw"]), "channels"),
    (lambda d: d.update(frames=[[0.5, 0.1], [0.6]]), "frame 1 has 1 values"),
    (lambda d: d.update(frames=[[0.5, 0.1], [0.6, "x"]]), "numbers"),
    (lambda d: d.update(frames=[[0.5, 0.1], [0.6, True]]), "numbers"),
    (lambda d: d.update(frames=[]), "frames"),
    (lambda d: d.update(fps=0), "fps"),
    (lambda d: d.update(fps=-25), "fps"),
    (lambda d: d.pop("fps"), "fps"),
    (lambda d: d.update(extra=1), "unexpected field"),
    (lambda d: d.update(frames=[[0.0, 0.0]] * 216001), "too many frames"),
])
def test_io_invalid_documents_raise_motion_error(mutate, fragment):
    doc = _valid_doc()
    motion_from_dict(doc)          # the unmodified document is valid
    mutate(doc)
    with pytest.raises(MotionError) as info:
        motion_from_dict(doc)
    assert fragment in str(info.value)
    assert info.value.code == "motion_invalid"


def test_io_invalid_files(tmp_path):
    nan_file = tmp_path / "nan.json"
    nan_file.write_text('{"schema": "echomimic.motion/1", "fps": 25, "channels": ["yaw"], '
                        '"frames": [[NaN]]}')
    with pytest.raises(MotionError, match="NaN"):
        load_motion(nan_file)
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": ')
    with pytest.raises(MotionError, match="not valid JSON"):
        load_motion(broken)
    with pytest.raises(MotionError, match="not found"):
        load_motion(tmp_path / "missing.json")
    with pytest.raises(MotionError, match="JSON object"):
        motion_from_dict([1, 2])
    with pytest.raises(MotionError):
        save_motion(MotionTrack(25, ["yaw"], np.array([[np.inf]])), tmp_path / "inf.json")


def test_schema_files_identical():
    packaged = resources.files("echomimic").joinpath("schemas", "motion.schema.json").read_bytes()
    docs = (REPO / "docs" / "motion.schema.json").read_bytes()
    assert packaged == docs
    schema = json.loads(packaged)
    assert schema["properties"]["schema"]["const"] == MOTION_SCHEMA_ID
    assert schema["properties"]["channels"]["items"]["enum"] == list(ALL_CHANNELS)
