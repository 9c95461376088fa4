"""Network configurations of EchoMimic V1 (torch-free).

The UNet layout comes from ``sd-image-variations-diffusers/unet/config.json`` (the SD-1.5 UNet);
the denoising UNet takes the same layout with the audio cross-attention width and the motion
module settings of the official ``inference_v2.yaml`` (fixed here: "Vanilla" modules at every
resolution and in the mid block, 8 heads, two temporal self-attentions, ``pe`` length 32).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: The official UNet config (``sd-image-variations-diffusers/unet/config.json``, the keys used).
SD15_UNET: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "norm_num_groups": 32,
    "norm_eps": 1e-5, "cross_attention_dim": 768, "attention_head_dim": 8,
}

#: whisper-tiny (multilingual) model dimensions.
WHISPER_TINY: dict[str, int] = {
    "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
    "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
}

#: A tiny layout with the same structure, for plumbing tests and demos (its outputs are noise).
SMALL_UNET: dict[str, Any] = dict(SD15_UNET, block_out_channels=[32, 32, 64, 64], layers_per_block=1)
SMALL_WHISPER: dict[str, int] = dict(WHISPER_TINY, n_audio_state=64, n_audio_head=2, n_vocab=64,
                                     n_text_ctx=8, n_text_state=64, n_text_head=2, n_text_layer=1,
                                     n_audio_ctx=1500)
SMALL_FACE_LOCATOR = (16, 32, 96, 256)


@dataclass(frozen=True)
class UNetConfig:
    """The parts of a diffusers UNet config that shape the network."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = tuple(SD15_UNET["down_block_types"])
    up_block_types: tuple[str, ...] = tuple(SD15_UNET["up_block_types"])
    layers_per_block: int = 2
    in_channels: int = 4
    out_channels: int = 4
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    heads: int = 8                        # diffusers' "attention_head_dim" of SD 1.5 (= heads)
    cross_attention_dim: int | None = None
    motion_heads: int = 8
    motion_max_len: int = 32
    audio_scale: float = 3.0

    @classmethod
    def from_dict(cls, d: dict[str, Any], **over: Any) -> "UNetConfig":
        """From a diffusers ``config.json`` dict (extra keys are ignored)."""
        heads = d.get("num_attention_heads") or d.get("attention_head_dim", 8)
        if isinstance(heads, (list, tuple)):
            heads = heads[0]
        cfg = cls(
            block_out_channels=tuple(d.get("block_out_channels", (320, 640, 1280, 1280))),
            down_block_types=tuple(t.replace("3D", "2D") for t in d.get("down_block_types", cls.down_block_types)),
            up_block_types=tuple(t.replace("3D", "2D") for t in d.get("up_block_types", cls.up_block_types)),
            layers_per_block=int(d.get("layers_per_block", 2)),
            in_channels=int(d.get("in_channels", 4)), out_channels=int(d.get("out_channels", 4)),
            norm_num_groups=int(d.get("norm_num_groups", 32)), norm_eps=float(d.get("norm_eps", 1e-5)),
            heads=int(heads),
        )
        return replace(cfg, **over)

    @classmethod
    def from_json(cls, path: str | Path, **over: Any) -> "UNetConfig":  # noqa: D102
        return cls.from_dict(json.loads(Path(path).read_text()), **over)


@dataclass(frozen=True)
class SamplerConfig:
    """The official ``inference_v2.yaml`` DDIM settings and the sampler defaults."""

    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    steps: int = 30
    guidance_scale: float = 2.5
    context_frames: int = 12
    context_overlap: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


#: Steps and guidance of the accelerated (``_acc``) weights.
ACC_SAMPLER = SamplerConfig(steps=6, guidance_scale=1.0)
