"""End-to-end acceptance tests of :func:`echomimic.pipeline.animate`.

Clips are made from the astronaut photo and speech synthesized with espeak-ng (with 0.6 s pauses
between phrases), then measured like a user would see them: the mp4 is decoded and the face mesh
(:mod:`echomimic.quality`) measures the mouth, the eyes and the head on every frame. The frames
before encoding are rendered again through the same stages the pipeline uses, for the checks that
must be exact (the background outside the renderer's ``dilated_mask``, replaying a motion file).

Acceptance thresholds (not to be loosened):

* lip-sync: Pearson r between the inner-lip gap (over eye-corner distance) and the loudness
  envelope >= 0.5 at the best lag within +-2 frames;
* during speech the 95th percentile of the gap is in [0.12, 0.45];
* >= 95 % of frames inside pauses longer than 300 ms have a gap <= 0.02;
* identity: dlib descriptor distance between the photo and output frames <= 0.4;
* outside the dilated mask, every frame before encoding equals the photo bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
from scipy import ndimage

from echomimic.errors import (
    AudioError,
    AudioTooLong,
    Cancelled,
    EchomimicError,
    ImageError,
    ImageTooLarge,
    InvalidOption,
    NoFaceFound,
)
from echomimic.pipeline import AnimateOptions, AnimateResult, animate, drive, load_portrait, load_speech
from echomimic.quality import FaceMeasurer, FaceTracks, iter_video_frames, metrics

# ------------------------------------------------------------------------------------------------
# acceptance thresholds
# ------------------------------------------------------------------------------------------------

MIN_LIPSYNC_R = 0.5
MAX_LAG_FRAMES = 2
OPEN_P95_RANGE = (0.12, 0.45)
CLOSED_GAP = 0.02
MIN_PAUSE_CLOSURE = 0.95
MAX_IDENTITY_DISTANCE = 0.4
BLINK_DIP = 0.4            # a blink: eye openness under this share of its median
IDENTITY_SAMPLES = 8       # decoded frames compared with the photo

FACE_CLIP = {"crop": "face", "size": 512}
SR = 16000


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def probe(path: Path) -> dict:
    """Codecs, pixel format, size and stream durations of an mp4, and its decoded frame count."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "video_codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "fps": float(v.average_rate),
            "video_duration": float(v.duration * v.time_base) if v.duration else float("nan"),
            "audio_codec": c.streams.audio[0].codec_context.name if c.streams.audio else None,
        }
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio_duration"] = float(a.duration * a.time_base) if a.duration else float("nan")
        info["n_frames"] = sum(1 for _ in c.decode(video=0))
    return info


def measure_video(path: Path, *, keep_every: int = 0) -> tuple[FaceTracks, list[np.ndarray]]:
    """Face tracks of every decoded frame, and every ``keep_every``-th frame (for identity)."""
    kept: list[np.ndarray] = []

    def frames():
        for i, f in enumerate(iter_video_frames(path)):
            if keep_every and i % keep_every == 0:
                kept.append(f)
            yield f

    with FaceMeasurer() as m:
        tracks = m.measure_frames(frames())
    return tracks, kept


def load_samples(path: Path) -> np.ndarray:
    from echomimic.media import load_audio

    return load_audio(path, sample_rate=SR).samples


def eye_openness(tracks: FaceTracks) -> np.ndarray:
    return 0.5 * (tracks.eye_open_left + tracks.eye_open_right)


def count_dips(openness: np.ndarray, ratio: float = BLINK_DIP) -> tuple[int, float]:
    """Number of separate runs of frames under ``ratio`` x the median openness, and min/median."""
    med = float(np.nanmedian(openness))
    low = np.nan_to_num(openness, nan=med) < ratio * med
    _, n = ndimage.label(low)
    return int(n), float(np.nanmin(openness) / med)


def render_track(renderer, track):
    """Frames of ``track`` rendered one by one (a generator: nothing is held)."""
    for i in range(track.n_frames):
        yield renderer.render(track.frame(i))


def staged(image: Path, audio: Path | None, **options):
    """The pipeline's own stages up to the motion track: (portrait, speech, track)."""
    opts = AnimateOptions.from_kwargs(**options)
    portrait = load_portrait(image, opts)
    speech, _ = load_speech(audio=audio, opts=opts)
    n = max(1, int(round(speech.duration * opts.fps)))
    return portrait, speech, drive(speech=speech, motion=None, n_frames=n, opts=opts)


