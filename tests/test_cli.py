"""Tests of the ``echomimic`` command line.

Most commands run in-process through typer's ``CliRunner``; what only the real entry point
does (one-line errors on stderr, exit codes, native log noise kept away) runs as
``python -m echomimic`` in a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner

import echomimic
from echomimic.cli import _HIDDEN_OPTIONS, app, cli_name, option_fields
from echomimic.errors import EchomimicError

FPS = 25
SECONDS = 2.0
COMMANDS = ("animate", "demo", "tts", "evaluate", "bench", "renderers", "version")

runner = CliRunner()


# ------------------------------------------------------------------------------------------
# inputs (made here: scikit-image's astronaut, espeak-ng speech)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The astronaut photo, exactly 2 s of speech, and some bad files."""
    import skimage.data
    from PIL import Image

    from echomimic.speech import synthesize, write_wav
    from echomimic.types import Audio

    d = tmp_path_factory.mktemp("cli_inputs")
    photo = d / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    gray = d / "gray.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(gray)

    audio, _ = synthesize("Hello there, how are you doing today?", lang="en")
    n = int(round(SECONDS * audio.sample_rate))
    samples = np.zeros(n, np.float32)
    k = min(n, len(audio.samples))
    samples[:k] = audio.samples[:k]
    speech = write_wav(d / "speech.wav", Audio(samples=samples, sample_rate=audio.sample_rate))

    corrupt = d / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    empty = d / "empty.wav"
    empty.write_bytes(b"")
    return {"photo": photo, "gray": gray, "speech": speech, "corrupt": corrupt, "empty": empty}


