"""EchoMimic V2 against its golden fixtures (tests/data/echomimic_v2, see its README).

The fixtures were computed by the official V2 code with the V1 rule weights. What V2 shares with
V1 (reference UNet, denoising UNet, whisper) is checked by tests/test_golden_v1.py; here:

(a) the hand-pose pictures, pixel for pixel (uint8 exactly), canvases included;
(b) the pose encoder (V1's face-locator class with 3 input channels): keys, weights, outputs;
(c) one denoising-UNet call with per-frame pose features, with and without guidance;
(d) the standard V2 sampler loop (13 frames, 3 steps, guidance 2.5, windows shifted by 3);
(e) the accelerated V2 sampler loop (2 steps, no guidance, pseudo velocities).

Float tensors: ``max|x - golden| <= 1e-5 * max|golden|``; integers exactly. (c)-(e) build the
full-size networks (peak about 6.6 GB): run them one at a time on a shared machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import golden  # noqa: E402
# autouse: torch on 2 threads, as the fixtures were computed
from golden import two_threads  # noqa: E402,F401
from golden import V1, assert_close, build  # noqa: E402

from echomimic.render.neural.face_locator import FaceLocator  # noqa: E402
from echomimic.render.neural.hands import (  # noqa: E402
    canvas_size, draw_hands_canvas, pictures_to_tensor, pose_picture,
)
from echomimic.render.neural.pipeline import SampleTrace, denoise, initial_latents  # noqa: E402
from echomimic.render.neural.scheduler import DDIMVScheduler  # noqa: E402
from echomimic.render.neural.whisper import WhisperAudio, audio_features, feature_chunks  # noqa: E402

pytestmark = pytest.mark.golden
DATA = golden.V2


def load(name: str, folder: Path = DATA) -> dict:
    return golden.load(name, folder)


@pytest.fixture(scope="module")
def drawing() -> dict:
    return {k: v.numpy() for k, v in load("a_pose_drawing.safetensors").items()}


@pytest.fixture(scope="module")
def pose_encoder():
    cfg = json.loads((DATA / "config_pose_encoder.json").read_text())
    return build(FaceLocator, cfg["conditioning_embedding_channels"], cfg["conditioning_channels"],
                 tuple(cfg["block_out_channels"]))


# ------------------------------------------------------------------------------------------------
# (a) pose pictures


@pytest.mark.parametrize("case", ["f0", "f100", "f200", "synth", "f100_portrait"])
def test_a_pose_picture_pixel_exact(drawing, case):
    src = "f100" if case == "f100_portrait" else case
    img = pose_picture(drawing[f"{src}.hands"], drawing[f"{src}.hands_score"], 768, 768,
                       drawing[f"{case}.draw_pose_params"])
    gold = drawing[f"{case}.image_768"]
    assert img.dtype == np.uint8 and img.shape == gold.shape
    assert np.array_equal(img, gold), f"{case}: {(img != gold).sum()} channel values differ"


def test_a_canvases_and_portrait_canvas_size(drawing):
    for case in ("f100", "synth"):
        c = draw_hands_canvas(drawing[f"{case}.hands"], drawing[f"{case}.hands_score"], (800, 800))
        assert np.array_equal(c, drawing[f"{case}.canvas_bgr"]), case
    assert canvas_size(768, 432) == tuple(drawing["f100_portrait.canvas_hw"])
    assert canvas_size(768, 768) == canvas_size(64, 64) == (800, 800)


def test_a_loop_frames_and_float_table(drawing):
    imgs = np.stack([pose_picture(h, s, 64, 64, drawing["loop64.draw_pose_params"])
                     for h, s in zip(drawing["loop64.hands"], drawing["loop64.hands_score"])])
    assert np.array_equal(imgs, drawing["loop64.images"])
    table = pictures_to_tensor(np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(3, -1))
    assert torch.equal(table[0, 0, 0, 0], torch.from_numpy(drawing["u8_to_float"]))


def test_a_skip_unscored_only_changes_score_zero_strokes(drawing):
    """The renderer's drawing leaves out score-0 points instead of painting them black: the
    synthetic frame (one score-0 point) changes, the real frames (no zero score) do not."""
    for case in ("f0", "f100"):
        a = pose_picture(drawing[f"{case}.hands"], drawing[f"{case}.hands_score"], 768, 768)
        b = pose_picture(drawing[f"{case}.hands"], drawing[f"{case}.hands_score"], 768, 768,
                         skip_unscored=True)
        assert np.array_equal(a, b) and np.array_equal(a, drawing[f"{case}.image_768"])
    # a second hand whose unscored wrist lies on the first hand's palm
    h = np.stack([drawing["f100.hands"][0], drawing["f100.hands"][0] + 0.3])
    s = np.stack([drawing["f100.hands_score"][0], drawing["f100.hands_score"][0]])
    h[1, 0] = h[0, 9]
    s[1, 0] = 0.0
    official = pose_picture(h, s, 768, 768)
    ours = pose_picture(h, s, 768, 768, skip_unscored=True)
    first = pose_picture(h[:1], s[:1], 768, 768)
    y, x = (h[0, 9] * 768).astype(int)[::-1]
    assert official[y, x].sum() == 0 and ours[y, x].sum() > 0 and np.array_equal(ours[y, x], first[y, x])


# ------------------------------------------------------------------------------------------------
# (b) pose encoder


def test_b_pose_encoder(pose_encoder, drawing):
    rows = [ln.split("\t") for ln in (DATA / "keys_pose_encoder.txt").read_text().splitlines() if ln]
    assert [(k, list(v.shape)) for k, v in pose_encoder.state_dict().items()] == \
        [(k, json.loads(s)) for k, s, _ in rows]
    sums = json.loads((DATA / "weights_checksums_pose_encoder.json").read_text())
    for key, v in pose_encoder.state_dict().items():
        assert golden.sha256(v) == sums[key]["sha256"], key
    b = load("b_pose_encoder.safetensors")
    r, c = b["crop_offset"].tolist()
    crop = [drawing[f"{k}.image_768"][r:r + 64, c:c + 64] for k in ("f0", "f100", "f200", "synth")]
    assert torch.equal(pictures_to_tensor(np.stack(crop)), b["multi.input"])
    with torch.no_grad():
        assert_close(pose_encoder(b["single.input"]), b["single.out"], "single.out")
        assert_close(pose_encoder(b["multi.input"]), b["multi.out"], "multi.out")
        loop = pose_encoder(pictures_to_tensor(drawing["loop64.images"]))
    assert_close(loop, b["loop64.out"], "loop64.out")


# ------------------------------------------------------------------------------------------------
# (c)-(e): full-size UNets


@pytest.fixture(scope="module")
def banks():
    """The reference UNet's features for (c), (d) and (e) (computed with V1's, tests/golden.py)."""
    runs = golden.reference_runs()
    for fx in ("d", "e"):
        ref, gold = runs[f"v2_{fx}_ref_latent"]
        assert_close(ref, gold, f"{fx}.ref_latent")
    return {fx: runs[f"v2_{fx}_banks"] for fx in ("c", "d", "e")}


@pytest.fixture(scope="module")
def denoising_unet(banks):
    return golden.denoising_unet()


@pytest.fixture(scope="module")
def chunks24():
    w = build(WhisperAudio, json.loads((V1 / "config_whisper_tiny.json").read_text()))
    wav = load("d_whisper.safetensors", V1)["wav"]
    chunks, _ = feature_chunks(audio_features(w, wav), 24)
    return chunks


def test_c_denoising_unet_with_pose(denoising_unet, banks):
    c = load("c_denoising_unet_pose.safetensors")
    with torch.no_grad():
        out = denoising_unet(c["cfg.latents"], c["cfg.timestep"], c["cfg.audio"], c["cfg.pose"], banks["c"], cfg=True)
        assert_close(out, c["cfg.out"], "cfg.out")
        # the fp16-rounded bank of the unmodified pipeline is detectably different
        assert (out - c["cfg.out_bank_fp16"]).abs().max() > 1e-5 * c["cfg.out"].abs().max()
        out = denoising_unet(c["nocfg.latents"], c["nocfg.timestep"], c["nocfg.audio"], c["nocfg.pose"],
                             banks["c"], cfg=False)
    assert_close(out, c["nocfg.out"], "nocfg.out")


def _run_loop(fx: dict, prefix: str, steps: int, guidance: float, velocity: str, unet, bank, chunks,
              pose_encoder, drawing) -> SampleTrace:
    sched = DDIMVScheduler(steps)
    assert torch.equal(sched.timesteps, fx[prefix + "timesteps"])
    assert_close(sched.alphas_cumprod, fx["alphas_cumprod"], "alphas_cumprod")
    lat = initial_latents((1, 4, 13, 8, 8), 2005)
    assert_close(lat, fx["latents_init"], "latents_init")
    with torch.no_grad():
        pose = pose_encoder(pictures_to_tensor(drawing["loop64.images"]))
    trace = SampleTrace([])
    final = denoise(unet, bank, chunks[:13], pose, lat, sched, guidance, trace=trace, shift=3,
                    velocity=velocity)
    assert len(trace.steps) == steps
    for i, rec in enumerate(trace.steps):
        p = f"{prefix}step{i}."
        assert torch.equal(rec["unet_t"], fx[p + "unet_t"])
        assert torch.equal(torch.tensor(rec["windows"]), fx[p + "windows"])
        assert_close(rec["latents_in"], fx[p + "latents_in"], p + "latents_in")
        assert_close(rec["noise_pred_cfg"], fx[p + "noise_pred"], p + "noise_pred")
        assert_close(rec["latents_out"], fx[p + "latents_out"], p + "latents_out")
        for j, w in enumerate(rec["wins"]):
            for k, v in w.items():
                assert_close(v, fx[f"{p}win{j}.{k}"], f"{p}win{j}.{k}")
    assert_close(final, fx[prefix + "final_latents"], prefix + "final_latents")
    return trace


def test_d_standard_loop(denoising_unet, banks, chunks24, pose_encoder, drawing):
    d = load("d_v2_loop.safetensors")
    _run_loop(d, "steps3.", 3, 2.5, "v", denoising_unet, banks["d"], chunks24, pose_encoder, drawing)


def test_e_accelerated_loop(denoising_unet, banks, chunks24, pose_encoder, drawing):
    e = load("e_v2_acc_loop.safetensors")
    trace = _run_loop(e, "steps2.", 2, 1.0, "pseudo", denoising_unet, banks["e"], chunks24, pose_encoder, drawing)
    # at t = 999 (alpha 0) the pseudo velocity is the v-prediction bit for bit
    w = trace.steps[0]["wins"][0]
    assert torch.equal(w["pseudo_v"], w["unet_out"])
