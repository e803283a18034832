"""Noise schedule and the deterministic DDIM sampler over the EPD vector (x0-predicting denoiser)."""

from __future__ import annotations

import numpy as np
import torch


def linear_alphas_cumprod(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` timesteps from T-1 down to 0, evenly spaced; the last step always lands on t=0."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return [int(t) for t in np.linspace(timesteps - 1, 0, steps).round()] if steps > 1 else [timesteps - 1]


def ddim_sample(denoiser, cond: torch.Tensor, start_noise: torch.Tensor, ts: list[int],
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Run the deterministic (eta=0) reverse chain from the fixed start noise; returns the final x0.

    Python control flow depends only on the fixed timestep list, so the chain unrolls cleanly into ONNX.
    """
    x = start_noise.expand(cond.shape[0], -1)
    x0 = x
    for i, t in enumerate(ts):
        x0 = denoiser(x, torch.tensor([float(t)], device=cond.device), cond)
        if i == len(ts) - 1:
            break
        ab_t, ab_next = alphas_cumprod[t], alphas_cumprod[ts[i + 1]]
        eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x0
