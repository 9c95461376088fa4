"""The echomimic-v2 renderer end to end with tiny rule weights, its weights folder, errors and fronts.

The tiny networks have the official structure with few channels and rule weights, so frames are
noise by construction: these tests check the plumbing (weights folder, hand pictures from a pose
file, the crop, windows, looping, audio features, both samplers, decode, paste-back, audio mux).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from echomimic.errors import MotionError, RendererUnavailable  # noqa: E402
from echomimic.render.neural.weights import WeightsError, make_rule_weights, resolve  # noqa: E402


@pytest.fixture(scope="module")
def v2_weights(tmp_path_factory) -> Path:
    return make_rule_weights(tmp_path_factory.mktemp("v2_small"), "small", variants=("", "acc"), model="v2")


def _hand(cx: float, cy: float, size: float = 0.08) -> np.ndarray:
    """(21, 3) an open hand around (cx, cy), normalised, score 0.9."""
    pts = [(cx, cy + size)]
    for f in range(5):
        ang = np.pi * (0.15 + 0.175 * f)
        for k in range(1, 5):
            r = size * (0.5 + 0.35 * k)
            pts.append((cx - np.cos(ang) * r, cy + size - np.sin(ang) * r))
    return np.concatenate([np.array(pts), np.full((21, 1), 0.9)], axis=1)


@pytest.fixture(scope="module")
def pose_file(tmp_path_factory) -> Path:
    """An ``echomimic.pose/1`` NPZ: three frames (12 fps) of two hands moving across the lower
    part of the photo (body and face points absent: score 0)."""
    frames = [np.stack([_hand(0.3 + 0.05 * i, 0.8), _hand(0.7 - 0.05 * i, 0.8)]) for i in range(3)]
    path = tmp_path_factory.mktemp("pose") / "hands.npz"
    np.savez(path, hands=np.stack(frames).astype(np.float32), body=np.zeros((3, 18, 3), np.float32),
             face=np.zeros((3, 68, 3), np.float32), fps=np.float64(12.0), width=np.int64(512),
             height=np.int64(512), schema=np.str_("echomimic.pose/1"), layout=np.str_("dwpose"))
    return path


@pytest.fixture(scope="module")
def half_second(tmp_path_factory, short_speech) -> Path:
    from echomimic.media import load_audio
    from echomimic.speech import write_wav
    from echomimic.types import Audio

    a = load_audio(short_speech.path, sample_rate=16000, max_duration=None)
    path = tmp_path_factory.mktemp("speech_half") / "half.wav"
    return write_wav(path, Audio(samples=np.asarray(a.samples[:8000], np.float32), sample_rate=16000))


def _probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return {"frames": len(frames), "audio": len(c.streams.audio), "w": v.codec_context.width,
                "h": v.codec_context.height, "first": frames[0]}


# ------------------------------------------------------------------------------------------------
# weights folder


def test_v2_folder_layout_and_variants(v2_weights):
    files = resolve(v2_weights, model="v2")
    assert files.variant == "" and files.face_locator.name == "pose_encoder.pth"
    assert files.whisper.relative_to(v2_weights).as_posix() == "audio_processor/tiny.pt"
    acc = resolve(v2_weights, "acc", model="v2")
    assert (acc.denoising.name, acc.motion.name) == ("denoising_unet_acc.pth", "motion_module_acc.pth")
    assert acc.reference == files.reference and acc.face_locator == files.face_locator


def test_missing_file_one_line_cli_exit_2(v2_weights, tmp_path, astronaut_png, half_second):
    broken = tmp_path / "broken"
    shutil.copytree(v2_weights, broken)
    (broken / "pose_encoder.pth").unlink()
    with pytest.raises(WeightsError) as err:
        resolve(broken, model="v2")
    assert "pose_encoder.pth" in str(err.value) and "EchoMimic V2" in str(err.value)
    assert isinstance(err.value, RendererUnavailable)

    from typer.testing import CliRunner

    from echomimic.cli import app

    res = CliRunner().invoke(app, ["animate", "-i", str(astronaut_png), "--audio", str(half_second),
                                   "--renderer", "echomimic-v2", "--weights", str(broken),
                                   "-o", str(tmp_path / "x.mp4")])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "pose_encoder.pth" in lines[0], res.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_acc_weights_missing_are_named(v2_weights, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(v2_weights, part)
    (part / "motion_module_acc.pth").unlink()
    resolve(part, model="v2")                               # the standard weights are complete
    with pytest.raises(WeightsError, match="motion_module_acc.pth"):
        resolve(part, "acc", model="v2")


def test_corrupt_and_non_tensor_pickles_are_refused(v2_weights, tmp_path):
    from echomimic.render.neural.models import load_networks

    bad = tmp_path / "bad"
    shutil.copytree(v2_weights, bad)
    (bad / "pose_encoder.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="pose_encoder.pth"):
        load_networks(bad, model="v2", with_vae=False)
    torch.save({"conv_in.weight": "a string, not a tensor"}, str(bad / "pose_encoder.pth"))
    with pytest.raises(WeightsError, match="not tensors"):
        load_networks(bad, model="v2", with_vae=False)
    torch.save({"conv_in.weight": Path("/x")}, str(bad / "pose_encoder.pth"))   # a class: weights_only refuses
    with pytest.raises(WeightsError, match="cannot read"):
        load_networks(bad, model="v2", with_vae=False)


def test_pose_encoder_shape_mismatch_is_reported(v2_weights, tmp_path):
    from echomimic.render.neural.models import load_networks

    bad = tmp_path / "v1pose"
    shutil.copytree(v2_weights, bad)
    state = torch.load(str(bad / "pose_encoder.pth"), weights_only=True)
    state["conv_in.weight"] = state["conv_in.weight"][:, :1]         # a V1 face locator
    torch.save(state, str(bad / "pose_encoder.pth"))
    with pytest.raises(WeightsError, match=r"conv_in.weight .*!= \(16, 3, 3, 3\)"):
        load_networks(bad, model="v2", with_vae=False)


def test_safetensors_copies_load(tmp_path):
    from echomimic.render.neural.models import load_networks

    root = make_rule_weights(tmp_path / "st", "small", model="v2", fmt="safetensors")
    nets = load_networks(root, model="v2", with_vae=False)
    assert nets.face_locator.conv_in.weight.shape[1] == 3
    assert not list(root.rglob("*.pth")) and not list(root.rglob("*.pt"))


# ------------------------------------------------------------------------------------------------
# pose input


def test_pose_file_formats_and_errors(tmp_path, pose_file):
    from echomimic.render.neural.hands import read_hands

    hands, fps = read_hands(pose_file)
    assert hands.shape == (3, 2, 21, 3) and fps == 12.0
    js = tmp_path / "p.json"
    frames = [{"body": [[0, 0, 0]] * 18, "hands": h.tolist(), "face": [[0, 0, 0]] * 68} for h in hands]
    js.write_text(json.dumps({"schema": "echomimic.pose/1", "fps": 25, "width": 512, "height": 512,
                              "layout": "dwpose", "frames": frames}))
    h2, f2 = read_hands(js)
    assert np.allclose(h2, hands, atol=1e-5) and f2 == 25.0
    bad = [{"body": [[0, 0, 0]] * 18, "hands": [[1, 2, 3]], "face": [[0, 0, 0]] * 68}]
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "echomimic.pose/1", "fps": 25, "width": 512,
                                                   "height": 512, "layout": "dwpose", "frames": bad}))
    with pytest.raises(MotionError):
        read_hands(tmp_path / "bad.json")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MotionError):
        read_hands(tmp_path / "obj.npy")


def _portrait(astronaut_png):
    from echomimic.pipeline import AnimateOptions, load_portrait

    return load_portrait(astronaut_png, AnimateOptions(max_side=256))


def test_pose_pictures_loop_and_follow_the_file(v2_weights, astronaut_png, pose_file):
    from echomimic.render.neural import EchoMimicV2Renderer
    from echomimic.types import MotionTrack

    portrait = _portrait(astronaut_png)
    r = EchoMimicV2Renderer(portrait, weights=v2_weights, resolution=64, pose=pose_file)
    x0, y0, side, _ = r.box
    h, w = portrait.image.shape[:2]
    assert 0 <= x0 and 0 <= y0 and x0 + side <= w and y0 + side <= h and r.work == (64, 64)
    pics = r.pose_pictures(MotionTrack.neutral(6, 12.0), 12.0)(list(range(6)))
    assert pics.shape == (6, 64, 64, 3) and pics.dtype == np.uint8
    assert all(p.any() for p in pics)
    assert np.array_equal(pics[0], pics[3]) and np.array_equal(pics[2], pics[5])   # 3 pose frames loop
    assert not np.array_equal(pics[0], pics[1])                                     # the hands move
    # drawn where the file puts them: the hands are in the lower part of the photo
    rows = np.nonzero(pics[0].any(axis=(1, 2)))[0]
    y_photo = y0 + rows.mean() * side / 64
    assert y_photo > 0.6 * h
    # the pose sequence is timed by its own fps: at 24 fps output each pose frame lasts 2 frames
    slow = r.pose_pictures(MotionTrack.neutral(4, 24.0), 24.0)(list(range(4)))
    assert np.array_equal(slow[0], slow[1]) and np.array_equal(slow[1 * 2], pics[1])


def test_crop_none_keeps_the_photo_aspect(v2_weights, astronaut_png):
    from echomimic.render.neural import EchoMimicV2Renderer
    from echomimic.types import Portrait

    img = np.zeros((96, 160, 3), np.uint8) + 100
    portrait = Portrait(image=img, landmarks=np.zeros((478, 3), np.float32), face_box=(60, 10, 100, 50),
                        person_mask=np.ones(img.shape[:2], np.float32))
    r = EchoMimicV2Renderer(portrait, weights=v2_weights, resolution=80, crop="none")
    assert r.box == (0, 0, 160, 96) and r.work == (80, 48)
    r2 = EchoMimicV2Renderer(portrait, weights=v2_weights, resolution=80)
    assert r2.box[2] == r2.box[3] == 96 and r2.work == (80, 80)


# ------------------------------------------------------------------------------------------------
# end to end


def test_half_body_clip_end_to_end(v2_weights, astronaut_png, half_second, pose_file, tmp_path, monkeypatch):
    """0.5 s of speech, a pose file and a half-body photo -> an mp4 of the speech's length."""
    from echomimic.pipeline import animate

    monkeypatch.setenv("ECHOMIMIC_V2_STEPS", "2")
    monkeypatch.setenv("ECHOMIMIC_V2_RESOLUTION", "64")
    monkeypatch.setenv("ECHOMIMIC_V2_POSE", str(pose_file))
    out = tmp_path / "v2.mp4"
    res = animate(astronaut_png, out, audio=half_second, renderer="echomimic-v2", weights=str(v2_weights),
                  fps=24, max_side=128)
    info = _probe(out)
    assert res.n_frames == info["frames"] == 12                 # the speech's length, not the pose's
    assert info["audio"] == 1 and (info["w"], info["h"]) == (128, 128)
    assert info["first"].std() > 1.0