# ------------------------------------------------------------------------------------------------
# talking clips (one per language, shared by the tests below)
# ------------------------------------------------------------------------------------------------


@dataclass
class Talk:
    lang: str
    result: AnimateResult
    motion_path: Path
    audio_duration: float
    staged_motion: object                 # the track drive() gives for the same inputs
    renderer: object
    photo: np.ndarray                     # the portrait frame the renderer draws on
    outside_share: float                  # share of the frame outside the dilated mask
    bg_max_abs: int                       # largest difference outside the mask, all frames
    bg_frames_changed: int
    tracks: FaceTracks                    # measured on the decoded mp4
    id_frames: list = field(default_factory=list)
    envelope: np.ndarray | None = None
    pauses: np.ndarray | None = None      # frames inside pauses > 300 ms (edges excluded)
    speaking: np.ndarray | None = None


def _make_talk(folder: Path, photo_png: Path, clip) -> Talk:
    out = folder / f"talk_{clip.lang}.mp4"
    motion_path = folder / f"talk_{clip.lang}.motion.json"
    result = animate(photo_png, out, audio=clip.path, motion_out=motion_path, **FACE_CLIP)

    # The frames before encoding, through the same stages.
    from echomimic.render.warp.renderer import WarpRenderer

    portrait, _, track = staged(photo_png, clip.path, **FACE_CLIP)
    renderer = WarpRenderer(portrait)
    outside = ~renderer.dilated_mask
    photo = portrait.image
    bg_max, bg_changed = 0, 0
    for frame in render_track(renderer, track):
        d = metrics.background_diff(frame, photo, outside)
        bg_max = max(bg_max, d["max_abs"])
        bg_changed += int(d["n_diff"] > 0)

    every = max(1, result.n_frames // IDENTITY_SAMPLES)
    tracks, kept = measure_video(out, keep_every=every)
    samples = load_samples(clip.path)
    fps, n = result.fps, tracks.n_frames
    return Talk(
        lang=clip.lang, result=result, motion_path=motion_path, audio_duration=clip.duration,
        staged_motion=track, renderer=renderer, photo=photo,
        outside_share=float(outside.mean()), bg_max_abs=bg_max, bg_frames_changed=bg_changed,
        tracks=tracks, id_frames=kept,
        envelope=metrics.loudness_envelope(samples, SR, fps, n),
        pauses=metrics.speech_pauses(samples, SR, fps, n, min_pause=0.3),
        speaking=~metrics.speech_pauses(samples, SR, fps, n, min_pause=0.3, margin=0),
    )


@pytest.fixture(scope="module")
def talks(tmp_path_factory, astronaut_png, speech_en, speech_zh):
    """``talks(lang) -> Talk``, made once per module and language."""
    made: dict[str, Talk] = {}
    clips = {"en": speech_en, "zh": speech_zh}

    def get(lang: str) -> Talk:
        if lang not in made:
            made[lang] = _make_talk(tmp_path_factory.mktemp(f"talk_{lang}"), astronaut_png,
                                    clips[lang])
        return made[lang]

    return get


LANGS = pytest.mark.parametrize("lang", ["en", "zh"])


# ------------------------------------------------------------------------------------------------
# 1. lip-sync acceptance
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@LANGS
def test_pipeline_stages_reproduce_animate(talks, lang):
    """The frames checked before encoding are those of the clip: same motion, same frames."""
    talk = talks(lang)
    got, want = talk.result.motion, talk.staged_motion
    assert got.n_frames == want.n_frames
    for name in set(got.channels) | set(want.channels):
        np.testing.assert_array_equal(got.get(name), want.get(name), err_msg=name)
    assert talk.tracks.face_found_share == 1.0


@pytest.mark.slow
@LANGS
def test_lipsync_follows_loudness(talks, lang, measured):
    talk = talks(lang)
    r, lag = metrics.best_lag_correlation(talk.tracks.lip_gap, talk.envelope, MAX_LAG_FRAMES)
    measured(f"[{lang}] speech method", f"{talk.result.speech_method} ({talk.result.lang})")
    measured(f"[{lang}] lip gap / loudness r", r)
    measured(f"[{lang}] best lag (frames)", lag)
    assert r >= MIN_LIPSYNC_R, f"r = {r:.3f} at lag {lag} (need >= {MIN_LIPSYNC_R})"


@pytest.mark.slow
@LANGS
def test_mouth_opening_range_during_speech(talks, lang, measured):
    talk = talks(lang)
    p5, p50, p95 = metrics.opening_percentiles(talk.tracks.lip_gap, talk.speaking)
    measured(f"[{lang}] lip gap p5/p50/p95 in speech", f"{p5:.3f}/{p50:.3f}/{p95:.3f}")
    lo, hi = OPEN_P95_RANGE
    assert lo <= p95 <= hi, f"95th percentile of the lip gap in speech = {p95:.3f}"


@pytest.mark.slow
@LANGS
def test_mouth_closes_in_pauses(talks, lang, measured):
    talk = talks(lang)
    pauses = talk.pauses
    # two inserted 0.6 s pauses (15 frames each at 25 fps, less 2 edge frames on each side)
    assert pauses.sum() >= 0.6 * talk.result.fps, (
        f"only {int(pauses.sum())} pause frames found in speech with two 0.6 s pauses")
    closure = metrics.silence_closure(talk.tracks.lip_gap, pauses, CLOSED_GAP)
    gaps = talk.tracks.lip_gap[pauses]
    measured(f"[{lang}] pause frames", int(pauses.sum()))
    measured(f"[{lang}] closure share (gap <= {CLOSED_GAP})", closure)
    measured(f"[{lang}] lip gap in pauses median/max", f"{np.median(gaps):.3f}/{np.max(gaps):.3f}")
    assert closure >= MIN_PAUSE_CLOSURE, (
        f"{closure:.0%} of pause frames closed; gap in pauses median {np.median(gaps):.3f}, "
        f"max {np.max(gaps):.3f}")


@pytest.mark.slow
@LANGS
def test_background_is_bit_exact_before_encoding(talks, lang, measured):
    talk = talks(lang)
    measured(f"[{lang}] share of frame outside dilated mask", talk.outside_share)
    assert talk.outside_share > 0.0
    assert talk.bg_max_abs == 0, (
        f"{talk.bg_frames_changed} frames differ from the photo outside the mask "
        f"(max difference {talk.bg_max_abs})")


# ------------------------------------------------------------------------------------------------
# 2. identity
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@LANGS
def test_identity_is_kept(talks, lang, astronaut_rgb, measured):
    from echomimic.quality import IdentityModel

    talk = talks(lang)
    d = IdentityModel().distances(np.asarray(astronaut_rgb), talk.id_frames)
    assert len(d) >= IDENTITY_SAMPLES and np.isfinite(d).all(), f"faces missing: {d}"
    measured(f"[{lang}] identity distance mean/max ({len(d)} frames)",
             f"{d.mean():.3f}/{d.max():.3f}")
    assert d.max() <= MAX_IDENTITY_DISTANCE, f"identity distances {np.round(d, 3)}"


# ------------------------------------------------------------------------------------------------
# 3. output format
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@LANGS
def test_output_streams_and_duration(talks, lang, measured):
    talk = talks(lang)
    res = talk.result
    info = probe(res.output)
    frame = 1.0 / res.fps
    measured(f"[{lang}] audio / video / aac durations",
             f"{talk.audio_duration:.3f}/{info['video_duration']:.3f}/{info['audio_duration']:.3f}")
    assert res.output.is_file()
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", "aac")
    assert (info["width"], info["height"]) == (res.width, res.height) == (512, 512)
    assert info["fps"] == pytest.approx(25.0)
    assert info["n_frames"] == res.n_frames == round(talk.audio_duration * res.fps)
    assert abs(res.duration - talk.audio_duration) <= frame
    assert abs(info["video_duration"] - talk.audio_duration) <= frame
    assert abs(info["audio_duration"] - talk.audio_duration) <= frame


@pytest.mark.slow
def test_fps_30_and_crop_none_keeps_the_photo_size(tmp_path, astronaut_rgb, short_speech):
    from PIL import Image

    photo = tmp_path / "odd.png"
    h, w = 455, 501                         # odd on both sides
    Image.fromarray(np.asarray(astronaut_rgb)[:h, 5:5 + w]).save(photo)
    out = tmp_path / "out.mp4"
    res = animate(photo, out, audio=short_speech.path, fps=30, crop="none")
    info = probe(out)
    assert info["fps"] == pytest.approx(30.0)
    assert info["n_frames"] == res.n_frames == round(short_speech.duration * 30)
    assert abs(res.duration - short_speech.duration) <= 1 / 30
    for got, want in ((info["width"], w), (info["height"], h)):
        assert got % 2 == 0 and abs(got - want) <= 1, (info["width"], info["height"])
    assert (res.width, res.height) == (info["width"], info["height"])


@pytest.mark.slow
def test_max_side_downscales(tmp_path, astronaut_png, short_speech):
    out = tmp_path / "small.mp4"
    res = animate(astronaut_png, out, audio=short_speech.path, crop="none", max_side=256)
    info = probe(out)
    assert (info["width"], info["height"]) == (res.width, res.height) == (256, 256)


# ------------------------------------------------------------------------------------------------
# 4. motion files and seeds
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_motion_file_replays_the_same_frames(talks, tmp_path, astronaut_png, measured):
    from echomimic.motion import load_motion

    talk = talks("en")
    assert talk.motion_path.is_file() and talk.motion_path.stat().st_size > 0
    loaded = load_motion(talk.motion_path)
    out2 = tmp_path / "replay.mp4"
    res2 = animate(astronaut_png, out2, motion=talk.motion_path, **FACE_CLIP)
    assert res2.n_frames == talk.result.n_frames == loaded.n_frames
    for name in set(talk.result.motion.channels) | set(loaded.channels):
        np.testing.assert_array_equal(loaded.get(name), talk.result.motion.get(name), err_msg=name)
        np.testing.assert_array_equal(res2.motion.get(name), talk.result.motion.get(name),
                                      err_msg=name)

    # Before encoding: the loaded track renders exactly the in-memory (quantized) track's frames.
    for i, (a, b) in enumerate(zip(render_track(talk.renderer, loaded),
                                   render_track(talk.renderer, talk.result.motion))):
        assert np.array_equal(a, b), f"frame {i} differs"

    # After encoding: both mp4s decode to the same number of frames; report how close they are.
    n, worst = 0, 0.0
    for a, b in zip(iter_video_frames(talk.result.output), iter_video_frames(out2)):
        worst = max(worst, float(np.abs(a.astype(np.int16) - b).mean()))
        n += 1
    assert n == talk.result.n_frames == probe(out2)["n_frames"]
    measured("decoded replay vs original, worst mean |diff| per frame", worst)
    assert worst < 1.0


@pytest.mark.slow
def test_seed_decides_the_idle_motion(astronaut_png, speech_en):
    opts = {**FACE_CLIP}
    _, speech, _ = staged(astronaut_png, speech_en.path, **opts)
    n = int(round(speech.duration * 25))

    def track(seed: int):
        return drive(speech=speech, motion=None, n_frames=n,
                     opts=AnimateOptions.from_kwargs(seed=seed, **opts))

    a, b, c = track(0), track(0), track(1)
    assert a.channels == b.channels
    np.testing.assert_array_equal(a.values, b.values)
    idle = ("yaw", "pitch", "roll", "eyeBlinkLeft", "browInnerUp")
    assert any(not np.array_equal(a.get(k), c.get(k)) for k in idle)
    assert not np.allclose(a.get("yaw"), c.get("yaw"), atol=0.05)
    # the lips come from the speech, not from the seed
    np.testing.assert_array_equal(a.get("jawOpen"), c.get("jawOpen"))


# ------------------------------------------------------------------------------------------------
# 5, 6. silence and a photo with parted lips
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_digital_silence_renders_a_closed_mouth(tmp_path, astronaut_png, make_silence, measured):
    out = tmp_path / "silent.mp4"
    res = animate(astronaut_png, out, audio=make_silence(3.0), **FACE_CLIP)
    assert res.n_frames == 75 and out.is_file()
    tracks, _ = measure_video(out)
    assert tracks.n_frames == 75 and tracks.face_found_share == 1.0
    gap = tracks.lip_gap
    measured("silence: lip gap median/max", f"{np.median(gap):.3f}/{np.max(gap):.3f}")
    measured("silence: share of frames closed", float((gap <= CLOSED_GAP).mean()))
    assert np.all(gap <= CLOSED_GAP), f"{int((gap > CLOSED_GAP).sum())} of 75 frames open"


@pytest.mark.slow
def test_parted_lips_in_the_photo_are_closed_in_silence(astronaut_rgb, astronaut_png,
                                                        make_silence, measured):
    from echomimic.quality import measure_image
    from echomimic.render.warp.renderer import WarpRenderer

    photo_gap = float(measure_image(np.asarray(astronaut_rgb)).lip_gap[0])
    measured("photo lip gap", photo_gap)
    assert photo_gap > 0.08, "the test photo is expected to show parted lips"
    portrait, _, track = staged(astronaut_png, make_silence(3.0), crop="none")
    with FaceMeasurer() as m:
        tracks = m.measure_frames(render_track(WarpRenderer(portrait), track))
    gap = tracks.lip_gap
    measured("parted-lips photo in silence: lip gap median/max",
             f"{np.median(gap):.3f}/{np.max(gap):.3f}")
    assert tracks.face_found_share == 1.0
    assert np.all(gap <= CLOSED_GAP), f"{int((gap > CLOSED_GAP).sum())} of {len(gap)} frames open"


# ------------------------------------------------------------------------------------------------
# 7. blinks
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("rate", [30, 0])
def test_blink_rate(tmp_path, astronaut_png, make_silence, measured, rate):
    out = tmp_path / f"blink{rate}.mp4"
    res = animate(astronaut_png, out, audio=make_silence(6.0), blink_rate=rate, **FACE_CLIP)
    blink = np.maximum(res.motion.get("eyeBlinkLeft"), res.motion.get("eyeBlinkRight"))
    tracks, _ = measure_video(out)
    dips, lowest = count_dips(eye_openness(tracks))
    _, track_blinks = ndimage.label(blink > 0.5)
    measured(f"blink_rate={rate}: blinks in the track", int(track_blinks))
    measured(f"blink_rate={rate}: dips under {BLINK_DIP:.0%} of median", dips)
    measured(f"blink_rate={rate}: min/median eye openness", lowest)
    if rate:
        assert track_blinks >= 2, "the motion track itself has fewer than two blinks"
        assert dips >= 2, (f"{dips} measured blinks (lowest openness {lowest:.0%} of median) "
                           f"for {track_blinks} blinks in the track")
    else:
        assert track_blinks == 0
        assert dips == 0, f"{dips} dips, lowest openness {lowest:.0%} of median"


# ------------------------------------------------------------------------------------------------
# 8. bad input
# ------------------------------------------------------------------------------------------------


def _png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(rgb).save(path)
    return path


def _bad_case(name: str, inputs: Path, astronaut_png: Path, short_speech, make_silence):
    """(image, kwargs, expected error) of one bad-input case."""
    import skimage.data

    speech = {"audio": short_speech.path}
    if name == "no face (coffee)":
        return _png(inputs / "coffee.png", skimage.data.coffee()), speech, NoFaceFound
    if name == "no face (flat)":
        return _png(inputs / "flat.png", np.full((300, 400, 3), 128, np.uint8)), speech, NoFaceFound
    if name == "corrupt image":
        p = inputs / "broken.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(np.random.default_rng(0).integers(
            0, 256, 4000, dtype=np.uint8)))
        return p, speech, ImageError
    if name == "audio too long":
        return astronaut_png, {"audio": make_silence(2.0), "max_duration": 1}, AudioTooLong
    if name == "corrupt audio":
        p = inputs / "broken.wav"
        p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(np.random.default_rng(1).integers(
            0, 256, 3000, dtype=np.uint8)))
        return astronaut_png, {"audio": p}, AudioError
    if name == "face_index out of range":
        return astronaut_png, {**speech, "face_index": 5}, InvalidOption
    if name == "unknown option":
        return astronaut_png, {**speech, "colour": "blue"}, InvalidOption
    raise KeyError(name)


