"""Loading the official EchoMimic V1 weights from a local folder (nothing is downloaded).

The folder layout is the official ``pretrained_weights`` tree::

    DIR/
    ├── denoising_unet.pth            (or denoising_unet_acc / _pose / _pose_acc .pth)
    ├── motion_module.pth             (or motion_module_acc / _pose / _pose_acc .pth)
    ├── reference_unet.pth            (reference_unet_pose.pth for the pose variants)
    ├── face_locator.pth              (face_locator_pose.pth for the pose variants)
    ├── sd-vae-ft-mse/                config.json + diffusion_pytorch_model.{safetensors,bin}
    ├── sd-image-variations-diffusers/unet/config.json
    └── audio_processor/whisper_tiny.pt

Every ``.pth``/``.pt`` may be replaced by a ``.safetensors`` copy of the same name. Pickle files
are read with ``torch.load(weights_only=True)``. Keys are matched strictly (the motion-module
``pos_encoder.pe`` tables may be absent: they are recomputed). Every problem found is reported
at once in one :class:`WeightsError` that says what is missing and where it goes.

:func:`make_rule_weights` writes a complete folder whose tensors come from the deterministic rule
of :mod:`.rule` (the golden-fixture rule), at the official size or at a tiny size for tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import RendererUnavailable

#: Variant -> (denoising, motion module, reference, face locator) file stems.
VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "": ("denoising_unet", "motion_module", "reference_unet", "face_locator"),
    "acc": ("denoising_unet_acc", "motion_module_acc", "reference_unet", "face_locator"),
    "pose": ("denoising_unet_pose", "motion_module_pose", "reference_unet_pose", "face_locator_pose"),
    "pose_acc": ("denoising_unet_pose_acc", "motion_module_pose_acc", "reference_unet_pose",
                 "face_locator_pose"),
}
UNET_CONFIG = "sd-image-variations-diffusers/unet/config.json"
VAE_DIR = "sd-vae-ft-mse"
WHISPER = "audio_processor/whisper_tiny"

#: EchoMimic V2: variant -> (denoising, motion module, reference, pose encoder) file stems; the
#: accelerated weights share the reference UNet and the pose encoder.
V2_VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "": ("denoising_unet", "motion_module", "reference_unet", "pose_encoder"),
    "acc": ("denoising_unet_acc", "motion_module_acc", "reference_unet", "pose_encoder"),
}
V2_WHISPER = "audio_processor/tiny"
#: model -> (variants, whisper stem, display name)
MODELS: dict[str, tuple[dict[str, tuple[str, str, str, str]], str, str]] = {
    "v1": (VARIANTS, WHISPER, "EchoMimic V1"),
    "v2": (V2_VARIANTS, V2_WHISPER, "EchoMimic V2"),
}


class WeightsError(RendererUnavailable):
    """The weights folder is missing files or holds tensors that do not fit the networks."""

    code = "weights_invalid"


@dataclass
class WeightFiles:
    """The resolved files of one variant."""

    root: Path
    variant: str
    denoising: Path
    motion: Path
    reference: Path
    face_locator: Path
    unet_config: Path
    vae: Path
    whisper: Path


def _find(root: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        p = root / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def detect_variant(root: str | os.PathLike, model: str = "v1") -> str:
    """The variant whose denoising file is present (base first, then acc, pose, pose_acc)."""
    r = Path(root)
    for v, (den, *_rest) in MODELS[model][0].items():
        if _find(r, den, (".pth", ".safetensors")):
            return v
    return ""


def resolve(root: str | os.PathLike, variant: str | None = None, model: str = "v1") -> WeightFiles:
    """Check the folder and return its files; raise one :class:`WeightsError` listing every
    missing piece (with where it goes) otherwise.

    ``model`` is ``"v1"`` or ``"v2"`` (V2: ``pose_encoder`` instead of ``face_locator``, whisper
    at ``audio_processor/tiny.pt``; ``WeightFiles.face_locator`` then names the pose encoder)."""
    variants, whisper_stem, label = MODELS[model]
    r = Path(root).expanduser()
    if not r.is_dir():
        raise WeightsError(f"weights folder {str(r)!r} does not exist (expected the official "
                           f"{label} pretrained_weights layout; see docs/neural.md)")
    v = detect_variant(r, model) if variant is None else variant
    if v not in variants:
        raise WeightsError(f"unknown {label} variant {v!r}; choose one of "
                           f"{', '.join(repr(k) for k in variants)}")
    den, mm, ref, fl = variants[v]
    missing: list[str] = []
    found: dict[str, Path] = {}
    pth = (".pth", ".safetensors")
    for key, stem, exts in (("denoising", den, pth), ("motion", mm, pth), ("reference", ref, pth),
                            ("face_locator", fl, pth), ("whisper", whisper_stem, (".pt", ".safetensors"))):
        p = _find(r, stem, exts)
        if p is None:
            missing.append(f"{stem}{exts[0]} (or {stem}.safetensors)")
        else:
            found[key] = p
    cfg = r / UNET_CONFIG
    if not cfg.is_file():
        missing.append(UNET_CONFIG)
    vae = r / VAE_DIR
    if not (vae / "config.json").is_file():
        missing.append(f"{VAE_DIR}/config.json")
    if not any((vae / n).is_file() for n in ("diffusion_pytorch_model.safetensors",
                                             "diffusion_pytorch_model.bin")):
        missing.append(f"{VAE_DIR}/diffusion_pytorch_model.safetensors (or .bin)")
    if missing:
        raise WeightsError(f"{label} weights incomplete in {str(r)!r}: missing "
                           f"{', '.join(missing)} (put them there with these names; see docs/neural.md)")
    return WeightFiles(r, v, found["denoising"], found["motion"], found["reference"],
                       found["face_locator"], cfg, vae, found["whisper"])


def read_state(path: Path) -> dict[str, Any]:
    """A state dict from a .safetensors or a pickle (.pth/.pt, read with weights_only=True)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read {str(path)!r}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{str(path)!r} does not hold a state dict")
    tensors = obj.get("model_state_dict", obj) if "model_state_dict" in obj else obj
    bad = [str(k) for k, v in (tensors.items() if isinstance(tensors, dict) else [("model_state_dict", tensors)])
           if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{str(path)!r} holds entries that are not tensors ({', '.join(bad[:3])}"
                           f"{' …' if len(bad) > 3 else ''}); refusing it")
    return obj


def check_state(model, state: dict[str, Any], where: str, optional_suffix: str = "pos_encoder.pe",
                ignore_prefix: tuple[str, ...] = ()) -> list[str]:
    """Problems of ``state`` against ``model``'s entries (missing, unexpected, shape mismatch)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems: list[str] = []
    missing = [k for k in expected if k not in state and not k.endswith(optional_suffix)]
    unexpected = [k for k in state if k not in expected and not k.startswith(ignore_prefix)]
    shapes = [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in expected
              if k in state and tuple(state[k].shape) != expected[k] and not k.endswith(optional_suffix)]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            more = f" … (+{len(items) - 3})" if len(items) > 3 else ""
            problems.append(f"{where}: {len(items)} {label} ({'; '.join(items[:3])}{more})")
    return problems


def install_state(model, state: dict[str, Any], dtype) -> None:
    """Assign ``state`` to ``model`` (built on the meta device), converting to ``dtype``; entries
    the files do not hold (the ``pe`` tables) are constructed."""
    from .rule import _assign, constructed_value

    for key, ref in model.state_dict().items():
        v = state.get(key)
        if v is None or tuple(v.shape) != tuple(ref.shape):
            v = constructed_value(key, tuple(ref.shape))
        _assign(model, key, v.to(dtype))


def whisper_dims(obj: dict[str, Any], path: Path) -> tuple[dict[str, int], dict[str, Any]]:
    """(dims, state) of a whisper checkpoint ({"dims", "model_state_dict"} or flat safetensors)."""
    if "model_state_dict" in obj:
        return {k: int(v) for k, v in dict(obj.get("dims", {})).items()}, obj["model_state_dict"]
    state = obj
    meta_dims = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
        if "dims" in md:
            meta_dims = {k: int(v) for k, v in json.loads(md["dims"]).items()}
    if meta_dims is not None:
        return meta_dims, state
    try:
        c1 = state["encoder.conv1.weight"]
        pos = state["encoder.positional_embedding"]
    except KeyError:
        raise WeightsError(f"{str(path)!r} is not a whisper checkpoint (no encoder.conv1.weight)") from None
    n_layer = len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})
    width = int(c1.shape[0])
    return {"n_mels": int(c1.shape[1]), "n_audio_ctx": int(pos.shape[0]), "n_audio_state": width,
            "n_audio_head": max(1, width // 64), "n_audio_layer": n_layer}, state


# ------------------------------------------------------------------------------------------------
# rule weights
# ------------------------------------------------------------------------------------------------


def make_rule_weights(root: str | os.PathLike, config: str = "full",
                      variants: tuple[str, ...] = ("",), fmt: str = "pth", model: str = "v1") -> Path:
    """Write a complete weights folder filled by the golden rule (see :mod:`.rule`).

    Args:
        root: folder to create or fill.
        config: ``"full"`` (official sizes, about 8.5 GB) or ``"small"`` (tiny channels, a few MB;
            structurally identical, for tests and demos).
        variants: which variant files to write ("", "acc", "pose", "pose_acc").
        fmt: ``"pth"`` (pickles, the official format) or ``"safetensors"``.
        model: ``"v1"`` or ``"v2"`` (the EchoMimic V2 layout: pose encoder, ``audio_processor/tiny.pt``;
            variants "" and "acc").

    Returns:
        The folder. Its networks produce noise: the rule makes reproducible weights, not trained ones.
    """
    import torch

    from .config import SD15_UNET, SMALL_UNET, SMALL_WHISPER, WHISPER_TINY, UNetConfig
    from .face_locator import FaceLocator
    from .rule import fill_by_rule
    from .unet2d import ReferenceUNet2D
    from .unet3d import DenoisingUNet3D
    from .whisper import WhisperAudio

    if config not in ("full", "small"):
        raise ValueError("config must be 'full' or 'small'")
    r = Path(root)
    (r / "sd-image-variations-diffusers/unet").mkdir(parents=True, exist_ok=True)
    (r / "audio_processor").mkdir(parents=True, exist_ok=True)
    unet_cfg = dict(SD15_UNET if config == "full" else SMALL_UNET, _class_name="UNet2DConditionModel",
                    sample_size=64)
    (r / UNET_CONFIG).write_text(json.dumps(unet_cfg, indent=1))
    wdims = dict(WHISPER_TINY if config == "full" else SMALL_WHISPER)

    def save(state: dict[str, Any], stem: str, extra: dict[str, Any] | None = None) -> None:
        state = {k: v.contiguous() for k, v in state.items()}
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(state, str(r / f"{stem}.safetensors"),
                      metadata={k: json.dumps(v) for k, v in (extra or {}).items()})
        else:
            obj: Any = state if extra is None else {**extra, "model_state_dict": state}
            torch.save(obj, str(r / f"{stem}{'.pt' if extra else '.pth'}"))

    with torch.device("meta"):
        wh = WhisperAudio(wdims)
    fill_by_rule(wh)
    table, whisper_stem, _label = MODELS[model]
    save(wh.state_dict(), whisper_stem, {"dims": wdims})
    del wh
    cfg = UNetConfig.from_dict(unet_cfg)
    for v in variants:
        _den, _mm, ref_stem, fl_stem = table[v]
        with torch.device("meta"):
            fl = FaceLocator(cfg.block_out_channels[0],
                             conditioning_channels=3 if ("pose" in v or model == "v2") else 1)
        fill_by_rule(fl)
        save(fl.state_dict(), fl_stem)
        del fl
        if not any((r / f"{ref_stem}{e}").is_file() for e in (".pth", ".safetensors")):
            with torch.device("meta"):
                ref = ReferenceUNet2D(cfg)
            fill_by_rule(ref)
            save(ref.state_dict(), ref_stem)
            del ref
    with torch.device("meta"):
        den = DenoisingUNet3D(UNetConfig.from_dict(unet_cfg, cross_attention_dim=wdims["n_audio_state"]))
    fill_by_rule(den)
    sd = den.state_dict()
    motion = {k: v for k, v in sd.items() if ".motion_modules." in k}
    base = {k: v for k, v in sd.items() if ".motion_modules." not in k}
    for v in variants:
        den_stem, mm_stem, *_ = table[v]
        save(base, den_stem)
        save(motion, mm_stem)
    del den, sd, motion, base
    _make_rule_vae(r / VAE_DIR, config)
    return r


def _make_rule_vae(folder: Path, config: str) -> None:
    import torch
    import warnings

    import safetensors.torch  # noqa: F401  (some diffusers releases expect it imported)
    with warnings.catch_warnings():        # diffusers emits FutureWarnings on import
        warnings.simplefilter("ignore", FutureWarning)
        from diffusers import AutoencoderKL

    from .rule import rule_tensor

    kw: dict[str, Any] = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
                              down_block_types=["DownEncoderBlock2D"] * 4,
                              up_block_types=["UpDecoderBlock2D"] * 4)
    if config == "full":
        kw.update(block_out_channels=[128, 256, 512, 512], layers_per_block=2)
    else:
        kw.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    vae = AutoencoderKL(**kw)
    with torch.no_grad():
        for k, p in vae.state_dict().items():
            v = rule_tensor(k, tuple(p.shape))
            if v is not None:
                p.copy_(v)
    vae.save_pretrained(str(folder), safe_serialization=True)
