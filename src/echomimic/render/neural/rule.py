"""Deterministic "rule" weights: every tensor from its key name and shape (no training, no download).

The rule (the one the EchoMimic V1 golden fixtures use)::

    seed = zlib.crc32(key)                       # unsigned 32-bit
    z    = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    "...weight", ndim >= 2: z * (1 / sqrt(prod(shape[1:])))
    "...weight", ndim == 1: 1 + 0.1 * z
    "...bias":              0.02 * z
    anything else:          left as constructed (sinusoid tables)

Networks filled by it compute well-scaled noise: good for checking an implementation against the
reference and for exercising the renderer end to end, useless for pictures.
"""

from __future__ import annotations

import math
import zlib
from typing import Iterator

import torch
from torch import nn


def rule_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The rule's value for ``key`` (float32), or None when the rule leaves the entry alone."""
    if not (key.endswith("weight") or key.endswith("bias")):
        return None
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    z = torch.randn(tuple(shape), generator=gen)
    if key.endswith("weight") and len(shape) >= 2:
        return z * (1 / math.sqrt(math.prod(shape[1:])))
    if key.endswith("weight"):
        return 1 + 0.1 * z
    return 0.02 * z


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's encoder positional table: sin in the first half of the channels, cos in the second."""
    log_inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def constructed_value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """What the reference code constructs for an entry the rule leaves alone."""
    if key.endswith("pos_encoder.pe"):
        from .unet3d import sinusoid_table

        return sinusoid_table(shape[1], shape[2])
    if key == "encoder.positional_embedding":
        return whisper_sinusoids(shape[0], shape[1])
    return torch.zeros(shape)          # e.g. whisper's decoder table (never read by the encoder)


def rule_entries(shapes: dict[str, tuple[int, ...]]) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, value) for every entry, one at a time (float32)."""
    for key, shape in shapes.items():
        v = rule_tensor(key, shape)
        yield key, (v if v is not None else constructed_value(key, shape))


def fill_by_rule(model: nn.Module) -> nn.Module:
    """Give every state entry of ``model`` (possibly built on the meta device) its rule value,
    in place, on the CPU in float32, one entry at a time."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, value in rule_entries(shapes):
        _assign(model, key, value)
    return model


def _assign(model: nn.Module, key: str, value: torch.Tensor) -> None:
    mod_name, _, attr = key.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    if attr in mod._parameters:
        mod._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in mod._buffers:
        mod._buffers[attr] = value
    else:  # pragma: no cover - state_dict keys always name a parameter or a buffer
        raise KeyError(key)
