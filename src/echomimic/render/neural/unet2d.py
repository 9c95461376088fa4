"""The SD-1.5 UNet skeleton and the EchoMimic V1 reference UNet.

:class:`UNetCore` builds the down / mid / up blocks of a ``UNet2DConditionModel`` with the exact
parameter names of diffusers 0.24. With ``temporal=True`` (see :mod:`.unet3d`) every block works
on (b, c, f, h, w) tensors and carries AnimateDiff motion modules.

:class:`ReferenceUNet2D` is the reference network: the same layout without cross-attention and
without the final norm/conv. It runs once per clip at timestep 0 on the reference image's latent;
each of its transformer blocks records its ``norm1`` output (the "bank"), which the denoising
UNet's matching block appends to its self-attention keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    Attention, Downsample, FeedForward, FrameConv2d, FrameGroupNorm, ResnetBlock, TimestepEmbedding,
    Upsample, _batch_to_frames, _frames_to_batch, timestep_embedding,
)
from .config import UNetConfig


@dataclass
class RunContext:
    """What the transformer blocks see during one forward pass.

    Attributes:
        write: when set, each block stores its norm1 output here under its module name.
        banks: reference features to read, by block name (each (1, tokens, channels)).
        cfg: the batch is [unconditional, conditional]; the unconditional half ignores the bank.
        audio: cross-attention context, ((b f), tokens, dim).
        audio_scale: factor on the audio cross-attention output (3.0 in EchoMimic V1).
        trace: when set, block outputs are stored here (for checks against the reference).
    """

    write: dict[str, torch.Tensor] | None = None
    banks: dict[str, torch.Tensor] | None = None
    cfg: bool = False
    audio: torch.Tensor | None = None
    audio_scale: float = 3.0
    trace: dict[str, torch.Tensor] | None = field(default=None)


class TransformerBlock(nn.Module):
    """A BasicTransformerBlock: self-attention (+ reference bank), optional audio cross-attention,
    GEGLU feed-forward. ``context_dim=None`` gives the reference UNet's block (no attn2)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None):
        super().__init__()
        self.block_name = ""
        if context_dim is None:                # the reference UNet's registration order
            self.norm1 = nn.LayerNorm(dim)
            self.attn1 = Attention(dim, heads, dim // heads)
            self.attn2 = None
            self.norm3 = nn.LayerNorm(dim)
            self.ff = FeedForward(dim)
        else:                                  # the denoising UNet's registration order
            self.attn1 = Attention(dim, heads, dim // heads)
            self.norm1 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, dim // heads, context_dim)
            self.norm2 = nn.LayerNorm(dim)
            self.ff = FeedForward(dim)
            self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:  # noqa: D102
        n = self.norm1(x)
        if ctx.write is not None:
            ctx.write[self.block_name] = n.clone()
        bank = ctx.banks.get(self.block_name) if ctx.banks is not None else None
        if bank is None:
            x = self.attn1(n) + x
        else:
            if ctx.cfg:
                half = x.shape[0] // 2
                nu, nc = n[:half], n[half:]
                kv = torch.cat([nc, bank.to(n.dtype).expand(nc.shape[0], -1, -1)], dim=1)
                a = torch.cat([self.attn1(nu), self.attn1(nc, kv)], dim=0)
            else:
                kv = torch.cat([n, bank.to(n.dtype).expand(n.shape[0], -1, -1)], dim=1)
                a = self.attn1(n, kv)
            x = a + x
        if self.attn2 is not None and ctx.audio is not None:
            x = ctx.audio_scale * self.attn2(self.norm2(x), ctx.audio) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Transformer2DModel: GroupNorm -> 1x1 proj_in -> blocks over h*w tokens -> proj_out -> +x.

    Works per frame on (b, c, f, h, w) tensors."""

    def __init__(self, ch: int, heads: int, context_dim: int | None, groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(ch, heads, context_dim)])
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:  # noqa: D102
        y, f = _frames_to_batch(x)
        b, c, h, w = y.shape
        residual = y
        y = self.proj_in(self.norm(y))
        y = y.permute(0, 2, 3, 1).reshape(b, h * w, c)
        for blk in self.transformer_blocks:
            y = blk(y, ctx)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        y = self.proj_out(y) + residual
        return _batch_to_frames(y, f)


def _motion(ch: int, cfg: UNetConfig) -> nn.Module:
    from .unet3d import VanillaTemporalModule

    return VanillaTemporalModule(ch, cfg.motion_heads, cfg.motion_max_len)


class DownBlock(nn.Module):
    """CrossAttnDownBlock / DownBlock, 2D or 3D (with motion modules)."""

    def __init__(self, in_ch: int, out_ch: int, temb: int, cfg: UNetConfig, attn: bool,
                 downsample: bool, context_dim: int | None, temporal: bool):
        super().__init__()
        n = cfg.layers_per_block
        if attn:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(out_ch, cfg.heads, context_dim, cfg.norm_num_groups) for _ in range(n)])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList([ResnetBlock(in_ch if i == 0 else out_ch, out_ch, temb,
                                                  cfg.norm_num_groups, cfg.norm_eps) for i in range(n)])
        self.motion_modules = nn.ModuleList([_motion(out_ch, cfg) for _ in range(n)]) if temporal else None
        self.downsamplers = nn.ModuleList([Downsample(out_ch)]) if downsample else None

    def forward(self, x, temb, ctx):  # noqa: D102
        outs = []
        for i, res in enumerate(self.resnets):
            x = res(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, ctx)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x)
            outs.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outs.append(x)
        return x, outs


class MidBlock(nn.Module):
    """UNetMidBlockCrossAttn: resnet, then (attention, [motion], resnet)."""

    def __init__(self, ch: int, temb: int, cfg: UNetConfig, context_dim: int | None, temporal: bool):
        super().__init__()
        self.attentions = nn.ModuleList([SpatialTransformer(ch, cfg.heads, context_dim, cfg.norm_num_groups)])
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, temb, cfg.norm_num_groups, cfg.norm_eps)
                                      for _ in range(2)])
        self.motion_modules = nn.ModuleList([_motion(ch, cfg)]) if temporal else None

    def forward(self, x, temb, ctx):  # noqa: D102
        x = self.resnets[0](x, temb)
        for i, (attn, res) in enumerate(zip(self.attentions, self.resnets[1:])):
            x = attn(x, ctx)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x)
            x = res(x, temb)
        return x


class UpBlock(nn.Module):
    """CrossAttnUpBlock / UpBlock, 2D or 3D (with motion modules)."""

    def __init__(self, in_ch: int, prev_ch: int, out_ch: int, temb: int, cfg: UNetConfig, attn: bool,
                 upsample: bool, context_dim: int | None, temporal: bool):
        super().__init__()
        n = cfg.layers_per_block + 1
        if attn:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(out_ch, cfg.heads, context_dim, cfg.norm_num_groups) for _ in range(n)])
        else:
            self.attentions = None
        resnets = []
        for i in range(n):
            skip = in_ch if i == n - 1 else out_ch
            rin = prev_ch if i == 0 else out_ch
            resnets.append(ResnetBlock(rin + skip, out_ch, temb, cfg.norm_num_groups, cfg.norm_eps))
        self.resnets = nn.ModuleList(resnets)
        self.motion_modules = nn.ModuleList([_motion(out_ch, cfg) for _ in range(n)]) if temporal else None
        self.upsamplers = nn.ModuleList([Upsample(out_ch)]) if upsample else None

    def forward(self, x, skips, temb, ctx, size=None):  # noqa: D102
        for i, res in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)
            x = res(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, ctx)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size)
        return x


class UNetCore(nn.Module):
    """conv_in, time embedding, down/up/mid blocks (in diffusers' registration order)."""

    temporal = False

    def __init__(self, cfg: UNetConfig, context_dim: int | None, final_out: bool):
        super().__init__()
        self.config = cfg
        ch = list(cfg.block_out_channels)
        temb = ch[0] * 4
        self.conv_in = FrameConv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(cfg.down_block_types):
            inp, out = out, ch[i]
            self.down_blocks.append(DownBlock(inp, out, temb, cfg, "CrossAttn" in kind, i < len(ch) - 1,
                                              context_dim, self.temporal))
        self.mid_block = MidBlock(ch[-1], temb, cfg, context_dim, self.temporal)
        rev = ch[::-1]
        out = rev[0]
        for i, kind in enumerate(cfg.up_block_types):
            prev, out = out, rev[i]
            inp = rev[min(i + 1, len(ch) - 1)]
            self.up_blocks.append(UpBlock(inp, prev, out, temb, cfg, "CrossAttn" in kind,
                                          i < len(ch) - 1, context_dim, self.temporal))
        if final_out:
            self.conv_norm_out = FrameGroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
            self.conv_out = FrameConv2d(ch[0], cfg.out_channels, 3, padding=1)
        for name, mod in self.named_modules():
            if isinstance(mod, TransformerBlock):
                mod.block_name = name

    @property
    def dtype(self) -> torch.dtype:  # noqa: D102
        return self.conv_in.weight.dtype

    def _run(self, x: torch.Tensor, timestep: torch.Tensor, ctx: RunContext, batch: int) -> torch.Tensor:
        trace = ctx.trace
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(batch)
        emb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(self.dtype))
        if trace is not None:
            trace["time_embedding"] = emb
        skips = [x]
        for i, blk in enumerate(self.down_blocks):
            x, outs = blk(x, emb, ctx)
            skips.extend(outs)
            if trace is not None:
                trace[f"down_blocks.{i}"] = x
        x = self.mid_block(x, emb, ctx)
        if trace is not None:
            trace["mid_block"] = x
        for i, blk in enumerate(self.up_blocks):
            n = len(blk.resnets)
            mine, skips = skips[-n:], skips[:-n]
            size = tuple(skips[-1].shape[-2:]) if skips else None
            x = blk(x, mine, emb, ctx, size)
            if trace is not None:
                trace[f"up_blocks.{i}"] = x
        return x


class ReferenceUNet2D(UNetCore):
    """The reference UNet: SD-1.5 layout, self-attention only, no final norm/conv.

    ``forward(latent, timestep)`` returns ``(sample, banks)``: the up_blocks.3 output
    (b, 320, h, w) and the norm1 output of each of its transformer blocks, by module name.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__(cfg, context_dim=None, final_out=False)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor | int = 0,
                trace: dict[str, torch.Tensor] | None = None):  # noqa: D102
        ctx = RunContext(write={}, trace=trace)
        x = self.conv_in(latent)
        if trace is not None:
            trace["conv_in"] = x
        x = self._run(x, timestep, ctx, latent.shape[0])
        return x, ctx.write
