"""Procedurally drawn faces (ellipse, eyes, brows, a mouth whose curve varies): generated test and
verification inputs when no real images are given. Torch-free, deterministic for a seed."""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_face(rng: np.random.Generator, size: int = 48, expression: int | None = None) -> np.ndarray:
    """One grey uint8 (size,size) face; `expression` (0..6) sets mouth and brow shape when given."""
    s = size / 48.0
    img = np.full((size, size), rng.integers(20, 90), np.uint8)
    cx, cy = size / 2 + rng.normal(0, 1.5 * s), size / 2 + rng.normal(0, 1.5 * s)
    skin = int(rng.integers(120, 220))
    cv2.ellipse(img, (int(cx), int(cy)), (int(17 * s), int(21 * s)), 0, 0, 360, skin, -1)
    e = int(rng.integers(0, 7)) if expression is None else expression
    mouth_curve = [-6, -3, 0, 8, -7, 0, 1][e] * s  # positive: smile
    mouth_open = [2, 1, 5, 3, 1, 9, 1][e] * s
    brow_tilt = [4, 2, -3, 0, -2, -5, 0][e] * s
    eye_y = int(cy - 5 * s)
    for side in (-1, 1):
        ex = int(cx + side * 7 * s)
        cv2.circle(img, (ex, eye_y), max(1, int(2.5 * s)), skin // 3, -1)
        cv2.line(img, (ex - int(4 * s), int(eye_y - 6 * s - side * brow_tilt / 2)),
                 (ex + int(4 * s), int(eye_y - 6 * s + side * brow_tilt / 2)), skin // 3, max(1, int(s)))
    my = int(cy + 9 * s)
    pts = np.array([[cx - 8 * s, my - mouth_curve / 2], [cx, my + mouth_curve / 2], [cx + 8 * s, my - mouth_curve / 2]])
    cv2.polylines(img, [pts.astype(np.int32)], False, skin // 4, max(1, int(mouth_open / 2)))
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def synthetic_faces(n: int, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n faces (n,size,size) uint8 with their expression ids (cycling through the 7 classes)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    return np.stack([synthetic_face(rng, size, int(e)) for e in labels]), labels
