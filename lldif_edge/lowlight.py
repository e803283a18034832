"""Low-light synthesis (docs/design.md, section 2), numpy version for files and evaluation sets.

y = b * (a*x)^g with a~U(0.9,1), b~U(0.5,1), g~U(1.5,5); then shot and read noise
y + sqrt(y*s)*N(0,1) + r*N(0,1) with s~U(1e-3,1e-2), r~U(2e-3,1e-2); clip; quantise to 8 bits.
The torch twin used for on-the-fly training augmentation is `lldif.augment.darken_batch`.
"""

from __future__ import annotations

import numpy as np

RANGES = {
    "a": (0.9, 1.0),
    "b": (0.5, 1.0),
    "gamma": (1.5, 5.0),
    "shot": (1e-3, 1e-2),
    "read": (2e-3, 1e-2),
}


def darken(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken one uint8 image (H,W) or (H,W,C) with fresh parameters drawn from `rng`."""
    x = image.astype(np.float32) / 255.0
    a, b, g, s, r = (rng.uniform(*RANGES[k]) for k in ("a", "b", "gamma", "shot", "read"))
    y = b * np.power(a * x, g)
    y = y + np.sqrt(y * s) * rng.standard_normal(y.shape) + r * rng.standard_normal(y.shape)
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def darken_many(images: np.ndarray, seed: int) -> np.ndarray:
    """Darken a stack of uint8 images, one parameter draw per image, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    return np.stack([darken(im, rng) for im in images]) if len(images) else images.copy()
