"""The command line with the other drivers: a driving video, motion templates, prompts,
emotion and transcripts (one pipeline underneath: the same options as the Python API)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from echomimic.cli import app

runner = CliRunner()
FPS = 25


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut_rgb) -> dict[str, Path]:
    """The astronaut photo, 1.6 s of speech, and a 2 s driving video of the astronaut turning
    her head with a tone as its sound."""
    from PIL import Image

    from echomimic.analysis import analyze_face, prepare_portrait
    from echomimic.media import Mp4Writer
    from echomimic.render.warp.renderer import WarpRenderer
    from echomimic.speech import synthesize, write_wav
    from echomimic.types import Audio

    d = tmp_path_factory.mktemp("drivers")
    photo = d / "astronaut.png"
    Image.fromarray(np.array(astronaut_rgb)).save(photo)
    audio, _ = synthesize("Hello there, how are you?", lang="en")
    speech = write_wav(d / "speech.wav", audio)
    rgb = np.array(astronaut_rgb)
    p = prepare_portrait(rgb, analyze_face(rgb), crop="face", size=256)
    r = WarpRenderer(p)
    n = 2 * FPS
    tone = Audio((0.2 * np.sin(2 * np.pi * 220 * np.arange(2 * 16000) / 16000)).astype(np.float32), 16000)
    video = d / "driver.mp4"
    with Mp4Writer(video, 256, 256, FPS, audio=tone) as w:
        for i in range(n):
            w.write(r.render({"yaw": 8.0 * np.sin(2 * np.pi * i / n), "jawOpen": 0.3 * (i % 10 < 5)}))
    return {"photo": photo, "speech": speech, "video": video, "dir": d}


def _animate(*args: str) -> "object":
    return runner.invoke(app, ["animate", *args, "--crop", "face", "--size", "256", "--quiet"])


def test_driving_video_keeps_its_sound(files):
    out = files["dir"] / "vid.mp4"
    res = _animate("--image", str(files["photo"]), "--video", str(files["video"]), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert _frames(out) == 2 * FPS          # as long as the video
    assert _has_audio(out)                  # its own sound


def test_video_with_audio_takes_the_audio_length(files):
    from echomimic.media import probe_video

    out = files["dir"] / "mixed.mp4"
    res = _animate("--image", str(files["photo"]), "--video", str(files["video"]),
                   "--audio", str(files["speech"]), "--drive", "head,eyes", "--loop", "repeat",
                   "-o", str(out))
    assert res.exit_code == 0, res.output
    from echomimic.media import load_audio

    dur = load_audio(files["speech"]).duration
    assert abs(probe_video(out)["duration"] - dur) <= 1.5 / FPS


def test_extract_motion_then_replay_with_speech(files):
    motion = files["dir"] / "m.json"
    res = runner.invoke(app, ["extract-motion", str(files["video"]), "-o", str(motion),
                              "--fps", str(FPS)])
    assert res.exit_code == 0, res.output
    doc = json.loads(motion.read_text())
    assert doc["schema"] == "echomimic.motion/1" and len(doc["frames"]) == 2 * FPS
    assert "yaw" in doc["channels"]
    yaw = np.array(doc["frames"])[:, doc["channels"].index("yaw")]
    assert yaw.max() - yaw.min() > 5          # the driver turned by +-8 degrees
    out = files["dir"] / "replay.mp4"
    res = _animate("--image", str(files["photo"]), "--motion", str(motion),
                   "--audio", str(files["speech"]), "-o", str(out))
    assert res.exit_code == 0, res.output


def test_prompt_warns_about_what_it_does_not_understand(files):
    out = files["dir"] / "prompt.mp4"
    res = runner.invoke(app, ["animate", "--image", str(files["photo"]), "--audio",
                              str(files["speech"]), "--prompt", "smiles, then juggles",
                              "--emotion", "happy", "-o", str(out), "--crop", "face",
                              "--size", "256", "--json"])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "juggles" in res.output
    assert out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--emotion", "ecstatic"], "emotion"),
    (["--drive", "feet"], "drive"),
    (["--loop", "bounce"], "loop"),
    (["--transcript", "hello"], "transcript"),     # a transcript needs --audio
])
def test_bad_driver_options_are_one_line_errors(files, args, needle):
    base = ["--image", str(files["photo"]), "-o", str(files["dir"] / "bad.mp4")]
    if args[0] != "--transcript":
        base += ["--audio", str(files["speech"])]
    else:
        base += ["--text", "hello"]
    res = runner.invoke(app, ["animate", *base, *args])
    assert res.exit_code == 2
    assert needle in res.output.lower()
    assert "Traceback" not in res.output


def test_corrupt_video_is_a_clear_error(files):
    bad = files["dir"] / "bad_video.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    res = _animate("--image", str(files["photo"]), "--video", str(bad), "-o",
                   str(files["dir"] / "x.mp4"))
    assert res.exit_code == 2
    assert "Traceback" not in res.output and "video" in res.output.lower()