def test_pose_argument_of_animate_drives_the_hands(v2_weights, astronaut_png, half_second, pose_file,
                                                  tmp_path, monkeypatch):
    """``animate(..., pose=FILE)`` (the CLI's ``--pose``) reaches the V2 renderer: its hand pictures
    come from that file, not from ``ECHOMIMIC_V2_POSE``, and are not black."""
    from echomimic.pipeline import animate
    from echomimic.render.neural import EchoMimicV2Renderer
    from echomimic.render.neural.hands import read_hands

    monkeypatch.setenv("ECHOMIMIC_V2_STEPS", "1")
    monkeypatch.setenv("ECHOMIMIC_V2_RESOLUTION", "64")
    monkeypatch.delenv("ECHOMIMIC_V2_POSE", raising=False)
    seen: dict = {}
    orig = EchoMimicV2Renderer.pose_pictures

    def spy(self, track, fps):
        seen["hands"], seen["fps"] = self._track_hands(track)
        pics = orig(self, track, fps)
        seen["first"] = pics([0])[0]
        return pics

    monkeypatch.setattr(EchoMimicV2Renderer, "pose_pictures", spy)
    out = tmp_path / "pose.mp4"
    res = animate(astronaut_png, out, audio=half_second, pose=pose_file, renderer="echomimic-v2",
                  weights=str(v2_weights), fps=12, max_side=96)
    hands, fps = read_hands(pose_file)
    assert seen["hands"] is not None and seen["fps"] == fps == 12.0
    assert np.allclose(seen["hands"], hands, atol=1e-6)
    assert seen["first"].any()                                  # hands drawn, not a black picture
    assert res.n_frames == _probe(out)["frames"] == 6           # the speech's length
    assert "body_pose" not in res.motion.meta                   # the returned motion stays plain data