BAD_CASES = ["no face (coffee)", "no face (flat)", "corrupt image", "audio too long",
             "corrupt audio", "face_index out of range", "unknown option"]
#: The exact class each case must raise (not a sibling or a more specific subclass).
NOT_SUBCLASSES = {ImageError: (NoFaceFound, ImageTooLarge), AudioError: (AudioTooLong,)}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_a_typed_error_and_leaves_no_file(tmp_path, astronaut_png,
                                                           short_speech, make_silence, case):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    image, kwargs, error = _bad_case(case, inputs, astronaut_png, short_speech, make_silence)
    out = outputs / "clip.mp4"
    with pytest.raises(error) as info:
        animate(image, out, motion_out=outputs / "clip.json", **kwargs)
    assert isinstance(info.value, EchomimicError)
    assert not isinstance(info.value, NOT_SUBCLASSES.get(error, ())), type(info.value)
    assert info.value.message and "\n" not in info.value.message
    assert list(outputs.iterdir()) == [], "a failed job left files behind"


def test_output_in_a_missing_folder_is_an_invalid_option(tmp_path, astronaut_png, short_speech):
    out = tmp_path / "missing" / "clip.mp4"
    with pytest.raises(InvalidOption):
        animate(astronaut_png, out, audio=short_speech.path)
    assert not out.parent.exists()


