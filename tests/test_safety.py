"""Content safety: the AI-generated label in every output format, the invisible watermark
(through H.264, a re-encode at CRF 28 and a downscale to half size), ``echomimic verify``, the
visible caption, and moderation (the word list and plugins) from the Python API and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import echomimic
from echomimic.cli import app
from echomimic.errors import ContentRefused, InvalidOption
from echomimic.safety import (ModerationRequest, WordListModerator, detect, moderate,
                              read_label, verify)
from echomimic.safety.verify import read_tags
from echomimic.safety.watermark import Watermarker, id_hash

runner = CliRunner()
CODECS = {"mp4": ("h264", "aac"), "webm": ("vp9", "opus"), "mov": ("h264", "aac"),
          "gif": ("gif", None)}


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _encode(frames: list[np.ndarray], path: Path, crf: int) -> Path:
    from echomimic.media import VideoWriter

    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, 25, crf=crf) as writer:
        for f in frames:
            writer.write(f)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory, astronaut_png, short_speech):
    """The same 512x512 render with and without the watermark (H.264 at the default CRF)."""
    folder = tmp_path_factory.mktemp("safety")
    marked = echomimic.animate(astronaut_png, folder / "marked.mp4", audio=short_speech.path,
                               crop="face", size=512)
    plain = echomimic.animate(astronaut_png, folder / "plain.mp4", audio=short_speech.path,
                              crop="face", size=512, watermark=False)
    return {"marked": marked.output, "plain": plain.output, "folder": folder}


# ------------------------------------------------------------------------------------------
# watermark
# ------------------------------------------------------------------------------------------


def test_watermark_survives_h264_reencode_and_half_size(clips, measured):
    import cv2

    frames = _frames(clips["marked"])
    at_default_crf = detect(frames)
    measured("watermark z at CRF 20", at_default_crf.score)
    assert at_default_crf.found and at_default_crf.id_checked, at_default_crf.to_dict()

    crf28 = _encode(frames, clips["folder"] / "crf28.mp4", crf=28)
    again = detect(_frames(crf28))
    measured("watermark z after a re-encode at CRF 28", again.score)
    assert again.found, again.to_dict()

    half = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA)
            for f in frames]
    small = _encode(half, clips["folder"] / "half_crf28.mp4", crf=28)
    smaller = detect(_frames(small))
    measured("watermark z at half size, CRF 28", smaller.score)
    assert smaller.found, smaller.to_dict()
    assert _frames(small)[0].shape[:2] == (256, 256)


def test_no_watermark_where_none_was_put(clips, astronaut_rgb, measured):
    photo = detect([np.asarray(astronaut_rgb)])
    plain = detect(_frames(clips["plain"]))
    measured("watermark z of the photo / of a clip made without it",
             f"{photo.score:.2f} / {plain.score:.2f}")
    assert not photo.found and abs(photo.score) < 4
    assert not plain.found and abs(plain.score) < 4
    flat = detect([np.full((512, 512, 3), 128, np.uint8)])
    assert not flat.found and abs(flat.score) < 1e-6       # flat areas cancel exactly


def test_watermark_is_faint_and_carries_the_job_id(astronaut_rgb):
    img = np.asarray(astronaut_rgb)
    marker = Watermarker(512, 512, job_id="0123abcd" * 4)
    out = marker(img)
    assert out is not img and out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, marker(img))                          # deterministic
    d = out.astype(float) - img
    psnr = 10 * np.log10(255.0 ** 2 / np.mean(d ** 2))
    assert psnr > 40, psnr
    reading = detect([out])
    assert reading.found and reading.id_checked
    assert reading.id_hash == f"{id_hash('0123abcd' * 4):04x}"


# ------------------------------------------------------------------------------------------
# label: every format, by extension (CLI) and by output_format (Python)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "webm", "mov", "gif"])
def test_every_format_carries_the_label(tmp_path, astronaut_png, short_speech, fmt):
    import av

    out = tmp_path / f"clip.{fmt}"
    res = echomimic.animate(astronaut_png, out, audio=short_speech.path, crop="face", size=128,
                            output_format=fmt)
    with av.open(str(out)) as c:
        video = c.streams.video[0].codec_context.name
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        n = sum(1 for _ in c.decode(video=0))
    assert (video, audio) == CODECS[fmt]
    assert n == res.n_frames
    tags, _ = read_tags(str(out))
    label = read_label(tags)
    assert label is not None and label["generator"] == "echomimic" and label["ai_generated"]
    assert "trainedAlgorithmicMedia" in label["digital_source_type"]
    assert verify(out).made_here


def test_the_cli_picks_the_format_by_extension(tmp_path, astronaut_png, short_speech):
    out = tmp_path / "clip.webm"
    res = runner.invoke(app, ["animate", "-i", str(astronaut_png), "-a", str(short_speech.path),
                              "-o", str(out), "--crop", "face", "--size", "96", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["meta"] is not None
    import av

    with av.open(str(out)) as c:
        assert c.format.name == "matroska,webm"
        assert c.streams.video[0].codec_context.name == "vp9"


def test_unknown_formats_are_refused_with_the_choices(tmp_path, astronaut_png, short_speech):
    with pytest.raises(InvalidOption, match="mp4, webm, mov, gif"):
        echomimic.animate(astronaut_png, tmp_path / "a.mp4", audio=short_speech.path,
                          output_format="avi")
    with pytest.raises(InvalidOption, match="does not end in .webm"):
        echomimic.animate(astronaut_png, tmp_path / "a.mp4", audio=short_speech.path,
                          output_format="webm")
    res = runner.invoke(app, ["animate", "-i", str(astronaut_png), "-a", str(short_speech.path),
                              "-o", str(tmp_path / "a.avi")])
    assert res.exit_code == 2
    assert ".mp4, .webm, .mov, .gif" in res.output
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# verify
# ------------------------------------------------------------------------------------------


def test_verify_command(clips, astronaut_png, tmp_path):
    res = runner.invoke(app, ["verify", str(clips["marked"])])
    assert res.exit_code == 0, res.output
    assert "made by echomimic" in res.stdout and "watermark" in res.stdout
    res = runner.invoke(app, ["verify", str(astronaut_png), "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert report["made_here"] is False and report["label"] is None
    assert report["watermark"]["found"] is False
    # the tags stripped by a re-encode elsewhere: the watermark alone still says it
    stripped = _encode(_frames(clips["marked"]), tmp_path / "stripped.mp4", crf=23)
    report = json.loads(runner.invoke(app, ["verify", str(stripped), "--json"]).stdout)
    assert report["label"] is None and report["watermark"]["found"] and report["made_here"]
    # without the watermark, the label still says it
    report = json.loads(runner.invoke(app, ["verify", str(clips["plain"]), "--json"]).stdout)
    assert report["label"]["generator"] == "echomimic" and not report["watermark"]["found"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    res = runner.invoke(app, ["verify", str(bad)])
    assert res.exit_code == 2 and res.output.startswith("error: ")


# ------------------------------------------------------------------------------------------
# visible label
# ------------------------------------------------------------------------------------------


def test_visible_label_in_its_corner(tmp_path, astronaut_png, short_speech):
    kw = dict(audio=short_speech.path, crop="face", size=256, watermark=False)
    echomimic.animate(astronaut_png, tmp_path / "plain.mp4", **kw)
    echomimic.animate(astronaut_png, tmp_path / "label.mp4", label="AI-generated",
                      label_corner="top-left", label_opacity=1.0, **kw)
    a = _frames(tmp_path / "plain.mp4")[0].astype(float)
    b = _frames(tmp_path / "label.mp4")[0].astype(float)
    corner = np.abs(a[:24, :110] - b[:24, :110]).mean()
    far = np.abs(a[150:, 150:] - b[150:, 150:]).mean()
    assert corner > 20 and far < 1.0, (corner, far)
    with pytest.raises(InvalidOption, match="label_corner"):
        echomimic.animate(astronaut_png, tmp_path / "x.mp4", label="AI", label_corner="middle",
                          **kw)
    with pytest.raises(InvalidOption, match="label_opacity"):
        echomimic.animate(astronaut_png, tmp_path / "x.mp4", label="AI", label_opacity=2, **kw)


# ------------------------------------------------------------------------------------------
# moderation
# ------------------------------------------------------------------------------------------


def test_word_list_matching():
    mod = WordListModerator(["Badword", "two words", "禁词", ""])
    assert mod.check(ModerationRequest(text="a BADWORD here")) is not None
    assert mod.check(ModerationRequest(prompt="ｂａｄｗｏｒｄ")) is not None          # width forms
    assert mod.check(ModerationRequest(transcript="say two  words")) is None        # not the phrase
    assert mod.check(ModerationRequest(transcript="say two words")) is not None
    assert mod.check(ModerationRequest(text="badwords and abadword")) is None       # whole words
    assert mod.check(ModerationRequest(prompt="请不要说禁词")) is not None            # no spaces
    assert WordListModerator([]).check(ModerationRequest(text="anything")) is None


def test_refused_word_from_python_and_cli(monkeypatch, tmp_path, astronaut_png):
    monkeypatch.setenv("ECHOMIMIC_BLOCKED_WORDS", "forbiddenword")
    with pytest.raises(ContentRefused) as err:
        echomimic.animate(astronaut_png, tmp_path / "a.mp4", text="say ForbiddenWord")
    assert err.value.code == "content_refused" and err.value.http_status == 422
    res = runner.invoke(app, ["animate", "-i", str(astronaut_png), "--text",
                              "Now say forbiddenword, please.", "-o", str(tmp_path / "b.mp4")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: content refused"), res.output
    assert not list(tmp_path.iterdir())


class NoCats:
    """A moderation plugin for the test: refuses prompts about cats."""

    name = "no-cats"

    def check(self, request):
        return "no cats" if "cat" in (request.prompt or "") else None


def test_moderation_plugins_from_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    from echomimic.safety import moderation

    ep = EntryPoint(name="no-cats", value="test_safety:NoCats", group=moderation.GROUP)
    monkeypatch.setattr(moderation.metadata, "entry_points",
                        lambda group=None: [ep] if group == moderation.GROUP else [])
    monkeypatch.delenv("ECHOMIMIC_BLOCKED_WORDS", raising=False)
    names = [m.name for m in moderation.moderators()]
    assert names == ["wordlist", "no-cats"]
    moderate(prompt="a dog nods")
    with pytest.raises(ContentRefused, match="no-cats: no cats"):
        moderate(prompt="a cat nods")


def _reference_mark(img: np.ndarray, marker: Watermarker) -> np.ndarray:
    """The watermark written out plainly (box means, 4x4 DCTs by einsum, the change taken back
    by the inverse DCT, doubled, resized, protected, rounded onto R, G and B): the fast path
    must give the same frame bit for bit."""
    import cv2

    from echomimic.safety import watermark as wm

    side = marker.side
    luma = wm._luma(img, side)
    k = luma.shape[0] // side
    c = luma.astype(np.float64).reshape(side, k, side, k).mean(axis=(1, 3))
    ll = (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2]) / 2.0
    nb = side // 8
    blocks = ll.reshape(nb, 4, nb, 4).transpose(0, 2, 1, 3)
    d = np.einsum("ij,abjk,lk->abil", wm._T, blocks, wm._T)
    coefs = np.stack([d[:, :, i, j] for i, j in wm._POSITIONS], -1).reshape(-1)
    u = coefs / wm.STEP - marker.key.dither - marker.target
    change = ((np.round(u) - u) * wm.STEP * wm._GAIN).reshape(nb, nb, 3)
    dd = np.zeros((nb, nb, 4, 4))
    for n, (i, j) in enumerate(wm._POSITIONS):
        dd[:, :, i, j] = change[:, :, n]
    dll = np.einsum("ji,abjk,kl->abil", wm._T, dd, wm._T).transpose(0, 2, 1, 3)
    dll = dll.reshape(side // 2, side // 2)
    dc = np.repeat(np.repeat(dll / 2.0, 2, 0), 2, 1).astype(np.float32)
    delta = cv2.resize(dc, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    if marker.weights is not None:
        delta = delta * marker.weights
    step = np.rint(delta).astype(np.int16)[..., None]
    return np.clip(img.astype(np.int16) + step, 0, 255).astype(np.uint8)


def test_watermark_equals_its_plain_formulation(astronaut_rgb):
    img = np.asarray(astronaut_rgb)
    rng = np.random.default_rng(3)
    landmarks = rng.uniform(150, 350, (478, 3))
    for marker in (Watermarker(512, 512), Watermarker(512, 512, landmarks=landmarks)):
        assert np.array_equal(marker(img), _reference_mark(img, marker))


def test_watermark_over_a_still_background_marks_like_the_whole_frame(astronaut_rgb):
    """apply_region on frames that differ from a still picture only inside a box gives the
    pixels of apply, for any region asked, and says where marked frames can differ."""
    import cv2

    still = cv2.resize(np.asarray(astronaut_rgb), (640, 360))    # 16:9, a non-square grid
    marker = Watermarker(360, 640)
    moving = (250, 40, 400, 230)
    dirty = marker.set_background(still, moving)
    assert dirty[0] <= moving[0] and dirty[1] <= moving[1]
    assert dirty[2] >= moving[2] and dirty[3] >= moving[3]
    assert (dirty[2] - dirty[0]) * (dirty[3] - dirty[1]) < 0.5 * 640 * 360
    marked_still = marker(still)
    rng = np.random.default_rng(0)
    for k in range(3):
        frame = still.copy()
        x0, y0, x1, y1 = moving
        frame[y0:y1, x0:x1] = np.roll(still[y0:y1, x0:x1], 7 * (k + 1), axis=1)
        frame[y0 + 20:y0 + 60, x0 + 10:x0 + 90] = rng.integers(0, 256, (40, 80, 3))
        whole = marker(frame)
        for box in ((0, 0, 640, 360), dirty, (240, 30, 420, 250)):
            bx0, by0, bx1, by1 = box
            assert np.array_equal(marker.apply_region(frame, box), whole[by0:by1, bx0:bx1])
        # outside the dirty box the marked frame is the marked still picture
        outside = whole.copy()
        outside[dirty[1]:dirty[3], dirty[0]:dirty[2]] = marked_still[dirty[1]:dirty[3],
                                                                     dirty[0]:dirty[2]]
        assert np.array_equal(outside, marked_still)
        assert not np.array_equal(whole, marked_still)


def test_caption_and_watermark_over_a_still_background(astronaut_rgb):
    """The visible caption and the watermark together mark a box of a frame over a still
    background exactly as they mark the whole frame (the caption inside the moving box)."""
    import cv2

    from echomimic.safety import frame_marker

    still = cv2.resize(np.asarray(astronaut_rgb), (640, 360))
    mark = frame_marker(360, 640, label="AI-generated", label_corner="bottom-right")
    moving = (420, 180, 640, 360)
    dirty = mark.set_background(still, moving)
    frame = still.copy()
    frame[200:340, 450:620] = np.roll(still[200:340, 450:620], 11, axis=1)
    whole = mark(frame)
    assert not np.array_equal(whole[340:, 600:], frame[340:, 600:])     # the caption is drawn
    for box in (dirty, (0, 0, 640, 360), (500, 300, 640, 360)):
        x0, y0, x1, y1 = box
        assert np.array_equal(mark.apply_region(frame, box), whole[y0:y1, x0:x1])
