"""Neural renderers (PyTorch): our implementation of the EchoMimic V1 networks.

Importing this package does not import torch; the networks are loaded when a renderer is built.
Install with ``pip install 'echomimic[neural]'`` and see docs/neural.md for the weights folder.

Layout, so that later models can sit beside V1: ``blocks`` (shared layers), ``unet2d`` /
``unet3d`` (V1 UNets), ``face_locator``, ``whisper`` (audio features), ``scheduler``,
``pipeline`` (the sampler loop), ``weights`` / ``models`` (files and loading), ``rule`` (the
deterministic test weights) and ``renderer`` (the ``echomimic.renderers`` plugin). EchoMimic V2
adds ``hands`` (its pose pictures) and ``renderer_v2``; its pose encoder is ``face_locator``'s
class with 3 input channels.
"""

from __future__ import annotations

from .renderer import EchoMimicV1Renderer
from .renderer_v2 import EchoMimicV2Renderer

__all__ = ["EchoMimicV1Renderer", "EchoMimicV2Renderer"]
