"""The EchoMimic V1 sampler: reference features once, context windows over the clip, DDIM.

This is the official ``Audio2VideoPipeline`` loop without the VAE:

- initial latents ``clamp(randn, -1.5, 1.5)``;
- the reference UNet runs once (timestep 0) and its features are shared by every window;
- the clip is covered by windows of 12 frames overlapping by 3 (wrapping around the end);
  at step i every window's frame indices are rotated by 2i, and window predictions are averaged;
- classifier-free guidance is one batch [unconditional, conditional]: the unconditional half has
  zero audio and zero face features and ignores the reference features;
- DDIM (v-prediction, zero-SNR, trailing) updates the whole clip once per step.

EchoMimic V2 runs the same loop with per-frame pose features (sliced per window), windows
rotated by 3 frames per step, and, for its accelerated weights, the "pseudo velocity" of each
window averaged instead of its v-prediction.
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


def pseudo_velocity(v: torch.Tensor, x: torch.Tensor, alphas_cumprod: torch.Tensor,
                    t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_pred, pseudo_v) of the accelerated V2 sampler for a window's prediction ``v`` at ``x``.

    ``x_pred = a_t x - b_t v`` and ``pseudo_v = (x_pred - (a_s a_t + b_s b_t) x) / (b_s a_t - a_s b_t)``
    with the previous timestep -1 (``a_s = 1``, ``b_s = 0``): equal to ``v`` in exact arithmetic,
    written in the official operation order so float32 results agree bit for bit."""
    a_prod = alphas_cumprod[int(t)]
    one = torch.ones_like(a_prod)
    a_t, b_t = (a_prod ** 0.5).to(x.dtype), ((1 - a_prod) ** 0.5).to(x.dtype)
    a_s, b_s = (one ** 0.5).to(x.dtype), ((1 - one) ** 0.5).to(x.dtype)
    x_pred = a_t * x - b_t * v
    return x_pred, (x_pred - (a_s * a_t + b_s * b_t) * x) / (b_s * a_t - a_s * b_t)


@torch.no_grad()
def denoise(denoising_unet, banks: dict[str, torch.Tensor], audio: torch.Tensor, face,
            latents: torch.Tensor, scheduler: DDIMVScheduler, guidance_scale: float = 2.5,
            context_frames: int = 12, context_overlap: int = 3,
            progress: Callable[[float], None] | None = None,
            trace: SampleTrace | None = None, shift: int = 2,
            velocity: str = "v") -> torch.Tensor:
    """Run the DDIM loop.

    Args:
        denoising_unet: a :class:`~.unet3d.DenoisingUNet3D`.
        banks: the reference UNet's features (by block name).
        audio: (frames, tokens, dim) per-frame whisper windows.
        face: conditioning features added after ``conv_in``: (1, C, 1, h, w) shared by all frames
            (V1's face locator), (1, C, frames, h, w) per frame (V2's pose encoder, computed once
            for the clip and sliced per window), or a function of the window's frame indices
            returning (1, C, len(indices), h, w).
        latents: (1, 4, frames, h, w) initial latents (float32).
        scheduler: timesteps and update.
        guidance_scale: > 1 enables classifier-free guidance.
        shift: frames the windows rotate by per step (V1: 2, V2: 3).
        velocity: ``"v"`` averages the UNet's v-predictions; ``"pseudo"`` (V2's accelerated
            sampler) averages each window's pseudo velocity (see :func:`pseudo_velocity`).

    Returns:
        (1, 4, frames, h, w) final latents (float32).
    """
    if velocity not in ("v", "pseudo"):
        raise ValueError("velocity must be 'v' or 'pseudo'")
    cfg = guidance_scale > 1.0
    n = latents.shape[2]
    dtype = denoising_unet.dtype
    device = latents.device
    per_frame = callable(face)
    sliced = not per_frame and face is not None and face.shape[2] == n and n > 1

    def guided(f: torch.Tensor) -> torch.Tensor:
        return (torch.cat([torch.zeros_like(f), f]) if cfg else f).to(dtype)

    face_in = None if (per_frame or sliced) else guided(face)
    windows = context_windows(n, context_frames, context_overlap)
    total = len(scheduler.timesteps) * len(windows)
    done = 0
    for i, t in enumerate(scheduler.timesteps.tolist()):
        pred_sum = torch.zeros((2 if cfg else 1, *latents.shape[1:]), device=device, dtype=torch.float32)
        counter = torch.zeros((1, 1, n, 1, 1), device=device, dtype=torch.float32)
        rec: dict = {}
        for win in windows:
            idx = [(c + shift * i) % n for c in win]
            x = latents[:, :, idx]
            x = x.repeat(2, 1, 1, 1, 1) if cfg else x
            a = audio[idx][None].to(dtype)
            a = torch.cat([torch.zeros_like(a), a]) if cfg else a
            t_in = torch.tensor([t], device=device)
            if per_frame:
                f_in = guided(face(idx))
            elif sliced:
                f_in = guided(face[:, :, idx])
            else:
                f_in = face_in
            out = denoising_unet(x.to(dtype), t_in, a, f_in, banks, cfg=cfg).float()
            pred = out
            if velocity == "pseudo":
                x_pred, pred = pseudo_velocity(out, x, scheduler.alphas_cumprod.to(device), t)
            if trace is not None:
                if not rec:
                    rec.update(unet_in=x, unet_t=t_in, unet_out=out, audio=a, windows=[], wins=[])
                rec["windows"].append(idx)
                w = {"unet_in": x, "unet_out": out}
                if velocity == "pseudo":
                    w.update(x_pred=x_pred, pseudo_v=pred)
                rec["wins"].append(w)
            pred_sum[:, :, idx] += pred
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