def test_samplers_are_deterministic_and_differ(v2_weights, astronaut_png, half_second, pose_file):
    """Standard (guidance 2.5), standard at guidance 1 (no crash, no unconditional branch) and the
    accelerated sampler each run; the same seed gives the same frames."""
    from echomimic.render.neural import EchoMimicV2Renderer
    from echomimic.types import MotionTrack

    portrait = _portrait(astronaut_png)
    track = MotionTrack.neutral(5, 24.0)

    def clip(**kw):
        r = EchoMimicV2Renderer(portrait, weights=v2_weights, resolution=64, pose=pose_file, **kw)
        r.prepare(track, audio=half_second, fps=24.0, seed=7)
        return r, np.stack([r.render({}) for _ in range(5)])

    r_std, a = clip(steps=2)
    _, b = clip(steps=2)
    assert np.array_equal(a, b) and a.shape == (5, *portrait.image.shape)
    r_acc, c = clip(accelerated=True, steps=2)
    assert (r_acc.accelerated, r_acc.guidance, r_std.guidance) == (True, 1.0, 2.5)
    assert r_acc.nets.variant == "acc"
    _, d = clip(steps=2, guidance=1.0)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # outside the crop the photo is untouched
    x0, y0, side, _ = r_std.box
    mask = np.ones(portrait.image.shape[:2], bool)
    mask[y0:y0 + side, x0:x0 + side] = False
    assert np.array_equal(a[0][mask], portrait.image[mask])


