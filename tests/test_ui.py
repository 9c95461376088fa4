"""The web UI without a browser: option controls, the face preview, jobs in this process and on
a real REST server (uvicorn on 127.0.0.1), the progress feed and the error messages.

The browser itself is exercised in ``test_ui_browser.py``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the web UI needs its extra: pip install 'echomimic[ui]'")

from echomimic.errors import EchomimicError, InvalidOption, NoFaceFound  # noqa: E402
from echomimic.options import options_for  # noqa: E402
from echomimic.pipeline import AnimateOptions  # noqa: E402
from echomimic.ui.backend import (Job, LocalBackend, RemoteBackend, ServerError,  # noqa: E402
                                  overall_fraction)
from echomimic.ui.options import (GROUP_MODES, MODES, SERVER_ONLY, collect_options,  # noqa: E402
                                  option_specs)
from echomimic.ui.preview import CHOSEN, portrait_preview  # noqa: E402

SMALL = {"crop": "face", "size": 128}


# ------------------------------------------------------------------------------------------------
# options: generated from AnimateOptions
# ------------------------------------------------------------------------------------------------


def test_every_animate_option_has_a_control_with_its_default():
    specs = option_specs()
    names = [o.name for o in options_for("ui")]      # the table says which options the UI shows
    assert {s.name for s in specs} == set(names)
    defaults = AnimateOptions()
    for s in specs:
        assert s.default == getattr(defaults, s.name), s.name
        if s.widget == "checkboxes":
            assert ",".join(s.ui_default()) == s.default
        # each control is used by at least one mode, and only by real modes
        assert s.modes and set(s.modes) <= set(MODES)
    # lang is the speech language in the audio tabs and the text's language in the text tab
    assert {s.group for s in specs if s.name == "lang"} == {"speech", "voice"}


def test_help_text_comes_from_the_command_line():
    from echomimic.cli import OPTION_HELP

    for s in option_specs():
        if s.name in OPTION_HELP:
            assert s.info and "--" not in s.info, s.name
            assert s.info.split()[0] == OPTION_HELP[s.name].split()[0], s.name


def test_remote_page_leaves_out_what_the_server_decides():
    names = {s.name for s in option_specs(remote=True)}
    assert names == {o.name for o in options_for("ui")} - SERVER_ONLY


def test_choices_match_what_the_pipeline_accepts():
    from echomimic.motion.emotion import EMOTIONS
    from echomimic.speech.textlang import voice_for

    specs = {(s.name, s.group): s for s in option_specs()}
    assert tuple(specs["emotion", "main"].choices) == tuple(EMOTIONS)
    for _, code in specs["lang", "voice"].choices:
        if code != "auto":
            voice_for(code)                     # raises for a code without a voice
    for emotion in EMOTIONS:                    # every choice passes the pipeline's checks
        AnimateOptions.from_kwargs(emotion=emotion)
    for loop in specs["loop", "video"].choices:
        AnimateOptions.from_kwargs(loop=loop)
    lazy = {(s.name, s.group): s for s in option_specs(lazy=True) if s.lazy}
    assert ("lang", "voice") in lazy
    assert lazy["lang", "voice"].resolve_choices() == specs["lang", "voice"].choices


def test_untouched_controls_give_no_options():
    specs = option_specs()
    values = [s.ui_default() for s in specs]
    for mode in MODES:
        assert collect_options(specs, values, mode) == {}


def test_changed_controls_become_typed_options_for_their_mode():
    specs = option_specs()
    changed = {"seed": 7.0, "fps": 12, "crop": "face", "blink_rate": 20, "drive": ["head", "lips"],
               "relative": False, "voice": "en-us+f3", "emotion": "happy", "weights": ""}
    values = [changed.get(s.name, s.ui_default()) for s in specs]
    audio = collect_options(specs, values, "audio")
    assert audio == {"seed": 7, "fps": 12.0, "crop": "face", "blink_rate": 20.0,
                     "emotion": "happy"}
    assert isinstance(audio["seed"], int) and isinstance(audio["fps"], float)
    video = collect_options(specs, values, "video")
    assert video["drive"] == "head,lips" and video["relative"] is False
    assert "voice" not in video
    text = collect_options(specs, values, "text")
    assert text["voice"] == "en-us+f3" and "drive" not in text
    for mode in MODES:                   # what the page collects, the pipeline accepts
        AnimateOptions.from_kwargs(**collect_options(specs, values, mode))
    # a value the pipeline refuses is passed on, so that the pipeline names the problem
    bad = [[] if s.name == "drive" else s.ui_default() for s in specs]
    with pytest.raises(InvalidOption, match="drive"):
        AnimateOptions.from_kwargs(**collect_options(specs, bad, "video"))
    assert GROUP_MODES["video"] == ("video", "mixed")


def test_a_control_drawn_in_one_tab_serves_only_that_mode():
    import dataclasses

    drive = next(s for s in option_specs() if s.name == "drive")
    in_video = dataclasses.replace(drive, only_modes=("video",))
    in_mixed = dataclasses.replace(drive, only_modes=("mixed",))
    values = [["head"], ["lips", "eyes"]]
    assert collect_options([in_video, in_mixed], values, "video") == {"drive": "head"}
    assert collect_options([in_video, in_mixed], values, "mixed") == {"drive": "lips,eyes"}
    assert collect_options([in_video, in_mixed], values, "audio") == {}


# ------------------------------------------------------------------------------------------------
# the face preview
# ------------------------------------------------------------------------------------------------


def test_preview_marks_the_detected_face(astronaut_png):
    res = portrait_preview(astronaut_png)
    assert res.ok and res.faces == 1 and res.size == (512, 512)
    assert "1 face found" in res.message
    img = res.image
    assert img.shape == (512, 512, 3)
    green = np.all(img == np.array(CHOSEN, np.uint8), axis=-1)
    ys, xs = np.nonzero(green)
    assert len(xs) > 100
    # the green box sits on the face (the astronaut's face is in the upper middle)
    assert 150 < xs.mean() < 260 and 40 < ys.mean() < 200
    cropped = portrait_preview(astronaut_png, crop="face", size=256)
    assert cropped.ok and cropped.size == (256, 256) and cropped.image.shape[:2] == (256, 256)


def test_preview_says_when_there_is_no_face(faceless_png):
    res = portrait_preview(faceless_png)
    assert not res.ok and res.image is None and res.code == NoFaceFound.code
    assert "no face found" in res.message
    bad = portrait_preview(b"not an image")
    assert not bad.ok and bad.code == "image_unreadable"


def test_preview_handler_messages(astronaut_png, faceless_png):
    from echomimic.ui.app import preview_handler

    image, text = preview_handler(str(astronaut_png), "none", 512, 1920, 0)
    assert image is not None and text.startswith("✔")
    image, text = preview_handler(str(faceless_png), "none", 512, 1920, 0)
    assert image is None and "No face found" in text
    image, text = preview_handler(str(astronaut_png), "none", 512, 1920, 3)
    assert image is None and "face_index 3 is out of range" in text
    assert preview_handler(None, "none", 512, 1920, 0)[0] is None


# ------------------------------------------------------------------------------------------------
# jobs in this process
# ------------------------------------------------------------------------------------------------


class RecordingProgress:
    """Stands in for gr.Progress: records (fraction, description)."""

    def __init__(self):
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction, desc=None, **_):
        self.calls.append((float(fraction), desc))


def test_local_job_renders_with_a_stage_progress_bar(tmp_path, astronaut_png, short_speech):
    from echomimic.motion import load_motion
    from echomimic.ui.app import run_job

    progress = RecordingProgress()
    job = Job(mode="audio", image=str(astronaut_png), audio=str(short_speech.path),
              video="ignored-in-audio-mode.mp4", options=dict(SMALL, seed=3))
    res = run_job(LocalBackend(tmp_path), job, progress)
    assert res.video.is_file() and res.video.parent.parent == tmp_path
    assert res.summary["width"] == 128 and res.summary["height"] == 128
    assert abs(res.summary["duration"] - short_speech.duration) <= 1 / 25 + 1e-6
    track = load_motion(res.motion)
    assert track.n_frames == res.summary["n_frames"] and track.meta["seed"] == 3
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    labels = [d for _, d in progress.calls]
    for stage in ("Analyzing the photo and the speech", "Making the motion", "Rendering frames",
                  "Done"):
        assert stage in labels
    renders = [f for f, d in progress.calls if d == "Rendering frames"]
    assert len(renders) > 3 and renders[0] < 0.5 < renders[-1]
    assert "128x128" in res.describe() and "frames at 25 fps" in res.describe()


def test_text_job_speaks_the_text(tmp_path, astronaut_png):
    job = Job(mode="text", image=str(astronaut_png), text="Hello there.",
              options=dict(SMALL, lang="en", voice="en-us+f3"))
    res = LocalBackend(tmp_path).run(job)
    assert res.video.is_file() and 0.5 < res.summary["duration"] < 3.0
    assert res.summary["lang"] == "en"


def test_user_errors_are_one_line_page_messages(tmp_path, astronaut_png, faceless_png,
                                                short_speech):
    from echomimic.ui.app import run_job

    backend = LocalBackend(tmp_path)
    job = Job(mode="audio", image=str(faceless_png), audio=str(short_speech.path))
    with pytest.raises(gr.Error) as err:
        run_job(backend, job)
    assert "no face found in the image" in err.value.message
    assert "\n" not in err.value.message and "Traceback" not in err.value.message
    with pytest.raises(gr.Error, match="this mode needs a speech recording"):
        run_job(backend, Job(mode="audio", image=str(astronaut_png)))
    with pytest.raises(gr.Error, match="upload a portrait photo"):
        run_job(backend, Job(mode="text", image=None, text="hi"))
    with pytest.raises(gr.Error, match="fps must be between 1 and 60"):
        run_job(backend, Job(mode="text", image=str(astronaut_png), text="hi",
                             options={"fps": 100}))


def test_unexpected_failures_do_not_show_a_traceback(tmp_path):
    from echomimic.ui.app import run_job

    class Broken:
        remote = False

        def run(self, job, progress):
            raise ZeroDivisionError("secret internals")

    with pytest.raises(gr.Error) as err:
        run_job(Broken(), Job(mode="text", image="x.png", text="hi"))
    assert "secret internals" not in err.value.message
    assert "server's log" in err.value.message


def test_overall_progress_never_goes_back():
    seen = 0.0
    for stage, frac in [("analyze", 0), ("analyze", 1), ("motion", 1), ("render", 0.1),
                        ("render", 0.05), ("render", 1), ("done", 1)]:
        new = overall_fraction(stage, frac, seen)
        assert new >= seen
        seen = new
    assert seen == 1.0


# ------------------------------------------------------------------------------------------------
# jobs on a REST server
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory):
    """``echomimic serve`` (a real process, one worker) on a free port of 127.0.0.1, with a key
    made by ``echomimic keys create``."""
    pytest.importorskip("uvicorn", reason="the REST service needs its extra")
    pytest.importorskip("fastapi", reason="the REST service needs its extra")
    import subprocess
    import sys

    from service_harness import service_env, start_api

    data = tmp_path_factory.mktemp("ui_service")
    env = service_env(data, ECHOMIMIC_AUTH="on")
    made = subprocess.run([sys.executable, "-m", "echomimic", "keys", "create", "--name", "ui"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    proc, url = start_api(env, data, workers=1)
    try:
        yield url, key
    finally:
        proc.stop(20)


def test_remote_job_runs_on_the_server(tmp_path, rest_server, astronaut_png, short_speech,
                                       monkeypatch):
    from echomimic.media import probe_video
    from echomimic.ui.app import run_job

    url, key = rest_server
    monkeypatch.setenv("ECHOMIMIC_API_KEY", key)
    backend = RemoteBackend(url, root=tmp_path, poll_interval=0.1, max_wait=120)
    progress = RecordingProgress()
    job = Job(mode="audio", image=str(astronaut_png), audio=str(short_speech.path),
              options=dict(SMALL, seed=1))
    res = run_job(backend, job, progress)
    assert res.video.is_file() and res.motion is None
    info = probe_video(res.video)
    assert (info["width"], info["height"]) == (128, 128)
    assert abs(float(info["duration"]) - short_speech.duration) < 0.15
    assert res.summary["n_frames"] == round(short_speech.duration * 25)
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "Done" in [d for _, d in progress.calls]


def test_remote_errors_keep_the_servers_message(tmp_path, rest_server, faceless_png,
                                                astronaut_png, short_speech, monkeypatch):
    url, key = rest_server
    monkeypatch.delenv("ECHOMIMIC_API_KEY", raising=False)
    backend = RemoteBackend(url, root=tmp_path, poll_interval=0.1, max_wait=120)
    job = Job(mode="audio", image=str(faceless_png), audio=str(short_speech.path))
    with pytest.raises(EchomimicError) as err:
        backend.run(job, api_key=key)
    assert err.value.code == "no_face" and "no face found" in err.value.message
    good = Job(mode="audio", image=str(astronaut_png), audio=str(short_speech.path))
    with pytest.raises(EchomimicError) as err:
        backend.run(good, api_key="em_wrong")
    assert err.value.code == "unauthorized"
    with pytest.raises(ServerError, match="cannot reach the server"):
        RemoteBackend("http://127.0.0.1:9", root=tmp_path).run(good)
    with pytest.raises(InvalidOption):
        RemoteBackend("ftp://example")


# ------------------------------------------------------------------------------------------------
# the page and the command
# ------------------------------------------------------------------------------------------------


def test_page_builds_with_all_controls(astronaut_png):
    from echomimic.ui.app import build_app

    demo = build_app(LocalBackend())
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    for elem in ("portrait", "face-preview", "face-status", "generate", "result",
                 "download-video", "download-motion", "audio-input", "video-input",
                 "mixed-audio", "mixed-video", "text-input", "prompt"):
        assert elem in ids, elem
    for f in options_for("ui"):
        assert any(i and i.startswith("opt-") and i.endswith(f"-{f.name}") for i in ids), f.name
    assert any(d.get("api_name") == "generate" for d in config["dependencies"])
    remote = build_app(RemoteBackend("http://127.0.0.1:8000"))
    rids = {c["props"].get("elem_id") for c in remote.get_config_file()["components"]}
    assert not any(i and i.endswith("-max_pixels") for i in rids)


def test_ui_command_help():
    from typer.testing import CliRunner

    from echomimic.cli import app

    out = CliRunner().invoke(app, ["ui", "--help"])
    assert out.exit_code == 0
    for flag in ("--port", "--host", "--server"):
        assert flag in out.output


def test_demo_inputs_are_made_offline(tmp_path, monkeypatch):
    from echomimic.ui.app import demo_inputs

    monkeypatch.setenv("ECHOMIMIC_UI_DIR", str(tmp_path))
    image, audio = demo_inputs()
    assert Path(image).is_file() and Path(audio).is_file()
    assert Path(image).parent == tmp_path / "demo"
    res = portrait_preview(image)
    assert res.ok
    assert json.dumps(res.message)
