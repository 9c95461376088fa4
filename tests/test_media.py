"""Tests of echomimic.media: image/audio/video decoding, the MP4 writer, contact sheets.

Every input is made here: scikit-image's astronaut photo, synthesized tones, files written with
Pillow, PyAV or ``struct``.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from echomimic.errors import (
    AudioError,
    AudioTooLong,
    ImageError,
    ImageTooLarge,
    InvalidOption,
    VideoError,
)
from echomimic.media import (
    Mp4Writer,
    contact_sheet,
    iter_audio_chunks,
    iter_video_frames,
    load_audio,
    load_image,
    probe_audio,
    probe_duration,
    probe_video,
    resize_max_side,
    save_png,
    sniff_kind,
)
from echomimic.media import audio as audio_mod
from echomimic.types import Audio

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_astro() -> np.ndarray:
    """A 256x256 RGB photo."""
    return np.ascontiguousarray(skdata.astronaut()[::2, ::2])


def _encode_image(rgb_or_img, fmt: str, **kw) -> bytes:
    img = rgb_or_img if isinstance(rgb_or_img, Image.Image) else Image.fromarray(rgb_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav_bytes(samples: np.ndarray, sr: int, *, kind: str = "s16", extensible: bool = False) -> bytes:
    """A WAV file from (n,) or (n, ch) float samples. kind: s16, s24, f32."""
    x = np.asarray(samples, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    ch = x.shape[1]
    if kind == "s16":
        bits, tag = 16, 1
        payload = np.round(x * 32767).astype("<i2").tobytes()
    elif kind == "s24":
        bits, tag = 24, 1
        ints = np.round(x * (2**23 - 1)).astype("<i4").reshape(-1)
        b = ints.view(np.uint8).reshape(-1, 4)[:, :3]
        payload = np.ascontiguousarray(b).tobytes()
    elif kind == "f32":
        bits, tag = 32, 3
        payload = x.astype("<f4").tobytes()
    else:
        raise ValueError(kind)
    block = ch * bits // 8
    if extensible:
        subformat = struct.pack("<IHH", tag, 0x0000, 0x0010) + bytes(
            [0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71])
        mask = 0x3 if ch == 2 else 0x4
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, ch, sr, sr * block, block, bits, 22, bits, mask)
        fmt += subformat
    else:
        fmt = struct.pack("<HHIIHH", tag, ch, sr, sr * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _encode_audio(samples: np.ndarray, sr: int, fmt: str, codec: str, rate: int,
                  layout: str = "stereo") -> bytes:
    """Encode mono float samples with PyAV into a compressed container (in memory)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":
            s.codec_context.options = {"strict": "experimental"}
        s.codec_context.open()
        res = av.AudioResampler(format=s.codec_context.format.name, layout=layout, rate=rate,
                                frame_size=s.codec_context.frame_size or None)
        for i in range(0, len(samples), 4096):
            f = av.AudioFrame.from_ndarray(samples[None, i:i + 4096], format="fltp", layout="mono")
            f.sample_rate = sr
            for g in res.resample(f):
                for p in s.encode(g):
                    c.mux(p)
        for g in res.resample(None):
            for p in s.encode(g):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def _decode_all_audio(path) -> tuple[np.ndarray, int, float]:
    """(mono samples, rate, time of the first sample) of the first audio track."""
    with av.open(str(path)) as c:
        out, start = [], None
        for f in c.decode(audio=0):
            if start is None:
                start = float(f.pts * f.time_base) if f.pts is not None else 0.0
            out.append(f.to_ndarray().reshape(f.layout.nb_channels, -1).mean(axis=0))
            rate = f.sample_rate
    return np.concatenate(out), rate, start or 0.0


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def test_png_under_jpg_name_is_decoded_by_content(tmp_path, media_astro):
    data = _encode_image(media_astro, "PNG")
    p = tmp_path / "photo.jpg"
    p.write_bytes(data)
    rgb, digest = load_image(p)
    assert rgb.dtype == np.uint8 and rgb.shape == media_astro.shape
    np.testing.assert_array_equal(rgb, media_astro)  # lossless: exact
    assert digest == hashlib.sha256(data).hexdigest()