def test_half_precision_runs(v2_weights, astronaut_png, half_second):
    from echomimic.render.neural import EchoMimicV2Renderer
    from echomimic.types import MotionTrack

    r = EchoMimicV2Renderer(_portrait(astronaut_png), weights=v2_weights, resolution=64, dtype="bf16", steps=1)
    assert r.nets.denoising.dtype == torch.bfloat16
    r.prepare(MotionTrack.neutral(2, 24.0), audio=half_second, fps=24.0)
    assert r.render({}).dtype == np.uint8


# ------------------------------------------------------------------------------------------------
# sampler logic with a stand-in UNet


def test_v2_windows_shift_by_three_and_pseudo_velocity_is_v():
    from echomimic.render.neural.pipeline import denoise, pseudo_velocity
    from echomimic.render.neural.scheduler import DDIMVScheduler

    seen: list[list[int]] = []

    class Stub:
        dtype = torch.float32

        def __call__(self, x, t, audio, face, banks, cfg=False):
            idx = audio[-1, :, 0, 0].round().long().tolist()
            seen.append(idx)
            assert torch.equal(face[-1, 0, :, 0, 0], torch.tensor(idx, dtype=torch.float32))   # per-frame pose
            return torch.tensor(idx, dtype=x.dtype).reshape(1, 1, -1, 1, 1).expand_as(x).clone()

    n = 13
    audio = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 2, 3).clone()
    pose = torch.arange(n, dtype=torch.float32).reshape(1, 1, n, 1, 1)
    sched = DDIMVScheduler(3)
    lat = torch.zeros(1, 1, n, 1, 1)
    out_v = denoise(Stub(), {}, audio, pose, lat, sched, 2.5, shift=3)
    assert seen[0] == list(range(12)) and seen[1] == [9, 10, 11, 12] + list(range(8))
    assert seen[2] == [(c + 3) % n for c in range(12)]
    out_p = denoise(Stub(), {}, audio, pose, lat, sched, 1.0, shift=3, velocity="pseudo")
    assert torch.allclose(out_v, out_p, atol=1e-5)
    x, v = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2)
    for t in (999, 666, 332, 10):
        _, pv = pseudo_velocity(v, x, sched.alphas_cumprod, t)
        assert torch.allclose(pv, v, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# fronts


def test_registered_and_listed_with_reasons(monkeypatch, v2_weights, tmp_path):
    from typer.testing import CliRunner

    import echomimic.render.neural.renderer_v2 as rmod
    from echomimic.cli import app
    from echomimic.render import get_renderer

    assert get_renderer("echomimic-v2").name == "echomimic-v2"
    monkeypatch.delenv("ECHOMIMIC_V2_WEIGHTS", raising=False)
    monkeypatch.setattr(rmod, "DEFAULT_WEIGHTS_V2", tmp_path / "none")
    found = json.loads(CliRunner().invoke(app, ["renderers", "--json"]).stdout)
    assert found["echomimic-v2"]["available"] is False and "no weights" in found["echomimic-v2"]["reason"]
    part = tmp_path / "part"
    shutil.copytree(v2_weights, part)
    (part / "reference_unet.pth").unlink()
    monkeypatch.setenv("ECHOMIMIC_V2_WEIGHTS", str(part))
    found = json.loads(CliRunner().invoke(app, ["renderers", "--json"]).stdout)
    assert found["echomimic-v2"]["available"] is False and "reference_unet.pth" in found["echomimic-v2"]["reason"]
    monkeypatch.setenv("ECHOMIMIC_V2_WEIGHTS", str(v2_weights))
    found = json.loads(CliRunner().invoke(app, ["renderers", "--json"]).stdout)
    assert found["echomimic-v2"]["available"] is True and "GPU" in found["echomimic-v2"]["reason"]


def test_rest_refuses_an_incomplete_version_folder_before_queueing(v2_weights, tmp_path, monkeypatch,
                                                                   astronaut_png, half_second):
    """A job naming ``renderer=echomimic-v2`` whose version folder lacks files answers 422
    ``weights_invalid`` naming the missing file, and nothing is queued; a complete folder is
    accepted. The renderer counts as available here (``ECHOMIMIC_V2_WEIGHTS`` is complete), so
    only the folder check stands between the job and a failure at run time."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from echomimic.service.app import create_app
    from echomimic.service.settings import Settings

    models = tmp_path / "models" / "echomimic-v2"
    (models / "1.0-empty").mkdir(parents=True)
    shutil.copytree(v2_weights, models / "2.0")
    (models / "2.0" / "motion_module_acc.pth").unlink()
    monkeypatch.setenv("ECHOMIMIC_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ECHOMIMIC_V2_WEIGHTS", str(v2_weights))
    files = {"image": ("a.png", astronaut_png.read_bytes(), "image/png"),
             "audio": ("a.wav", half_second.read_bytes(), "audio/wav")}
    app = create_app(Settings(data_dir=tmp_path / "data", auth=False))
    with TestClient(app) as c:
        listed = {m["renderer"]: m for m in c.get("/api/v1/models").json()["models"]}
        versions = listed["echomimic-v2"]["versions"]
        assert [(v["version"], v["complete"]) for v in versions] == [("1.0-empty", False), ("2.0", True)]
        assert "denoising_unet.pth" in versions[0]["problem"]
        for fields, missing in (({"model_version": "1.0-empty"}, "denoising_unet.pth"),
                                ({"model_version": "2.0", "accelerated": "true"}, "motion_module_acc.pth")):
            r = c.post("/api/v1/generate", data={"renderer": "echomimic-v2", **fields}, files=files)
            assert r.status_code == 422, r.text
            body = r.json()
            assert body["code"] == "weights_invalid" and missing in body["message"], body
            assert "\n" not in body["message"] and "Traceback" not in r.text
        assert sum(app.state.store.count_by_status().values()) == 0       # nothing was queued
        ok = c.post("/api/v1/generate", data={"renderer": "echomimic-v2", "model_version": "2.0"},
                    files=files)
        assert ok.status_code == 202, ok.text
        assert app.state.store.count_by_status().get("queued") == 1


def test_accelerated_option_on_every_front():
    from echomimic.errors import InvalidOption
    from echomimic.pipeline import AnimateOptions
    from echomimic.service.app import build_params
    from echomimic.ui.options import option_specs

    assert AnimateOptions.from_kwargs(renderer="echomimic-v2", accelerated=True).accelerated is True
    with pytest.raises(InvalidOption, match="accelerated"):
        AnimateOptions.from_kwargs(renderer="warp", accelerated=True)
    # REST: ``accelerated`` is an option like any other (``model_version`` names a weights folder)
    p = build_params({"renderer": "echomimic-v2", "accelerated": "true"}, {"audio", "image"})
    assert p["options"]["accelerated"] is True and p["options"]["renderer"] == "echomimic-v2"
    p = build_params({"renderer": "echomimic-v2", "accelerated": False}, {"audio", "image"})
    assert p["options"]["accelerated"] is False
    with pytest.raises(InvalidOption, match="accelerated"):
        build_params({"renderer": "echomimic-v2", "accelerated": "maybe"}, {"audio", "image"})
    assert any(s.name == "accelerated" for s in option_specs())


def test_cli_accelerated_flag(v2_weights, astronaut_png, half_second, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from echomimic.cli import app

    monkeypatch.setenv("ECHOMIMIC_V2_STEPS", "1")
    monkeypatch.setenv("ECHOMIMIC_V2_RESOLUTION", "64")
    out = tmp_path / "acc.mp4"
    res = CliRunner().invoke(app, ["animate", "-i", str(astronaut_png), "--audio", str(half_second),
                                   "--renderer", "echomimic-v2", "--weights", str(v2_weights), "--accelerated",
                                   "--fps", "12", "--max-side", "96", "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    assert _probe(out)["frames"] == 6
