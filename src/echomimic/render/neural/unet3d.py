"""The EchoMimic V1 denoising UNet: a frame-inflated SD-1.5 UNet with AnimateDiff motion modules,
reference-attention reading, audio cross-attention (scaled by 3.0) and face-locator features
added after the input convolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Attention, FeedForward, FrameConv2d
from .config import UNetConfig
from .unet2d import RunContext, UNetCore


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """AnimateDiff's PositionalEncoding buffer ``pe`` (1, max_len, dim), float32."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds ``pe[:, :frames]`` to (n, frames, c) tokens."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention over the frame axis at every pixel (AnimateDiff ``VersatileAttention``)."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__(dim, heads, dim // heads)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # noqa: D102
        bf, d, c = x.shape
        b = bf // frames
        y = x.reshape(b, frames, d, c).transpose(1, 2).reshape(b * d, frames, c)
        y = super().forward(self.pos_encoder(y))
        return y.reshape(b, d, frames, c).transpose(1, 2).reshape(bf, d, c)


class TemporalTransformerBlock(nn.Module):
    """2 x (LayerNorm -> temporal attention -> +x), then LayerNorm -> GEGLU FF -> +x."""

    def __init__(self, dim: int, heads: int, max_len: int, n_attn: int = 2):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(n_attn)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n_attn)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # noqa: D102
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3D(nn.Module):
    """GroupNorm (per frame) -> proj_in -> temporal blocks -> proj_out -> + input."""

    def __init__(self, ch: int, heads: int, max_len: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, ch)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(ch, heads, max_len)])
        self.proj_out = nn.Linear(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, c, f, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * f, c, h, w)
        residual = y
        y = self.norm(y).permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        y = self.proj_in(y)
        for blk in self.transformer_blocks:
            y = blk(y, f)
        y = self.proj_out(y)
        y = y.reshape(b * f, h, w, c).permute(0, 3, 1, 2) + residual
        return y.reshape(b, f, c, h, w).transpose(1, 2)


class VanillaTemporalModule(nn.Module):
    """AnimateDiff's "Vanilla" motion module."""

    def __init__(self, ch: int, heads: int, max_len: int):
        super().__init__()
        self.temporal_transformer = TemporalTransformer3D(ch, heads, max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.temporal_transformer(x)


class DenoisingUNet3D(UNetCore):
    """The denoising UNet: predicts v for (b, 4, f, h, w) latents.

    ``forward(latents, timestep, audio, face, banks, cfg)``:

    - ``audio`` (b, f, tokens, dim): per-frame whisper windows (zeros for the unconditional half);
    - ``face`` (b, C, 1, h, w): face-locator features added after ``conv_in`` (broadcast over frames);
    - ``banks``: the reference UNet's norm1 features by block name;
    - ``cfg``: the batch is [unconditional, conditional] (the unconditional half ignores banks).
    """

    temporal = True

    def __init__(self, cfg: UNetConfig):
        super().__init__(cfg, context_dim=cfg.cross_attention_dim, final_out=True)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor | int, audio: torch.Tensor | None,
                face: torch.Tensor | None, banks: dict[str, torch.Tensor] | None, cfg: bool = False,
                trace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # noqa: D102
        b, _, f = latents.shape[:3]
        ctx_audio = None
        if audio is not None:
            ctx_audio = audio.reshape(b * f, *audio.shape[2:]).to(self.dtype)
        ctx = RunContext(banks=banks, cfg=cfg, audio=ctx_audio, audio_scale=self.config.audio_scale,
                         trace=trace)
        x = self.conv_in(latents.to(self.dtype))
        if face is not None:
            x = x + face.to(x.dtype)
        if trace is not None:
            trace["conv_in"] = x
        x = self._run(x, timestep, ctx, b)
        x = self.conv_norm_out(x)
        if trace is not None:
            trace["conv_norm_out"] = x
        return self.conv_out(F.silu(x))
