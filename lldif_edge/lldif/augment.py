"""Vectorised training augmentation on whole batches: flip, small shift/scale/rotation, low-light synthesis."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lldif_edge.lowlight import RANGES


def _uniform(n: int, key: str, gen: torch.Generator) -> torch.Tensor:
    lo, hi = RANGES[key]
    return lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=gen)


def darken_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The low-light synthesis (docs/design.md, section 2) on a float batch in [0,1], new parameters per image;
    quantised to 8 bits."""
    n = x.shape[0]
    a, b, g = _uniform(n, "a", gen), _uniform(n, "b", gen), _uniform(n, "gamma", gen)
    s, r = _uniform(n, "shot", gen), _uniform(n, "read", gen)
    y = b * (a * x).pow(g)
    y = y + (y * s).sqrt() * torch.randn(x.shape, generator=gen) + r * torch.randn(x.shape, generator=gen)
    return torch.round(y.clamp(0, 1) * 255) / 255


def random_affine(x: torch.Tensor, gen: torch.Generator, shift: float = 0.1, scale: float = 0.1,
                  rotate_deg: float = 10.0) -> torch.Tensor:
    n = x.shape[0]
    s = 1 + (torch.rand(n, generator=gen) * 2 - 1) * scale
    a = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * shift * 2  # grid units span [-1, 1]
    theta = torch.stack([
        torch.stack([torch.cos(a) / s, -torch.sin(a) / s, t[:, 0]], dim=1),
        torch.stack([torch.sin(a) / s, torch.cos(a) / s, t[:, 1]], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def to_model_input(images_u8: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(N,H,W,C) uint8 -> (N,in_chans,H,W) float in [0,1]; grayscale is replicated."""
    x = images_u8.permute(0, 3, 1, 2).float() / 255.0
    return x.expand(-1, in_chans, -1, -1).contiguous() if x.shape[1] != in_chans else x


def augment_pair(images_u8: torch.Tensor, in_chans: int, gen: torch.Generator,
                 darken_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The training view (flipped, moved, darkened with probability `darken_p`) and the same view before
    darkening: with `--epd-from clean` stage 1 makes the EPD from that normal-light face."""
    x = to_model_input(images_u8, 1 if images_u8.shape[-1] == 1 else in_chans)
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    clean = random_affine(x, gen)
    x = clean
    if darken_p > 0:
        dark = (torch.rand(x.shape[0], generator=gen) < darken_p)[:, None, None, None]
        x = torch.where(dark, darken_batch(clean, gen), clean)
    if x.shape[1] != in_chans:
        x, clean = x.expand(-1, in_chans, -1, -1).contiguous(), clean.expand(-1, in_chans, -1, -1).contiguous()
    return x, clean


def augment(images_u8: torch.Tensor, in_chans: int, gen: torch.Generator, darken_p: float) -> torch.Tensor:
    return augment_pair(images_u8, in_chans, gen, darken_p)[0]
