"""Shared fixtures: a portrait photo, speech with real pauses, and an isolated analysis cache.

Every input is made here (scikit-image's astronaut photo, speech synthesized offline with
espeak-ng); nothing is downloaded and nothing is read from outside the repository.

``measured(name, value)`` records a figure that the end-to-end tests compute; the figures are
printed in a "measured figures" section at the end of the run, so a failing threshold can be read
next to the value that was measured.

``make test`` runs the suite in parallel processes (pytest-xdist, ``-n auto``).
Tests marked ``realtime`` (live sessions paced by the wall clock, browsers) run alone: while one
runs, no other test runs in another process (see :func:`pytest_runtest_protocol`). A module's
tests run in one process, and so do the golden tests, which share one network build.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
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

#: In a parallel run each test process computes on one core (the processes fill the machine;
#: thread pools on top of them only contend).
PARALLEL = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if PARALLEL:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)

#: Prefix of the ``user_properties`` entries that carry a measured figure to the summary (they
#: travel with the test report, so figures measured in a parallel worker reach the summary too).
_MEASURED = "measured: "


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
        request.node.user_properties.append((_MEASURED + name, text))

    return record


def pytest_runtest_logreport(report) -> None:
    if report.when != "teardown":
        return
    test = report.nodeid.split("::")[-1]
    for key, text in report.user_properties:
        if isinstance(key, str) and key.startswith(_MEASURED):
            _MEASUREMENTS.append((test, key[len(_MEASURED):], text))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _MEASUREMENTS:
        return
    terminalreporter.section("measured figures")
    width = max(len(t) for t, _, _ in _MEASUREMENTS)
    for test, name, text in _MEASUREMENTS:
        terminalreporter.write_line(f"{test:<{width}}  {name} = {text}")


# ------------------------------------------------------------------------------------------
# parallel runs
# ------------------------------------------------------------------------------------------


def pytest_xdist_make_scheduler(config, log):
    """Parallel runs hand out whole modules (their module-scoped fixtures, such as a rendered
    clip or a running service, are then made once), and the two golden modules together (they
    share one build of the full-size networks, see tests/golden.py)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "golden" if Path(module).name.startswith("test_golden") else module

    return ModuleScheduling(config, log)


@contextmanager
def _cpu_turn(config, exclusive: bool):
    """Share the machine between parallel test processes, or have it alone.

    Two lock files of the run: a test takes ``cpu`` shared and a ``realtime`` test takes it
    exclusive, so it waits for the tests running elsewhere to end and no other test starts
    while it runs. ``gate`` gives the exclusive request precedence: a test passes through it
    (shared) before taking ``cpu``, and the exclusive request holds it, so tests arriving
    in the meantime wait behind it instead of overtaking it."""
    # a worker's temporary folder lies in the run's, which pytest removes after a few runs
    base = config.option.basetemp
    folder = Path(base).parent if base else Path(tempfile.gettempdir())
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "run")
    with open(folder / f"echomimic-tests-{run}.gate", "a") as gate, \
            open(folder / f"echomimic-tests-{run}.cpu", "a") as cpu:
        if exclusive:
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(cpu, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(cpu, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(cpu, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """In a parallel run, a ``realtime`` test has the machine to itself (set-up, call and
    tear-down); other tests share it."""
    if not PARALLEL:
        yield
        return
    with _cpu_turn(item.config, item.get_closest_marker("realtime") is not None):
        yield


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