@pytest.fixture(scope="module")
def animated(inputs, tmp_path_factory) -> dict:
    """``echomimic animate --json`` on the astronaut and the 2-second speech."""
    d = tmp_path_factory.mktemp("cli_out")
    out, sheet, motion = d / "out.mp4", d / "sheet.png", d / "motion.json"
    res = runner.invoke(app, ["animate", "--image", str(inputs["photo"]), "--audio",
                              str(inputs["speech"]), "-o", str(out), "--fps", str(FPS),
                              "--preview", str(sheet), "--motion-out", str(motion), "--json"])
    assert res.exit_code == 0, res.output
    return {"out": out, "sheet": sheet, "motion": motion, "summary": json.loads(res.stdout)}


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m echomimic`` with ``args`` (no terminal, so no progress bar)."""
    env = dict(os.environ)
    env.pop("ECHOMIMIC_NATIVE_LOGS", None)
    return subprocess.run([sys.executable, "-m", "echomimic", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------------------------------
# help and option names
# ------------------------------------------------------------------------------------------


def test_help_lists_the_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.stdout
    assert set(COMMANDS) <= set(get_command(app).commands)


def test_animate_has_every_shared_option_in_kebab_case():
    """Every AnimateOptions field is an option of `animate`, named field_name with _ -> -."""
    cmd = get_command(app).commands["animate"]
    names = {opt for p in cmd.params for opt in p.opts}
    fields = [name for name, _, _ in option_fields()]
    assert {"fps", "max_side", "expression_scale", "face_index", "crf", "preset"} <= set(fields)
    for name in fields:
        assert cli_name(name) in names, name
    for extra in ("--image", "--audio", "--text", "--motion", "--output", "--motion-out",
                  "--preview", "--json", "--quiet"):
        assert extra in names
    shown = runner.invoke(app, ["animate", "--help"], terminal_width=200).stdout
    assert "--max-side" in shown and "--head-motion-scale" in shown
    for name in _HIDDEN_OPTIONS:
        assert name in fields  # only hides options that exist


def test_version():
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 0 and echomimic.__version__ in res.stdout


# ------------------------------------------------------------------------------------------
# animate, evaluate
# ------------------------------------------------------------------------------------------


def test_animate_writes_an_mp4_with_video_and_audio(animated):
    import av

    summary = animated["summary"]
    assert Path(summary["output"]) == animated["out"]
    assert summary["n_frames"] == pytest.approx(SECONDS * FPS, abs=1)
    assert summary["fps"] == FPS
    assert {"analyze_image", "analyze_audio", "motion", "render", "encode"} <= set(
        summary["timings"])
    with av.open(str(animated["out"])) as c:
        assert c.streams.video and c.streams.audio
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (summary["width"],
                                                                   summary["height"])
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == summary["n_frames"]
    assert abs(frames - SECONDS * FPS) <= 1
    assert animated["sheet"].stat().st_size > 1000
    track = echomimic.load_motion(animated["motion"])
    assert track.n_frames == frames and track.fps == FPS


def test_animate_quiet_prints_nothing(inputs, tmp_path):
    out = tmp_path / "q.mp4"
    res = runner.invoke(app, ["animate", "-i", str(inputs["photo"]), "-a", str(inputs["speech"]),
                              "-o", str(out), "--crop", "face", "--size", "128", "--quiet"])
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and out.stat().st_size > 0


def test_evaluate_json_gives_numbers(animated, inputs):
    res = runner.invoke(app, ["evaluate", str(animated["out"]), "--image", str(inputs["photo"]),
                              "--json"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)
    assert figures["n_frames"] == animated["summary"]["n_frames"]
    assert figures["has_audio"] is True
    assert figures["face_found_share"] > 0.9
    r = figures["lipsync_loudness_r"]
    assert isinstance(r, float) and -1.0 <= r <= 1.0
    assert math.isfinite(figures["identity_mean"])
    table = runner.invoke(app, ["evaluate", str(animated["out"]), "--no-identity"],
                          terminal_width=200)
    assert table.exit_code == 0 and "lipsync_loudness_r" in table.stdout


# ------------------------------------------------------------------------------------------
# errors: one line on stderr, exit code 2, no traceback, no output file
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing image", "no face", "corrupt audio", "empty audio",
                                  "fps 0", "unknown crop"])
def test_bad_input_is_one_line_and_exit_2(case, inputs, tmp_path):
    out = tmp_path / "bad.mp4"
    photo, speech = str(inputs["photo"]), str(inputs["speech"])
    args = {
        "missing image": ["-i", str(tmp_path / "nope.png"), "-a", speech],
        "no face": ["-i", str(inputs["gray"]), "-a", speech],
        "corrupt audio": ["-i", photo, "-a", str(inputs["corrupt"])],
        "empty audio": ["-i", photo, "-a", str(inputs["empty"])],
        "fps 0": ["-i", photo, "-a", speech, "--fps", "0"],
        "unknown crop": ["-i", photo, "-a", speech, "--crop", "banana"],
    }[case]
    proc = _cli("animate", *args, "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ") + 5
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


def test_usage_error_exits_2():
    proc = _cli("animate", "--image", "x.png", "--fps", "fast", "-o", "o.mp4")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_interrupt_exits_130(inputs, tmp_path, monkeypatch):
    import echomimic.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(echomimic.pipeline, "animate", interrupted)
    res = runner.invoke(app, ["animate", "-i", str(inputs["photo"]), "-a",
                              str(inputs["speech"]), "-o", str(tmp_path / "o.mp4")])
    assert res.exit_code == 130
    assert res.stderr.strip() == "error: interrupted"


def test_user_error_from_the_engine_is_one_line(inputs, tmp_path, monkeypatch):
    import echomimic.pipeline

    def fails(*args, **kwargs):
        raise EchomimicError("the photo is\nbroken", code="x")

    monkeypatch.setattr(echomimic.pipeline, "animate", fails)
    res = runner.invoke(app, ["animate", "-i", str(inputs["photo"]), "-a",
                              str(inputs["speech"]), "-o", str(tmp_path / "o.mp4")])
    assert res.exit_code == 2
    assert res.stderr == "error: the photo is broken\n"


# ------------------------------------------------------------------------------------------
# tts, renderers, bench, demo inputs
# ------------------------------------------------------------------------------------------


def test_tts_writes_a_wav(tmp_path):
    out = tmp_path / "hello.wav"
    res = runner.invoke(app, ["tts", "Hello world, this is a test.", "--lang", "en", "-o",
                              str(out), "--rate", "160"])
    assert res.exit_code == 0, res.output
    with wave.open(str(out)) as w:
        rate, n = w.getframerate(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), "<i2")
    assert rate == 22050 and 1.0 < n / rate < 5.0
    assert np.abs(pcm).max() > 3000
    bad = runner.invoke(app, ["tts", "hello", "--lang", "klingon", "-o", str(tmp_path / "k.wav")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")


def test_renderers_lists_warp():
    res = runner.invoke(app, ["renderers", "--json"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    assert found["warp"]["available"] is True
    table = runner.invoke(app, ["renderers"], terminal_width=200)
    assert "warp" in table.stdout


def test_bench_json_reports_stages_and_realtime_factor():
    res = runner.invoke(app, ["bench", "--seconds", "1", "--sizes", "96", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    (case,) = report["cases"]
    assert (case["width"], case["height"]) == (96, 96) and case["n_frames"] == 25
    assert {"analyze_image", "analyze_audio", "motion", "render", "encode"} <= set(
        case["ms_per_frame"])
    assert case["realtime_factor"] > 0 and report["machine"]["cores"] >= 1
    bad = runner.invoke(app, ["bench", "--sizes", "big"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")


def test_bench_1080p_frame_is_made_from_the_photo():
    from echomimic.bench import make_frame

    frame, opts = make_frame("1080p")
    assert frame.shape == (1080, 1920, 3) and frame.dtype == np.uint8
    assert opts["crop"] == "none"


def test_demo_inputs_are_made_offline(tmp_path):
    from echomimic.demo import PAUSE_SECONDS, make_demo_inputs

    made = make_demo_inputs(tmp_path / "demo")
    assert made.image.exists() and made.audio.exists()
    assert 6.0 < made.audio_seconds < 11.0
    with wave.open(str(made.audio)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32)
    # the pause between the two sentences: a run of digital silence of PAUSE_SECONDS
    silent = np.abs(pcm) < 1
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    runs = [(s, e) for s, e in zip(edges[::2], edges[1::2])]
    longest = max(e - s for s, e in runs)
    assert longest >= 0.9 * PAUSE_SECONDS * rate
    start = next(s for s, e in runs if e - s == longest)
    assert 0.2 < start / len(pcm) < 0.8


def test_demo_renders_video_and_contact_sheet(tmp_path):
    import av

    folder = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--folder", str(folder), "-o", str(folder / "demo.mp4"),
                              "--preview", str(folder / "demo.png")], terminal_width=200)
    assert res.exit_code == 0, res.output
    video, sheet = folder / "demo.mp4", folder / "demo.png"
    assert str(video) in res.stdout and str(sheet) in res.stdout
    assert sheet.stat().st_size > 1000
    with av.open(str(video)) as c:
        assert c.streams.video and c.streams.audio
        assert float(c.duration) / 1e6 > 6.0
