"""What the golden tests of EchoMimic V1 and V2 share: fixture loading, the tolerance, the
rule-filled networks at full size, and the weight checks.

The full-size networks are expensive (filling them by the rule draws 2.1 billion random numbers)
and both versions use the same ones, so they are built once per test run: the reference UNet
computes everything either version needs from it (:func:`reference_runs`) and is freed before the
denoising UNet is built (:func:`denoising_unet`, peak about 6.6 GB), which lives until the last
golden test has run (``conftest.py`` calls :func:`release`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import torch as safetensors_torch

from echomimic.render.neural.config import UNetConfig
from echomimic.render.neural.rule import fill_by_rule
from echomimic.render.neural.unet2d import ReferenceUNet2D
from echomimic.render.neural.unet3d import DenoisingUNet3D

V1 = Path(__file__).parent / "data" / "echomimic_v1"
V2 = Path(__file__).parent / "data" / "echomimic_v2"

_CACHE: dict[str, object] = {}


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """torch on 2 threads while a golden module runs (the fixtures were computed so), or on
    one in a parallel run, where the other test processes use the other cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
    yield
    torch.set_num_threads(old)


def load(name: str, folder: Path = V1) -> dict:
    """A fixture file; the larger ones are stored split by tensor as ``<stem>-1``, ``-2`` …
    (each under 5 MB) and merged here."""
    path = folder / name
    if path.exists():
        return safetensors_torch.load_file(str(path))
    parts = sorted(folder.glob(f"{path.stem}-[0-9]*{path.suffix}"))
    assert parts, f"fixture {name} is missing from {folder}"
    merged: dict = {}
    for part in parts:
        merged.update(safetensors_torch.load_file(str(part)))
    return merged


def assert_close(x: torch.Tensor, gold: torch.Tensor, name: str) -> None:
    """``max|x - golden| <= 1e-5 * max|golden|``, shapes equal."""
    assert tuple(x.shape) == tuple(gold.shape), f"{name}: shape {tuple(x.shape)} != {tuple(gold.shape)}"
    err = (x.detach().float() - gold).abs().max().item()
    scale = gold.abs().max().item()
    assert err <= 1e-5 * scale, f"{name}: max|x-golden| = {err:.3e} > 1e-5 * {scale:.3e}"


def build(cls, *args) -> torch.nn.Module:
    """``cls(*args)`` with every weight from the rule (built on the meta device, then filled)."""
    with torch.device("meta"):
        net = cls(*args)
    return fill_by_rule(net).eval().requires_grad_(False)


def sha256(v: torch.Tensor) -> str:
    """sha256 of a tensor's float32 little-endian C-order bytes (no copy when it is one already)."""
    import numpy as np

    a = np.ascontiguousarray(v.detach().numpy(), dtype="<f4")
    return hashlib.sha256(memoryview(a).cast("B")).hexdigest()


def key_list(net: str) -> list[tuple[str, list[int]]]:
    rows = [ln.split("\t") for ln in (V1 / f"keys_{net}.txt").read_text().splitlines() if ln]
    return [(k, json.loads(s)) for k, s, _ in rows]


def check_structure(model: torch.nn.Module, net: str, prefix: str = "") -> None:
    expected = [(k, s) for k, s in key_list(net) if k.startswith(prefix)]
    mine = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert mine == expected, f"{net}: state_dict keys/shapes/order differ from keys_{net}.txt"


def check_weights(model: torch.nn.Module, net: str, prefix: str = "", folder: Path = V1) -> None:
    """Every rule-covered entry equals the reference bit for bit: its sha256 (and, for a report
    on the ones that differ, its sum and abs max).

    Entries the rule leaves alone ("kept": sinusoid tables) are compared with the stored kept
    buffers elsewhere, within the tolerance (sin/cos differ in the last bit between CPUs)."""
    sums = json.loads((folder / f"weights_checksums_{net}.json").read_text())
    covered = [k for k, v in sums.items() if k.startswith(prefix) and v.get("rule") != "kept"]
    state = model.state_dict()
    absent = [k for k in covered if k not in state]
    assert not absent, f"{net}: entries missing from the model: {absent[:3]}"
    bad = []
    for key in covered:
        v = state[key]
        if sha256(v) != sums[key]["sha256"]:
            ref = sums[key]
            bad.append(f"{key} (sum {float(v.double().sum())} vs {ref['sum']}, "
                       f"abs max {float(v.abs().max())} vs {ref['absmax']})")
    assert not bad, f"{net}: {len(bad)} rule weights differ, e.g. {bad[:3]}"


def reference_runs() -> dict:
    """Everything the V1 and V2 fixtures need from the full-size reference UNet, computed once;
    the net is freed afterwards. ``structure`` holds the message of a failed key or weight check
    (None when both hold), reported by the V1 test of the reference UNet."""
    if "reference" in _CACHE:
        return _CACHE["reference"]          # type: ignore[return-value]
    _CACHE.pop("denoising", None)           # never both full-size nets at once
    gc.collect()
    net = build(ReferenceUNet2D, UNetConfig.from_json(V1 / "config_reference_unet.json"))
    out: dict = {}
    try:
        check_structure(net, "reference_unet")
        check_weights(net, "reference_unet")
        out["structure"] = None
    except AssertionError as exc:
        out["structure"] = str(exc)
    b, cw, e = (load(n) for n in ("b_reference_unet.safetensors", "c_wide_denoising_unet.safetensors",
                                  "e_ddim_loop.safetensors"))
    with torch.no_grad():
        # V1
        trace: dict = {}
        out["b_sample"], out["b_banks"] = net(b["latent"], b["timestep"], trace=trace)
        out["b_trace"] = trace
        out["cw_sample"], out["cw_banks"] = net(cw["ref_latent"], 0)
        out["e_ref_latent"] = e["vae_latent_mean"] * 0.18215
        _, out["e_banks"] = net(out["e_ref_latent"], 0)
        # V2: (c) the bank of b's latent at t = 0; (d), (e) their loops' reference latents
        _, out["v2_c_banks"] = net(b["latent"], 0)
        for fx, name in (("d", "d_v2_loop.safetensors"), ("e", "e_v2_acc_loop.safetensors")):
            f = load(name, V2)
            ref = f["vae_latent_mean"] * 0.18215
            out[f"v2_{fx}_ref_latent"] = (ref, f["ref_latent"])
            _, out[f"v2_{fx}_banks"] = net(ref, int(f["ref_timestep"]))
    del net
    gc.collect()
    _CACHE["reference"] = out
    return out


def denoising_unet() -> torch.nn.Module:
    """The full-size denoising UNet, built once (after :func:`reference_runs` has freed the
    reference UNet)."""
    if "denoising" not in _CACHE:
        reference_runs()
        cfg = UNetConfig.from_json(V1 / "config_reference_unet.json", cross_attention_dim=384)
        _CACHE["denoising"] = build(DenoisingUNet3D, cfg)
    return _CACHE["denoising"]              # type: ignore[return-value]


def release() -> None:
    """Free the networks and what they computed."""
    _CACHE.clear()
    gc.collect()
