"""Building blocks shared by the EchoMimic V1 networks (SD-1.5 layout, frame-aware).

Every module keeps the parameter names of the reference implementation (diffusers 0.24 and
AnimateDiff), so official checkpoints load with strict key matching. Tensors with a frame axis
use the layout ``(batch, channels, frames, height, width)``; 2D code paths simply have no
frame axis. Convolutions and group norms act on each frame on its own ("inflated").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _frames_to_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(b, c, f, h, w) -> ((b f), c, h, w); 4D input passes through with f = 0."""
    if x.ndim == 4:
        return x, 0
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w), f


def _batch_to_frames(x: torch.Tensor, f: int) -> torch.Tensor:
    if f == 0:
        return x
    bf, c, h, w = x.shape
    return x.reshape(bf // f, f, c, h, w).transpose(1, 2)


class FrameConv2d(nn.Conv2d):
    """A Conv2d applied to each frame of a (b, c, f, h, w) tensor (or to a plain 4D tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y, f = _frames_to_batch(x)
        return _batch_to_frames(super().forward(y), f)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are computed per frame (the "inflated" GroupNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y, f = _frames_to_batch(x)
        return _batch_to_frames(super().forward(y), f)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal timestep features (diffusers ``Timesteps``, flip_sin_to_cos=True, shift 0)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32,
                                               device=timesteps.device) / half
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1)


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """SD ResNet block; works on 4D or (frame-inflated) 5D tensors."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, in_ch, eps=eps)
        self.conv1 = FrameConv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = FrameGroupNorm(groups, out_ch, eps=eps)
        self.conv2 = FrameConv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = FrameConv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h = self.conv1(F.silu(self.norm1(x)))
        t = self.time_emb_proj(F.silu(temb))
        h = h + t.reshape(*t.shape, *([1] * (h.ndim - 2)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (padding 1)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = FrameConv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to ``size`` (x2 by default), then a 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = FrameConv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:  # noqa: D102
        y, f = _frames_to_batch(x)
        dtype = y.dtype
        if dtype == torch.bfloat16:
            y = y.float()
        if size is None:
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        else:
            y = F.interpolate(y, size=size, mode="nearest")
        return self.conv(_batch_to_frames(y.to(dtype), f))


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (to_q/k/v without bias, to_out.0)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        ctx = x if context is None else context
        b, n, _ = x.shape
        h = self.heads
        q = self.to_q(x).reshape(b, n, h, -1).transpose(1, 2)
        k = self.to_k(ctx).reshape(b, ctx.shape[1], h, -1).transpose(1, 2)
        v = self.to_v(ctx).reshape(b, ctx.shape[1], h, -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(b, n, -1)
        return self.to_out[0](o)


class GEGLU(nn.Module):
    """proj -> (hidden, gate) -> hidden * gelu(gate)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h, gate = self.proj(x).chunk(2, dim=-1)
        if gate.dtype in (torch.float16, torch.bfloat16) and gate.device.type == "cpu":
            return h * F.gelu(gate.float()).to(h.dtype)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x inner width (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net[2](self.net[0](x))
