"""Learnable synthetic "faces": one geometric pattern per class, with jitter and noise (numpy + OpenCV only).

Used by the tests (through conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lldif_edge.data import FER_CLASSES

SIZE = 48


def _pattern(cls: int, rng: np.random.Generator) -> np.ndarray:
    """One 48x48 float image in [0,1] for class index `cls` (0..6). Patterns survive horizontal flips, small
    affine jitter and per-image standardisation, so a small model separates them even after darkening."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cy, cx = SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3)
    r = np.hypot(yy - cy, xx - cx)
    period = rng.uniform(7, 9)
    phase = rng.uniform(0, 2 * np.pi)
    k = cls % 7
    if k == 0:  # horizontal stripes
        img = 0.5 + 0.5 * np.sin(2 * np.pi * yy / period + phase)
    elif k == 1:  # vertical stripes
        img = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + phase)
    elif k == 2:  # filled disc
        img = (r < rng.uniform(10, 14)).astype(np.float32)
    elif k == 3:  # checkerboard
        img = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * yy / period + phase) * np.sin(2 * np.pi * xx / period))
    elif k == 4:  # bright top, dark bottom
        img = (yy < cy).astype(np.float32)
    elif k == 5:  # ring
        img = (np.abs(r - rng.uniform(12, 16)) < 3).astype(np.float32)
    else:  # plus sign
        w = rng.uniform(3, 5)
        img = ((np.abs(yy - cy) < w) | (np.abs(xx - cx) < w)).astype(np.float32)
    lo, hi = rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.95)
    img = lo + (hi - lo) * img + rng.normal(0, 0.05, img.shape)
    return np.clip(img, 0, 1)


def face_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 uint8 grayscale image of class `cls`."""
    return np.round(_pattern(cls, rng) * 255).astype(np.uint8)


def make_faces(root: str | Path, n_per_class: int, seed: int = 0, classes: list[str] | None = None,
               ext: str = ".png") -> Path:
    """Write `n_per_class` synthetic images per class into `<root>/<class>/NNN.png`; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(classes or FER_CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            path = d / f"{j:03d}{ext}"
            if not cv2.imwrite(str(path), face_image(i, rng)):
                raise OSError(f"cannot write {path}")
    return root
