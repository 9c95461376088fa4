"""DDIM as EchoMimic V1 configures it: v-prediction, zero-terminal-SNR betas, "trailing"
timesteps, eta 0, ``set_alpha_to_one`` (the step past t=0 uses alpha 1)."""

from __future__ import annotations

import numpy as np
import torch


def zero_snr_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012,
                            n: int = 1000) -> torch.Tensor:
    """alphas_cumprod (float32) of linear betas rescaled to zero terminal SNR."""
    betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    a0, aT = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= aT
    alphas_bar_sqrt *= a0 / (a0 - aT)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    betas = 1 - alphas
    return torch.cumprod(1.0 - betas, dim=0)


class DDIMVScheduler:
    """The sampler's schedule and its deterministic update."""

    def __init__(self, steps: int, beta_start: float = 0.00085, beta_end: float = 0.012,
                 num_train_timesteps: int = 1000):
        if steps < 1 or steps > num_train_timesteps:
            raise ValueError(f"steps must be in 1..{num_train_timesteps}")
        self.n_train = num_train_timesteps
        self.steps = steps
        self.alphas_cumprod = zero_snr_alphas_cumprod(beta_start, beta_end, num_train_timesteps)
        t = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / steps)).astype(np.int64) - 1
        self.timesteps = torch.from_numpy(t)

    def step(self, v: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """x_{t-1000//steps} from the v prediction at timestep t."""
        t = int(t)
        prev = t - self.n_train // self.steps
        a = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
        v32, x32 = v.float(), x.float()
        x0 = a ** 0.5 * x32 - (1 - a) ** 0.5 * v32
        eps = a ** 0.5 * v32 + (1 - a) ** 0.5 * x32
        return (a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps).to(x.dtype)
