"""The echomimic-v1 renderer end to end with tiny rule weights, its errors, and torch isolation.

The tiny networks have the official structure with few channels; their weights come from the
golden rule, so the pictures are noise by construction: these tests check the plumbing (weights
folder, audio features, sampler, VAE, streaming to the encoder, audio mux), not the looks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from echomimic.errors import RendererUnavailable  # noqa: E402
from echomimic.render.neural.weights import WeightsError, make_rule_weights, resolve  # noqa: E402


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory) -> Path:
    return make_rule_weights(tmp_path_factory.mktemp("v1_small"), "small", variants=("", "acc", "pose"))


def _probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(video=0))
        with av.open(str(path)) as c2:
            frame = next(c2.decode(video=0)).to_ndarray(format="rgb24")
        return {"frames": n, "audio": len(c.streams.audio), "w": v.codec_context.width,
                "h": v.codec_context.height, "frame": frame}


def test_small_weights_folder_is_complete(small_weights):
    files = resolve(small_weights)
    assert files.variant == ""
    assert resolve(small_weights, "acc").denoising.name == "denoising_unet_acc.pth"
    state = torch.load(str(files.motion), weights_only=True)
    assert state and all(".motion_modules." in k for k in state)


def test_animate_renders_right_length_with_audio(small_weights, astronaut_png, short_speech, tmp_path,
                                                 monkeypatch):
    from echomimic.pipeline import animate

    monkeypatch.setenv("ECHOMIMIC_V1_STEPS", "3")      # the sampler's cost, not its logic, scales
    out = tmp_path / "v1.mp4"
    res = animate(astronaut_png, out, audio=short_speech.path, renderer="echomimic-v1",
                  weights=str(small_weights), fps=12, max_side=64)
    info = _probe(out)
    expected = max(1, int(round(short_speech.duration * 12)))
    assert res.n_frames == expected
    assert info["frames"] == expected
    assert info["audio"] == 1
    assert (info["w"], info["h"]) == (res.width, res.height) == (64, 64)
    assert info["frame"].std() > 1.0           # decoded network output, not a copy of a blank


def test_same_seed_same_frames_acc_variant(small_weights, astronaut_rgb, short_speech):
    """The accelerated variant (6 steps, no guidance) runs, and the sampler is deterministic."""
    from echomimic.render.neural import EchoMimicV1Renderer
    from echomimic.types import MotionTrack, Portrait

    img = np.ascontiguousarray(astronaut_rgb[::8, ::8])
    portrait = Portrait(image=img, landmarks=np.zeros((478, 3), np.float32), face_box=(16, 8, 44, 40),
                        person_mask=np.ones(img.shape[:2], np.float32))
    track = MotionTrack.neutral(5, 25.0)
    frames = []
    for _ in range(2):
        r = EchoMimicV1Renderer(portrait, weights=small_weights, variant="acc")
        assert (r.steps, r.guidance) == (6, 1.0)
        r.prepare(track, audio=short_speech.path, fps=25.0, seed=3)
        frames.append(np.stack([r.render({}) for _ in range(5)]))
        assert r.face_mask().sum() > 0
    assert frames[0].shape == (5, 64, 64, 3)
    assert np.array_equal(frames[0], frames[1])


def test_missing_file_gives_one_clear_error(small_weights, tmp_path, astronaut_png, short_speech):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_weights, broken)
    (broken / "motion_module.pth").unlink()
    (broken / "audio_processor" / "whisper_tiny.pt").unlink()
    with pytest.raises(WeightsError) as err:
        resolve(broken)
    msg = str(err.value)
    assert "motion_module.pth" in msg and "audio_processor/whisper_tiny.pt" in msg
    assert isinstance(err.value, RendererUnavailable)

    from typer.testing import CliRunner

    from echomimic.cli import app

    res = CliRunner().invoke(app, ["animate", "-i", str(astronaut_png), "--audio", str(short_speech.path),
                                   "--renderer", "echomimic-v1", "--weights", str(broken),
                                   "-o", str(tmp_path / "x.mp4")])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "motion_module.pth" in lines[0]
    assert not (tmp_path / "x.mp4").exists()


def test_mismatched_tensor_is_reported(small_weights, tmp_path):
    import shutil

    from echomimic.render.neural.models import load_networks

    bad = tmp_path / "bad"
    shutil.copytree(small_weights, bad)
    state = torch.load(str(bad / "face_locator.pth"), weights_only=True)
    state["conv_out.weight"] = torch.zeros(3, 3)
    state.pop("conv_in.bias")
    torch.save(state, str(bad / "face_locator.pth"))
    with pytest.raises(WeightsError) as err:
        load_networks(bad, with_vae=False)
    msg = str(err.value)
    assert "face_locator.pth" in msg and "conv_in.bias" in msg and "conv_out.weight" in msg


def test_safetensors_copies_load(tmp_path):
    from echomimic.render.neural.models import load_networks

    root = make_rule_weights(tmp_path / "st", "small", fmt="safetensors")
    nets = load_networks(root, with_vae=False)
    assert nets.whisper.width == 64 and nets.variant == ""
    assert not list(root.rglob("*.pth")) and not list(root.rglob("*.pt"))   # no pickle was read
    assert (root / "audio_processor" / "whisper_tiny.safetensors").is_file()


def test_renderers_command_lists_both_with_reasons(monkeypatch, small_weights):
    from typer.testing import CliRunner

    from echomimic.cli import app

    monkeypatch.delenv("ECHOMIMIC_V1_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(small_weights.parent / "nohome"))
    import echomimic.render.neural.renderer as rmod

    monkeypatch.setattr(rmod, "DEFAULT_WEIGHTS", small_weights.parent / "nohome" / "w")
    found = json.loads(CliRunner().invoke(app, ["renderers", "--json"]).stdout)
    assert found["warp"]["available"] is True
    assert found["echomimic-v1"]["available"] is False
    assert "no weights" in found["echomimic-v1"]["reason"]
    monkeypatch.setenv("ECHOMIMIC_V1_WEIGHTS", str(small_weights))
    found = json.loads(CliRunner().invoke(app, ["renderers", "--json"]).stdout)
    v1 = found["echomimic-v1"]
    assert v1["available"] is True and ("no GPU" in v1["reason"] or "GPU" in v1["reason"])


def test_warp_path_never_imports_torch():
    code = textwrap.dedent("""
        import sys
        import echomimic, echomimic.pipeline, echomimic.cli
        from echomimic.render import available_renderers, get_renderer
        get_renderer("warp")
        found = available_renderers()
        assert "echomimic-v1" in found and "warp" in found, found
        bad = sorted(m for m in ("torch", "diffusers", "safetensors") if m in sys.modules)
        print("LOADED", bad)
        sys.exit(1 if bad else 0)
    """)
    env = {**__import__("os").environ, "ECHOMIMIC_V1_WEIGHTS": "/nonexistent"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_pose_pictures_follow_the_motion_track(astronaut_png):
    from echomimic.pipeline import AnimateOptions, load_portrait
    from echomimic.render.neural.pose import PoseFrames
    from echomimic.types import MotionTrack

    portrait = load_portrait(astronaut_png, AnimateOptions(max_side=128))
    track = MotionTrack.neutral(2, 25.0)
    track.set("jawOpen", np.array([0.0, 1.0]))
    poses = PoseFrames(portrait, track, (64, 64))
    rest, open_ = poses.landmarks(0), poses.landmarks(1)
    assert open_[17, 1] > rest[17, 1] + 0.5            # the lower lip drops with the jaw
    assert np.allclose(open_[10], rest[10], atol=0.5)  # the forehead stays
    img0, img1 = poses.image(0), poses.image(1)
    assert img0.shape == (64, 64, 3) and img0.any()
    assert (np.abs(img0.astype(int) - img1.astype(int)).sum(-1) > 0).sum() > 5
    lips = np.all(img0 == (10, 180, 20), axis=-1) | np.all(img0 == (20, 10, 180), axis=-1)
    assert lips.any()


def test_pose_variant_renders(small_weights, astronaut_png, short_speech, tmp_path, monkeypatch):
    from echomimic.pipeline import animate

    monkeypatch.setenv("ECHOMIMIC_V1_STEPS", "2")
    monkeypatch.setenv("ECHOMIMIC_V1_VARIANT", "pose")
    out = tmp_path / "pose.mp4"
    res = animate(astronaut_png, out, audio=short_speech.path, renderer="echomimic-v1",
                  weights=str(small_weights), fps=10, max_side=64)
    assert _probe(out)["frames"] == res.n_frames == max(1, int(round(short_speech.duration * 10)))


def test_context_windows_wrap_and_overlap():
    from echomimic.render.neural.pipeline import context_windows

    assert context_windows(4) == [[0, 1, 2, 3]]
    assert context_windows(12) == [list(range(12))]
    # windows start every 9 frames up to the end and wrap around (a closed loop)
    assert context_windows(20) == [list(range(12)), list(range(9, 20)) + [0],
                                   [18, 19] + list(range(10))]
    wins = context_windows(30)
    assert all(len(w) == 12 for w in wins) and sorted({i for w in wins for i in w}) == list(range(30))


def test_denoise_averages_windows_and_rotates_frames():
    """A stand-in UNet that predicts each frame's own index: the averaged prediction of a frame
    must be its index whatever windows cover it, with the indices rotated by 2 per step."""
    from echomimic.render.neural.pipeline import denoise
    from echomimic.render.neural.scheduler import DDIMVScheduler

    seen: list[list[int]] = []

    class Stub:
        dtype = torch.float32

        def __call__(self, x, t, audio, face, banks, cfg=False):
            idx = audio[-1, :, 0, 0].round().long().tolist()          # audio row i holds i
            seen.append(idx)
            return torch.tensor(idx, dtype=x.dtype).reshape(1, 1, -1, 1, 1).expand_as(x).clone()

    n = 20
    audio = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 2, 3).clone()
    sched = DDIMVScheduler(2)
    lat = torch.zeros(1, 1, n, 1, 1)
    out = denoise(Stub(), {}, audio, torch.zeros(1, 1, 1, 1, 1), lat, sched, guidance_scale=2.5)
    assert len(seen) == 2 * 3                                   # 3 windows per step
    assert seen[0] == list(range(12)) and seen[3] == [(c + 2) % n for c in range(12)]
    # one DDIM step of x = 0 with v = frame index, twice: the result is linear in the index
    v = torch.arange(n, dtype=torch.float32).reshape(1, 1, n, 1, 1)
    x = sched.step(v, 999, lat)
    x = sched.step(v, 499, x)
    assert torch.allclose(out, x, atol=1e-5)


def test_half_precision_paths_run(small_weights, short_speech):
    from echomimic.render.neural import EchoMimicV1Renderer
    from echomimic.types import MotionTrack, Portrait

    img = np.zeros((64, 48, 3), np.uint8) + 128
    portrait = Portrait(image=img, landmarks=np.zeros((478, 3), np.float32), face_box=(8, 8, 40, 48),
                        person_mask=np.ones(img.shape[:2], np.float32))
    r = EchoMimicV1Renderer(portrait, weights=small_weights, dtype="bf16", steps=2)
    assert r.nets.denoising.dtype == torch.bfloat16 and r.work == (48, 64)
    r.prepare(MotionTrack.neutral(3, 25.0), audio=short_speech.path, fps=25.0)
    frames = [r.render({}) for _ in range(3)]
    assert all(f.shape == (64, 48, 3) and f.dtype == np.uint8 for f in frames)
