"""The face locator: a small strided CNN that turns the face-box mask into features added to the
denoising UNet's first activations (total stride 8, SiLU after each conv but the last)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import FrameConv2d


class FaceLocator(nn.Module):
    """``FaceLocator(320, conditioning_channels=1, block_out_channels=(16, 32, 96, 256))``.

    Input (b, 1, f, H, W) masks in [0, 1]; output (b, 320, f, H/8, W/8)."""

    def __init__(self, embedding_channels: int = 320, conditioning_channels: int = 1,
                 block_out_channels: tuple[int, ...] = (16, 32, 96, 256)):
        super().__init__()
        ch = list(block_out_channels)
        self.conv_in = FrameConv2d(conditioning_channels, ch[0], 3, padding=1)
        blocks = []
        for i in range(len(ch) - 1):
            blocks.append(FrameConv2d(ch[i], ch[i], 3, padding=1))
            blocks.append(FrameConv2d(ch[i], ch[i + 1], 3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = FrameConv2d(ch[-1], embedding_channels, 3, padding=1)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.silu(self.conv_in(mask.to(self.conv_in.weight.dtype)))
        for blk in self.blocks:
            x = F.silu(blk(x))
        return self.conv_out(x)
