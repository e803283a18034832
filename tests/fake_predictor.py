"""A stand-in predictor for tests without a model package. Not an expression model."""

from __future__ import annotations

import numpy as np

FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


class BrightnessPredictor:
    """Probabilities from the mean brightness of each crop: darker crops lean to the first classes.

    Same interface as the model runtimes' predictor: `classes`, `predict(faces) -> (N, C) float32`; stateless,
    hence thread-safe. `calls` counts `predict` calls (not locked; for single-threaded tests only).
    """

    def __init__(self, classes: list[str] | None = None, channels: int = 3, sharpness: float = 4.0):
        self.classes = list(classes or FER_CLASSES)
        self.channels = channels
        self.sharpness = sharpness
        self.calls = 0

    def predict(self, faces) -> np.ndarray:
        self.calls += 1
        c = len(self.classes)
        means = np.array([float(np.asarray(f, dtype=np.float32).mean()) for f in faces], np.float32)
        pos = means[:, None] / 255.0 * (c - 1)
        logits = -self.sharpness * (pos - np.arange(c, dtype=np.float32)[None, :]) ** 2
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