def test_jpeg_under_png_name_and_bytes_input(tmp_path, media_astro):
    data = _encode_image(media_astro, "JPEG", quality=95)
    p = tmp_path / "photo.png"
    p.write_bytes(data)
    rgb, digest = load_image(p)
    assert rgb.shape == media_astro.shape
    assert np.abs(rgb.astype(int) - media_astro).mean() < 4
    rgb2, digest2 = load_image(data)
    np.testing.assert_array_equal(rgb, rgb2)
    assert digest2 == digest


def test_webp_alpha_is_flattened_onto_white(media_astro):
    rgba = np.dstack([media_astro, np.full(media_astro.shape[:2], 255, np.uint8)])
    rgba[:50, :50, 3] = 0          # fully transparent corner (colour underneath is the photo)
    rgba[100:120, 100:120, :3] = (200, 10, 10)
    rgba[100:120, 100:120, 3] = 128  # half transparent red
    rgb, _ = load_image(_encode_image(rgba, "WEBP", lossless=True, exact=True))
    assert rgb.shape == media_astro.shape
    assert (rgb[:50, :50] == 255).all()
    np.testing.assert_allclose(rgb[110, 110], [227, 132, 132], atol=2)
    np.testing.assert_array_equal(rgb[200:, 200:], media_astro[200:, 200:])


def test_palette_png_transparency_becomes_white():
    img = Image.new("P", (80, 80), 1)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(0, (0, 0, 10, 10))
    rgb, _ = load_image(_encode_image(img, "PNG", transparency=0))
    assert (rgb[:10, :10] == 255).all()
    np.testing.assert_array_equal(rgb[40, 40], [0, 0, 255])


def test_grayscale_and_cmyk_jpeg_become_rgb(media_astro):
    gray = np.asarray(Image.fromarray(media_astro).convert("L"))
    rgb, _ = load_image(_encode_image(gray, "JPEG", quality=95))
    assert rgb.shape == gray.shape + (3,)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert np.abs(rgb[..., 0].astype(int) - gray).mean() < 3

    cmyk = Image.new("CMYK", (96, 96), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 0, 0, 255), (0, 0, 48, 96))          # black left half
    rgb, _ = load_image(_encode_image(cmyk, "JPEG", quality=95))
    assert rgb.shape == (96, 96, 3)
    r, g, b = rgb[48, 80].astype(int)
    assert r < 40 and g > 200 and b > 200, rgb[48, 80]
    assert rgb[48, 10].max() < 40


def test_sixteen_bit_grayscale_png_is_scaled():
    ramp = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (70, 1))
    rgb, _ = load_image(_encode_image(Image.fromarray(ramp), "PNG"))
    assert rgb.dtype == np.uint8 and rgb.shape == (70, 128, 3)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255
    np.testing.assert_allclose(rgb[0, :, 0], np.round(ramp[0] / 257), atol=1)


