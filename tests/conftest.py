"""Shared fixtures: a portrait photo, speech with real pauses, and an isolated analysis cache.

Every input is made here (scikit-image's astronaut photo, speech synthesized offline with
espeak-ng); nothing is downloaded and nothing is read from outside the repository.

``measured(name, value)`` records a figure that the end-to-end tests compute; the figures are
printed in a "measured figures" section at the end of the run, so a failing threshold can be read
next to the value that was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: Silence inserted between synthesized phrases (seconds); pauses longer than 300 ms are
#: what the mouth-closure acceptance check looks at.
PAUSE_SECONDS = 0.6

#: Phrases per language, spoken one by one and joined with :data:`PAUSE_SECONDS` of silence.
PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "Hello there, how are you today?",
        "I am fine, thank you very much.",
        "Let us talk about the weather.",
    ),
    "zh": (
        "你好，今天天气很好。",
        "我们一起去公园散步吧。",
        "谢谢你的帮助。",
    ),
}

_MEASUREMENTS: list[tuple[str, str, str]] = []


@dataclass(frozen=True)
class SpeechClip:
    """A WAV file of synthesized speech and what is known about it."""

    path: Path
    lang: str
    duration: float            # seconds
    pauses: tuple[tuple[float, float], ...]   # inserted silences (start, end) in seconds


# ------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def echomimic_cache_dir(tmp_path_factory) -> Path:
    """Point the analysis cache at a session folder so tests never write to the user's home."""
    path = tmp_path_factory.mktemp("echomimic-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("ECHOMIMIC_CACHE_DIR", str(path))
    yield path
    patch.undo()


# ------------------------------------------------------------------------------------------
# photos
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """scikit-image's astronaut photo (512x512 RGB; one face, lips parted over the teeth)."""
    import skimage.data

    img = np.ascontiguousarray(skimage.data.astronaut())
    img.flags.writeable = False
    return img


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory, astronaut_rgb) -> Path:
    """The astronaut photo saved as a PNG file."""
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(np.asarray(astronaut_rgb)).save(path)
    return path


# ------------------------------------------------------------------------------------------
# audio
# ------------------------------------------------------------------------------------------


def _speech_with_pauses(folder: Path, lang: str) -> SpeechClip:
    """Speak each phrase of ``lang`` with espeak-ng and join them with silences, as a WAV."""
    from echomimic.speech import synthesize, write_wav
    from echomimic.types import Audio

    parts: list[np.ndarray] = []
    pauses: list[tuple[float, float]] = []
    rate = None
    t = 0.0
    for k, phrase in enumerate(PHRASES[lang]):
        audio, _ = synthesize(phrase, lang=lang)
        rate = audio.sample_rate
        if k:
            gap = np.zeros(int(round(PAUSE_SECONDS * rate)), np.float32)
            pauses.append((t, t + len(gap) / rate))
            parts.append(gap)
            t += len(gap) / rate
        parts.append(np.asarray(audio.samples, np.float32))
        t += len(audio.samples) / rate
    samples = np.concatenate(parts)
    path = write_wav(folder / f"speech_{lang}.wav", Audio(samples=samples, sample_rate=int(rate)))
    return SpeechClip(path=path, lang=lang, duration=len(samples) / float(rate),
                      pauses=tuple(pauses))


@pytest.fixture(scope="session")
def faceless_png(tmp_path_factory) -> Path:
    """A photo with no face in it: smooth colour gradients."""
    from PIL import Image

    y, x = np.mgrid[0:240, 0:320]
    img = np.stack([x * 255 // 319, y * 255 // 239, np.full_like(x, 120)], -1).astype(np.uint8)
    path = tmp_path_factory.mktemp("photos_no_face") / "no_face.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="session")
def speech_en(tmp_path_factory) -> SpeechClip:
    """English speech (three phrases, 0.6 s of silence between them) as a 22.05 kHz WAV."""
    return _speech_with_pauses(tmp_path_factory.mktemp("speech_en"), "en")


@pytest.fixture(scope="session")
def speech_zh(tmp_path_factory) -> SpeechClip:
    """Mandarin speech (three phrases, 0.6 s of silence between them) as a 22.05 kHz WAV."""
    return _speech_with_pauses(tmp_path_factory.mktemp("speech_zh"), "zh")


@pytest.fixture(scope="session")
def short_speech(tmp_path_factory) -> SpeechClip:
    """One short English phrase (about 1.5 s), for tests that only need some speech."""
    from echomimic.speech import synthesize, write_wav

    audio, _ = synthesize("Good morning, everyone.", lang="en")
    path = write_wav(tmp_path_factory.mktemp("speech_short") / "short.wav", audio)
    return SpeechClip(path=path, lang="en", duration=audio.duration, pauses=())


@pytest.fixture(scope="session")
def make_silence(tmp_path_factory):
    """``make_silence(seconds) -> Path``: a WAV of digital silence (16 kHz mono)."""
    from echomimic.speech import write_wav
    from echomimic.types import Audio

    folder = tmp_path_factory.mktemp("silence")

    def make(seconds: float) -> Path:
        path = folder / f"silence_{seconds:g}s.wav"
        if not path.exists():
            write_wav(path, Audio(samples=np.zeros(int(round(seconds * 16000)), np.float32),
                                  sample_rate=16000))
        return path

    return make


# ------------------------------------------------------------------------------------------
# measured figures
# ------------------------------------------------------------------------------------------


@pytest.fixture
def measured(request):
    """``measured(name, value)``: record a figure for the summary printed after the run."""

    def record(name: str, value) -> None:
        if isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        _MEASUREMENTS.append((request.node.nodeid.split("::")[-1], name, text))

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _MEASUREMENTS:
        return
    terminalreporter.section("measured figures")
    width = max(len(t) for t, _, _ in _MEASUREMENTS)
    for test, name, text in _MEASUREMENTS:
        terminalreporter.write_line(f"{test:<{width}}  {name} = {text}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Free the full-size networks the golden tests share (tests/golden.py) once the last of
    them has run (their modules sort next to each other: test_golden_v1, test_golden_v2)."""
    yield
    if item.get_closest_marker("golden") and (
            nextitem is None or nextitem.get_closest_marker("golden") is None):
        import sys

        shared = sys.modules.get("golden")
        if shared is not None:
            shared.release()
