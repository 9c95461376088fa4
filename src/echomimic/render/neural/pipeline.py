"""The EchoMimic V1 sampler: reference features once, context windows over the clip, DDIM.

This is the official ``Audio2VideoPipeline`` loop without the VAE:

- initial latents ``clamp(randn, -1.5, 1.5)``;
- the reference UNet runs once (timestep 0) and its features are shared by every window;
- the clip is covered by windows of 12 frames overlapping by 3 (wrapping around the end);
  at step i every window's frame indices are rotated by 2i, and window predictions are averaged;
- classifier-free guidance is one batch [unconditional, conditional]: the unconditional half has
  zero audio and zero face features and ignores the reference features;
- DDIM (v-prediction, zero-SNR, trailing) updates the whole clip once per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .scheduler import DDIMVScheduler


def context_windows(n_frames: int, size: int = 12, overlap: int = 3) -> list[list[int]]:
    """Frame indices of each window (AnimateDiff's "uniform" schedule at step 0, closed loop)."""
    if n_frames <= size:
        return [list(range(n_frames))]
    stride = size - overlap
    return [[e % n_frames for e in range(j, j + size)] for j in range(0, n_frames, stride)]


@dataclass
class SampleTrace:
    """Per-step tensors of a run (for checks against the reference)."""

    steps: list[dict[str, torch.Tensor]]


@torch.no_grad()
def denoise(denoising_unet, banks: dict[str, torch.Tensor], audio: torch.Tensor, face,
            latents: torch.Tensor, scheduler: DDIMVScheduler, guidance_scale: float = 2.5,
            context_frames: int = 12, context_overlap: int = 3,
            progress: Callable[[float], None] | None = None,
            trace: SampleTrace | None = None) -> torch.Tensor:
    """Run the DDIM loop.

    Args:
        denoising_unet: a :class:`~.unet3d.DenoisingUNet3D`.
        banks: the reference UNet's features (by block name).
        audio: (frames, tokens, dim) per-frame whisper windows.
        face: (1, C, 1, h, w) face-locator features shared by all frames, or (pose weights) a
            function of the window's frame indices returning (1, C, len(indices), h, w).
        latents: (1, 4, frames, h, w) initial latents (float32).
        scheduler: timesteps and update.
        guidance_scale: > 1 enables classifier-free guidance.

    Returns:
        (1, 4, frames, h, w) final latents (float32).
    """
    cfg = guidance_scale > 1.0
    n = latents.shape[2]
    dtype = denoising_unet.dtype
    device = latents.device
    per_frame = callable(face)

    def guided(f: torch.Tensor) -> torch.Tensor:
        return (torch.cat([torch.zeros_like(f), f]) if cfg else f).to(dtype)

    face_in = None if per_frame else guided(face)
    windows = context_windows(n, context_frames, context_overlap)
    total = len(scheduler.timesteps) * len(windows)
    done = 0
    for i, t in enumerate(scheduler.timesteps.tolist()):
        pred_sum = torch.zeros((2 if cfg else 1, *latents.shape[1:]), device=device, dtype=torch.float32)
        counter = torch.zeros((1, 1, n, 1, 1), device=device, dtype=torch.float32)
        rec: dict[str, torch.Tensor] = {}
        for win in windows:
            idx = [(c + 2 * i) % n for c in win]
            x = latents[:, :, idx]
            x = x.repeat(2, 1, 1, 1, 1) if cfg else x
            a = audio[idx][None].to(dtype)
            a = torch.cat([torch.zeros_like(a), a]) if cfg else a
            t_in = torch.tensor([t], device=device)
            f_in = guided(face(idx)) if per_frame else face_in
            out = denoising_unet(x.to(dtype), t_in, a, f_in, banks, cfg=cfg).float()
            if trace is not None and not rec:
                rec.update(unet_in=x, unet_t=t_in, unet_out=out, audio=a)
            pred_sum[:, :, idx] += out
            counter[:, :, idx] += 1
            done += 1
            if progress is not None:
                progress(done / total)
        v = pred_sum / counter
        if cfg:
            u, c = v.chunk(2)
            v = u + guidance_scale * (c - u)
        if trace is not None:
            rec.update(latents_in=latents, noise_pred_cfg=v)
        latents = scheduler.step(v, t, latents)
        if trace is not None:
            rec["latents_out"] = latents
            trace.steps.append(rec)
    return latents


def initial_latents(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The pipeline's starting latents: CPU-generator randn clamped to [-1.5, 1.5]."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).clamp(-1.5, 1.5)
