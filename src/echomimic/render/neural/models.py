"""The EchoMimic V1 networks, built on the meta device and filled from a weights folder."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import UNetConfig
from .face_locator import FaceLocator
from .unet2d import ReferenceUNet2D
from .unet3d import DenoisingUNet3D
from .weights import (
    WeightFiles, WeightsError, check_state, install_state, read_state, resolve, whisper_dims,
)
from .whisper import WhisperAudio


@dataclass
class V1Networks:
    """Everything the V1 renderer runs (all in eval mode, no gradients)."""

    reference: ReferenceUNet2D
    denoising: DenoisingUNet3D
    face_locator: FaceLocator
    whisper: WhisperAudio
    vae: Any                      # diffusers AutoencoderKL
    variant: str
    device: torch.device
    dtype: torch.dtype


def _load_vae(folder: Path, device, dtype):
    import logging

    import warnings

    import safetensors.torch  # noqa: F401  (some diffusers releases expect it imported)
    with warnings.catch_warnings():        # diffusers emits FutureWarnings on import
        warnings.simplefilter("ignore", FutureWarning)
        from diffusers import AutoencoderKL
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
    except Exception as exc:
        raise WeightsError(f"cannot load the VAE from {str(folder)!r}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return vae.to(device).eval().requires_grad_(False)


def load_networks(root: str | Path, variant: str | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, with_vae: bool = True, model: str = "v1") -> V1Networks:
    """Build the V1 (or, with ``model="v2"``, the V2) networks from an official weights folder
    (strict key matching). V2's pose encoder is V1's face-locator class with 3 input channels and
    sits in ``face_locator``.

    Every file is checked before anything big is kept; all problems are reported together in one
    :class:`~.weights.WeightsError`. Networks are built on the meta device and take the file
    tensors directly (no second copy of the weights)."""
    files: WeightFiles = resolve(root, variant, model)
    label = "EchoMimic V2" if model == "v2" else "EchoMimic V1"
    dev = torch.device(device)
    problems: list[str] = []
    try:
        unet_cfg = json.loads(files.unet_config.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {str(files.unet_config)!r}: {exc}") from None

    wobj = read_state(files.whisper)
    dims, wstate = whisper_dims(wobj, files.whisper)
    with torch.device("meta"):
        whisper = WhisperAudio(dims)
    problems += check_state(whisper, wstate, files.whisper.name, ignore_prefix=("decoder.",))

    fstate = read_state(files.face_locator)
    cond_ch = 3 if model == "v2" else (int(fstate["conv_in.weight"].shape[1]) if "conv_in.weight" in fstate else 1)
    cfg = UNetConfig.from_dict(unet_cfg)
    with torch.device("meta"):
        face = FaceLocator(cfg.block_out_channels[0], conditioning_channels=cond_ch)
    problems += check_state(face, fstate, files.face_locator.name)

    rstate = read_state(files.reference)
    with torch.device("meta"):
        ref = ReferenceUNet2D(cfg)
    problems += check_state(ref, rstate, files.reference.name)

    dstate = dict(read_state(files.denoising))
    mstate = read_state(files.motion)
    dstate.update(mstate)
    with torch.device("meta"):
        den = DenoisingUNet3D(UNetConfig.from_dict(unet_cfg, cross_attention_dim=whisper.width))
    problems += check_state(den, dstate, f"{files.denoising.name} + {files.motion.name}")
    if problems:
        raise WeightsError(f"{label} weights do not fit the networks: " + " | ".join(problems))

    # whisper stays in fp32 (8 M parameters; its LayerNorms run in fp32 anyway)
    for model, state, dt in ((whisper, wstate, torch.float32), (face, fstate, dtype), (ref, rstate, dtype),
                             (den, dstate, dtype)):
        install_state(model, state, dt)
        model.to(dev).eval().requires_grad_(False)
    del wobj, wstate, fstate, rstate, dstate, mstate
    gc.collect()
    vae = _load_vae(files.vae, dev, dtype) if with_vae else None
    return V1Networks(ref, den, face, whisper, vae, files.variant, dev, dtype)