def test_exif_orientation_is_applied():
    arr = np.zeros((80, 120, 3), np.uint8)
    arr[:10, :10] = (255, 0, 0)  # red in the stored top-left corner
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgb, _ = load_image(_encode_image(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert rgb.shape == (120, 80, 3)
    assert rgb[5, -5, 0] > 200 and rgb[5, -5, 1] < 60  # top-left went to top-right
    assert rgb[5, 5, 0] < 60


def test_gif_first_frame():
    frames = [Image.new("RGB", (70, 70), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    rgb, _ = load_image(buf.getvalue())
    assert rgb[35, 35, 0] > 200 and rgb[35, 35, 1] < 50


@pytest.mark.parametrize("content, needle", [
    (b"", "empty"),
    (np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not a supported"),
])
def test_empty_and_random_bytes_raise_image_error(tmp_path, content, needle):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert needle in str(ei.value)
    assert "bad.png" in str(ei.value)
    assert "\n" not in str(ei.value)
    assert not isinstance(ei.value, ImageTooLarge)


def test_truncated_missing_and_non_image(tmp_path, media_astro):
    data = _encode_image(media_astro, "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(p)
    jpeg = _encode_image(media_astro, "JPEG")
    with pytest.raises(ImageError):
        load_image(jpeg[: len(jpeg) // 3])
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="audio"):
        load_image(_wav_bytes(_tone(8000, 0.1), 8000))


def test_too_small_image():
    with pytest.raises(ImageError, match="too small"):
        load_image(_encode_image(np.zeros((32, 200, 3), np.uint8), "PNG"))


def _png_with_declared_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR is patched to declare width x height (CRC fixed)."""
    data = bytearray(_encode_image(np.zeros((64, 64), np.uint8), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:20] = struct.pack(">I", width)
    data[20:24] = struct.pack(">I", height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_declared_huge_png_raises_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(_png_with_declared_size(20000, 20000))
    with pytest.raises(ImageTooLarge) as ei:
        load_image(p)  # would need 1.2 GB if decoded; the data holds 64x64 pixels only
    msg = str(ei.value)
    assert "400.0 megapixels" in msg and str(4096 * 4096) in msg and "huge.png" in msg
    # Below Pillow's own decompression-bomb limit, our check names the exact size.
    with pytest.raises(ImageTooLarge, match="6000x5000"):
        load_image(_png_with_declared_size(6000, 5000))
    with pytest.raises(ImageTooLarge):
        load_image(_png_with_declared_size(100000, 100000))


def test_max_pixels_option(media_astro):
    data = _encode_image(media_astro, "PNG")
    with pytest.raises(ImageTooLarge, match="256x256"):
        load_image(data, max_pixels=200 * 200)
    rgb, _ = load_image(data, max_pixels=256 * 256)
    assert rgb.shape == media_astro.shape


def test_resize_max_side(media_astro):
    small, s = resize_max_side(media_astro, 128)
    assert small.shape == (128, 128, 3) and s == pytest.approx(0.5)
    assert abs(float(small.mean()) - float(media_astro.mean())) < 2
    same, s = resize_max_side(media_astro, 1000)
    assert same is media_astro and s == 1.0
    same, s = resize_max_side(media_astro, 0)
    assert same is media_astro and s == 1.0
    wide, s = resize_max_side(np.zeros((100, 400, 3), np.uint8), 200)
    assert wide.shape == (50, 200, 3)


def test_sniff_kind(media_astro, tmp_path):
    assert sniff_kind(_encode_image(media_astro, "PNG")) == "image"
    assert sniff_kind(_encode_image(media_astro, "JPEG")) == "image"
    assert sniff_kind(_encode_image(media_astro, "WEBP")) == "image"
    assert sniff_kind(_wav_bytes(_tone(8000, 0.1), 8000)) == "audio"
    assert sniff_kind(_encode_audio(_tone(16000, 0.3), 16000, "flac", "flac", 16000)) == "audio"
    assert sniff_kind(_encode_audio(_tone(16000, 0.3), 16000, "mp3", "libmp3lame", 16000)) == "audio"
    p = tmp_path / "v.mp4"
    with Mp4Writer(p, 64, 64) as w:
        w.write(np.zeros((64, 64, 3), np.uint8))
    assert sniff_kind(p.read_bytes()) == "video"
    assert sniff_kind(b"hello world, not media") is None
    assert sniff_kind(b"") is None


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------


def _check_tone(a: Audio, seconds: float, *, tol: float = 0.010, freq: float = 440.0) -> None:
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.sample_rate == 16000
    assert abs(a.duration - seconds) <= tol, a.duration
    assert abs(_peak_hz(a.samples, a.sample_rate) - freq) < 2.0
    assert np.abs(a.samples).max() <= 1.0


def test_wav_16bit_44k_stereo(tmp_path):
    left = _tone(44100, 1.25)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # right channel silent
    p = tmp_path / "s.wav"
    p.write_bytes(_wav_bytes(stereo, 44100))
    a = load_audio(p)
    _check_tone(a, 1.25)
    # (L + R) / 2 downmix: the tone keeps half its amplitude.
    assert np.abs(a.samples[1000:-1000]).max() == pytest.approx(0.25, abs=0.02)
    assert a.source == str(p)
    assert probe_duration(p) == pytest.approx(1.25, abs=1e-3)
    facts = probe_audio(p)
    assert facts["sample_rate"] == 44100 and facts["channels"] == 2


@pytest.mark.parametrize("kind, extensible, sr, channels", [
    ("s16", True, 48000, 2),
    ("s24", True, 48000, 2),
    ("s24", False, 22050, 1),
    ("f32", False, 32000, 1),
    ("f32", True, 8000, 2),
])
def test_wav_variants(kind, extensible, sr, channels):
    x = _tone(sr, 0.8)
    if channels == 2:
        x = np.stack([x, x], axis=1)
    a = load_audio(_wav_bytes(x, sr, kind=kind, extensible=extensible))
    _check_tone(a, 0.8)
    assert np.abs(a.samples[500:-500]).max() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("fmt, codec, rate, tol", [
    ("mp3", "libmp3lame", 44100, 0.010),
    ("flac", "flac", 44100, 0.010),
    ("ogg", "vorbis", 44100, 0.010),
    ("ogg", "libopus", 48000, 0.010),
    # AAC decodes the encoder's last padded frame: up to 1024 samples more.
    ("ipod", "aac", 44100, 0.010 + 1024 / 44100),
])
def test_compressed_formats(tmp_path, fmt, codec, rate, tol):
    data = _encode_audio(_tone(rate, 1.5), rate, fmt, codec, rate)
    p = tmp_path / "sound.bin"  # no telling extension: recognised by content
    p.write_bytes(data)
    a = load_audio(p)
    assert a.duration >= 1.5 - 0.010
    _check_tone(a, 1.5, tol=tol)


def test_other_rates_and_silence_is_not_an_error():
    a = load_audio(_wav_bytes(_tone(16000, 1.0, freq=1000), 16000), sample_rate=8000)
    assert a.sample_rate == 8000 and len(a.samples) == 8000
    assert abs(_peak_hz(a.samples, 8000) - 1000) < 2
    silent = load_audio(_wav_bytes(np.zeros(16000), 16000))
    assert len(silent.samples) == 16000 and not silent.samples.any()


def test_audio_track_of_a_video(tmp_path):
    p = tmp_path / "v.mp4"
    tone = Audio(_tone(16000, 1.0), 16000)
    with Mp4Writer(p, 64, 64, fps=25, audio=tone) as w:
        for _ in range(25):
            w.write(np.zeros((64, 64, 3), np.uint8))
    a = load_audio(p)
    _check_tone(a, 1.0, tol=0.010 + 1024 / 48000)


def test_too_long_from_header():
    data = _wav_bytes(_tone(8000, 3.0), 8000)
    with pytest.raises(AudioTooLong, match="3.0 s"):
        load_audio(data, max_duration=2.0)
    assert load_audio(data, max_duration=None).duration == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("declared", [None, 1.0])
def test_too_long_while_decoding_when_header_is_silent_or_lies(monkeypatch, declared):
    monkeypatch.setattr(audio_mod, "_stream_duration", lambda container, stream: declared)
    data = _wav_bytes(_tone(8000, 3.0), 8000)
    with pytest.raises(AudioTooLong, match="longer than"):
        load_audio(data, max_duration=2.0)


def test_corrupt_audio_raises_audio_error(tmp_path, media_astro):
    rng = np.random.default_rng(1)
    cases = {
        "empty.wav": b"",
        "random.wav": rng.integers(0, 256, 20000, dtype=np.uint8).tobytes(),
        "header_only.wav": _wav_bytes(_tone(8000, 1.0), 8000)[:30],
        "image.wav": _encode_image(media_astro, "PNG"),
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(AudioError) as ei:
            load_audio(p)
        assert name in str(ei.value) and "\n" not in str(ei.value)
        assert not isinstance(ei.value, AudioTooLong)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(_wav_bytes(np.zeros(0), 16000))


def test_video_without_sound_has_no_audio_track(tmp_path):
    p = tmp_path / "mute.mp4"
    with Mp4Writer(p, 64, 64) as w:
        w.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(p)


def test_iter_audio_chunks_layouts():
    sr = 22050
    x = _tone(sr, 1.3)
    data = _wav_bytes(np.stack([x, 0 * x], axis=1), sr)
    chunks = list(iter_audio_chunks(data, sample_rate=48000, layout="stereo", chunk_seconds=0.5))
    assert all(c.dtype == np.float32 and c.shape[0] == 2 for c in chunks)
    assert [c.shape[1] for c in chunks[:-1]] == [24000] * (len(chunks) - 1)
    full = np.concatenate(chunks, axis=1)
    assert abs(full.shape[1] - 1.3 * 48000) <= 48
    assert np.abs(full[0, 1000:-1000]).max() == pytest.approx(0.5, abs=0.02)  # left kept
    assert np.abs(full[1]).max() < 1e-3                                         # right silent
    mono = np.concatenate(list(iter_audio_chunks(data, sample_rate=16000)), axis=1)
    assert mono.shape[0] == 1
    np.testing.assert_allclose(mono[0], load_audio(data).samples, atol=1e-6)
    up = np.concatenate(list(iter_audio_chunks(Audio(x, sr), sample_rate=44100, layout="stereo")),
                        axis=1)
    np.testing.assert_allclose(up[0], up[1])  # mono source duplicated
    assert abs(_peak_hz(up[0], 44100) - 440) < 2
    with pytest.raises(ValueError):
        next(iter_audio_chunks(data, sample_rate=16000, layout="5.1"))


# ---------------------------------------------------------------------------------------------
# writer and video reading
# ---------------------------------------------------------------------------------------------


def _frames(n: int, h: int = 96, w: int = 128, flash: int | None = None):
    for i in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        f[:, : (i * 3) % w] = (0, 90, 160)
        if flash is not None and i == flash:
            f[:] = 255
        yield f


def test_writer_streams_and_formats(tmp_path):
    n, fps = 30, 25
    p = tmp_path / "out.mp4"
    with Mp4Writer(p, 128, 96, fps=fps, audio=Audio(_tone(16000, 2.0), 16000)) as w:
        for f in _frames(n):
            w.write(f)
    info = w.info
    assert info == {"frames": n, "duration": pytest.approx(n / fps), "path": str(p),
                    "width": 128, "height": 96, "fps": 25.0, "audio": True}
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
    head = p.read_bytes()
    assert 0 < head.find(b"moov") < head.find(b"mdat")  # faststart: index before the data
    with av.open(str(p)) as c:
        vs, ast = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == "h264" and vs.codec_context.pix_fmt == "yuv420p"
        assert ast.codec_context.name == "aac" and ast.codec_context.sample_rate == 48000
        assert ast.codec_context.channels == 1
        assert vs.average_rate == Fraction(fps)
        decoded = [fr for fr in c.decode(video=0)]
    assert len(decoded) == n
    assert [fr.pts * fr.time_base for fr in decoded] == [Fraction(i, fps) for i in range(n)]
    facts = probe_video(p)
    assert facts["n_frames"] == n and facts["has_audio"]
    assert abs(facts["duration"] - n / fps) <= 1 / fps
    samples, rate, start = _decode_all_audio(p)
    audio_dur = len(samples) / rate
    assert abs(start) < 1e-6
    assert n / fps - 0.005 <= audio_dur <= n / fps + 1024 / rate + 0.005  # trimmed to the video


def test_av_sync_flash_and_click(tmp_path):
    fps, n, k = 25, 50, 31
    sr = 44100
    x = np.zeros(int(sr * 3.0), np.float32)  # longer than the 2 s video: trimmed
    click = int(round(k / fps * sr))
    x[click:click + 60] = 0.9
    p = tmp_path / "sync.mp4"
    with Mp4Writer(p, 128, 96, fps=fps, audio=_wav_bytes(np.stack([x, x], 1), sr)) as w:
        for f in _frames(n, flash=k):
            w.write(f)
    with av.open(str(p)) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 44100
        assert c.streams.audio[0].codec_context.channels == 2
        frames = [(float(fr.pts * fr.time_base), fr.to_ndarray(format="gray").mean())
                  for fr in c.decode(video=0)]
    flash_t = max(frames, key=lambda t: t[1])[0]
    samples, rate, start = _decode_all_audio(p)
    click_t = start + int(np.argmax(np.abs(samples) > 0.3)) / rate
    assert abs(flash_t - k / fps) < 1e-6
    assert abs(click_t - flash_t) < 1 / fps
    assert abs(len(samples) / rate - n / fps) <= 1024 / rate + 0.005


def test_short_audio_is_padded_with_silence(tmp_path):
    p = tmp_path / "pad.mp4"
    with Mp4Writer(p, 64, 64, fps=10, audio=Audio(_tone(16000, 0.5), 16000)) as w:
        for _ in range(20):
            w.write(np.zeros((64, 64, 3), np.uint8))
    samples, rate, _ = _decode_all_audio(p)
    assert abs(len(samples) / rate - 2.0) <= 1024 / rate + 0.005
    assert np.abs(samples[: int(0.4 * rate)]).max() > 0.3
    assert np.abs(samples[int(0.7 * rate):]).max() < 0.01


def test_odd_size_is_padded_and_ntsc_rate(tmp_path):
    p = tmp_path / "odd.mp4"
    frame = np.zeros((71, 99, 3), np.uint8)
    frame[:, -1] = 255  # white last column, replicated into the padding column
    frame[-1, :] = 255
    with Mp4Writer(p, 99, 71, fps=29.97) as w:
        for _ in range(5):
            w.write(frame)
    assert (w.info["width"], w.info["height"]) == (100, 72)
    with av.open(str(p)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    out = next(iter_video_frames(p))
    assert out.shape == (72, 100, 3)
    assert out[30, 99].mean() > 200 and out[71, 50].mean() > 200 and out[30, 50].mean() < 40


def test_failed_render_leaves_nothing(tmp_path):
    p = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(p, 64, 64, audio=Audio(_tone(16000, 1.0), 16000)) as w:
            w.write(np.zeros((64, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    # An existing file at the destination survives a failed render untouched.
    p.write_bytes(b"previous result")
    with pytest.raises(ValueError):
        with Mp4Writer(p, 64, 64) as w:
            w.write(np.zeros((64, 65, 3), np.uint8))  # wrong size
    assert p.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["fail.mp4"]


def test_writer_rejects_bad_options(tmp_path):
    for kw in ({"preset": "warp9"}, {"crf": 99}, {"fps": 0}, {"fps": float("nan")}):
        with pytest.raises(InvalidOption):
            Mp4Writer(tmp_path / "x.mp4", 64, 64, **kw)
    assert os.listdir(tmp_path) == []


def test_writer_bad_audio_fails_early(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError):
        Mp4Writer(tmp_path / "x.mp4", 64, 64, audio=bad)
    assert os.listdir(tmp_path) == ["bad.wav"]


def test_iter_video_frames_content_and_errors(tmp_path):
    p = tmp_path / "v.mp4"
    src = list(_frames(12))
    with Mp4Writer(p, 128, 96, fps=12) as w:
        for f in src:
            w.write(f)
    out = list(iter_video_frames(p))
    assert len(out) == 12 and out[0].shape == (96, 128, 3) and out[0].dtype == np.uint8
    for a, b in zip(out, src):
        assert np.abs(a.astype(int) - b).mean() < 4
    assert len(list(iter_video_frames(p, max_frames=5))) == 5
    assert probe_video(p.read_bytes())["fps"] == pytest.approx(12)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(p.read_bytes()[:200])
    for bad in (broken, tmp_path / "missing.mp4", b""):
        with pytest.raises(VideoError):
            list(iter_video_frames(bad))
        with pytest.raises(VideoError):
            probe_video(bad)
    with pytest.raises(VideoError, match="no video track"):
        probe_video(_wav_bytes(_tone(8000, 0.2), 8000))


# ---------------------------------------------------------------------------------------------
# contact sheets
# ---------------------------------------------------------------------------------------------


def test_contact_sheet_layout_and_png(tmp_path, media_astro):
    red = np.zeros((100, 200, 3), np.uint8)
    red[..., 0] = 255
    frames = [media_astro, red, media_astro[..., 0], media_astro, red]
    sheet = contact_sheet(frames, cols=3, width=600)
    cell_w = 200
    cell_h = 200  # tallest scaled frame: the square photo
    assert sheet.shape == (2 * cell_h, 3 * cell_w, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[100, 300], [255, 0, 0])  # red frame centred in cell 1
    assert (sheet[10, 300] != [255, 0, 0]).any()                 # letterbox above it
    gray_cell = sheet[:200, 400:600]
    assert (gray_cell[..., 0] == gray_cell[..., 1]).all()
    labelled = contact_sheet(frames, cols=3, width=600, labels=["a", "b", "c", "d", "e"])
    assert (labelled[:20, :40] != sheet[:20, :40]).any()
    np.testing.assert_array_equal(labelled[30:200], sheet[30:200])  # only the label bands differ
    np.testing.assert_array_equal(labelled[230:], sheet[230:])
    out = save_png(tmp_path / "sub" / "sheet.png", labelled)
    back, _ = load_image(out)
    np.testing.assert_array_equal(back, labelled)
    with pytest.raises(ValueError):
        contact_sheet(frames, labels=["only one"])


def test_written_mp4_has_ordinary_permissions(tmp_path):
    """The writer goes through a private temp file; the finished mp4 gets the permissions a plain
    open() would give it (umask applied), not the temp file's 0600."""
    import os
    import stat

    from echomimic.media import Mp4Writer

    old = os.umask(0o022)
    try:
        out = tmp_path / "perm.mp4"
        with Mp4Writer(out, 64, 64, 25) as w:
            for _ in range(3):
                w.write(np.zeros((64, 64, 3), np.uint8))
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# writer: frames over a still background
# ---------------------------------------------------------------------------------------------


def _decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("marked", [True, False])
def test_writer_over_a_still_background_encodes_the_same_picture(tmp_path, media_astro, marked):
    """Given the still picture and the box that moves, the writer converts (and watermarks)
    only that box: the encoded video is the same as when every frame is converted whole."""
    import cv2

    from echomimic.safety import Watermarker, detect

    still = np.ascontiguousarray(cv2.resize(media_astro, (640, 360)))
    box = (230, 20, 420, 260)
    rng = np.random.default_rng(1)
    frames = []
    for k in range(8):
        f = still.copy()
        x0, y0, x1, y1 = box
        f[y0:y1, x0:x1] = np.roll(still[y0:y1, x0:x1], 3 * k, axis=0)
        f[y0 + 30:y0 + 50, x0 + 40:x0 + 90] = rng.integers(0, 256, (20, 50, 3))
        frames.append(f)
    outs = []
    for bg in (None, still):
        flt = Watermarker(360, 640) if marked else None
        path = tmp_path / f"{'still' if bg is not None else 'whole'}.mp4"
        with Mp4Writer(path, 640, 360, 25, frame_filter=flt, background=bg,
                       moving_box=box if bg is not None else None) as w:
            assert (w._still is not None) == (bg is not None)
            for f in frames:
                w.write(f)
        outs.append(_decoded(path))
    assert len(outs[0]) == len(outs[1]) == len(frames)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
    # the moving box and the still part both came through
    assert np.abs(outs[1][5].astype(int) - outs[1][0]).max() > 50
    assert detect(outs[1]).found is marked