#: Cancels jobs in a row (in a child process, so that a crash cannot take the test run down) and
#: checks after each one that the output is absent and the encoder thread has stopped.
_CANCEL_SCRIPT = r"""
import os, sys, threading, time
from echomimic import animate
from echomimic.errors import Cancelled

image, audio, folder = sys.argv[1:4]
out = os.path.join(folder, "clip.mp4")

def progress(stage, fraction):
    if stage == "render" and fraction > 0.5:
        raise Cancelled("stopped by the user")

for attempt in range(8):
    try:
        animate(image, out, audio=audio, progress=progress, crop="face", size=256)
    except Cancelled:
        pass
    else:
        sys.exit("animate finished although the progress callback raised Cancelled")
    busy = [t for t in threading.enumerate() if t.name == "echomimic-encoder" and t.is_alive()]
    if busy:
        sys.exit(f"attempt {attempt}: the encoder thread still runs after Cancelled was raised")
    if os.listdir(folder):
        sys.exit(f"attempt {attempt}: a cancelled job left {os.listdir(folder)}")
    time.sleep(0.2)
"""


@pytest.mark.slow
def test_cancelled_jobs_stop_cleanly_and_leave_no_file(tmp_path, astronaut_png, short_speech):
    import subprocess
    import sys

    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _CANCEL_SCRIPT, str(astronaut_png), str(short_speech.path),
         str(folder)], capture_output=True, text=True, timeout=300)
    tail = "\n".join(line for line in proc.stderr.splitlines()
                     if not line.startswith(("W0000", "I0000", "INFO", "WARNING")))[-1500:]
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{tail}"
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# 9. big and small
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_small_face_in_a_big_photo(tmp_path, astronaut_rgb, short_speech, measured):
    import cv2
    from PIL import Image

    from echomimic.analysis import analyze_face

    src = np.asarray(astronaut_rgb)
    lm = analyze_face(np.array(src)).landmarks
    face_w = float(lm[:, 0].max() - lm[:, 0].min())
    s = 90.0 / face_w
    small = cv2.resize(src, (round(512 * s), round(512 * s)), interpolation=cv2.INTER_AREA)
    H, W = 2000, 3000
    ramp = np.linspace(60, 200, W, dtype=np.float32)[None, :, None]
    big = np.broadcast_to(ramp, (H, W, 3)).astype(np.uint8)
    x, y = 2300, 1350                        # off-centre, towards the bottom right
    big[y:y + small.shape[0], x:x + small.shape[1]] = small
    photo = tmp_path / "big.png"
    Image.fromarray(big).save(photo)
    del big
    out = tmp_path / "big.mp4"
    res = animate(photo, out, audio=short_speech.path, **FACE_CLIP)
    fx0, fy0, fx1, fy1 = res.meta["face_box"]
    measured("pasted face width (px)", round(face_w * s, 1))
    assert (res.width, res.height) == (512, 512)
    tracks, _ = measure_video(out)
    measured("big photo: face found share / eye distance in output",
             f"{tracks.face_found_share:.2f}/{np.nanmedian(tracks.eye_dist):.0f}px")
    assert tracks.face_found_share >= 0.9
    centre = np.nanmedian(tracks.landmarks[:, :, :2].reshape(-1, 2), axis=0)
    assert np.all(np.abs(centre - 256) < 128), f"face centre {centre} is not in the crop's middle"
    assert np.nanmedian(tracks.eye_dist) > 100


@pytest.mark.slow
def test_size_limit_4096_accepted_5000_refused(tmp_path, astronaut_rgb, short_speech):
    from PIL import Image

    face = Image.fromarray(np.asarray(astronaut_rgb)).resize((1024, 1024))
    ok = tmp_path / "4096.png"
    img = Image.new("RGB", (4096, 4096), (120, 130, 140))
    img.paste(face, (2600, 700))
    img.save(ok)
    del img
    res = animate(ok, tmp_path / "ok.mp4", audio=short_speech.path, crop="face", size=256)
    assert (res.width, res.height) == (256, 256) and res.output.is_file()

    huge = tmp_path / "5000.png"
    img = Image.new("RGB", (5000, 5000), (120, 130, 140))
    img.save(huge)
    del img
    out = tmp_path / "out" / "huge.mp4"
    out.parent.mkdir()
    with pytest.raises(ImageTooLarge):
        animate(huge, out, audio=short_speech.path, crop="face")
    assert list(out.parent.iterdir()) == []
