"""Classification metrics and the confusion-matrix image (numpy + OpenCV, no torch)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def classification_report(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    return {
        "images": int(len(labels)),
        "accuracy": float(tp.sum() / max(1, len(labels))),
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class": {c: {"recall": float(recall[i]), "precision": float(precision[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
    }


def write_confusion_png(cm: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class), drawn with OpenCV; written atomically."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n, cell, left, top = len(classes), 64, 110, 70
    img = np.full((top + n * cell + 90, left + n * cell + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (10, 25), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(n):
        for j in range(n):
            v = rows[i, j]
            shade = int(255 * (1 - v))
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (200, 200, 200), 1)
            colour = (255, 255, 255) if v > 0.5 else (0, 0, 0)
            cv2.putText(img, f"{v:.2f}", (x0 + 12, y0 + 38), font, 0.5, colour, 1, cv2.LINE_AA)
        cv2.putText(img, classes[i], (8, top + i * cell + 38), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, classes[i][:7], (left + i * cell + 4, top + n * cell + 20), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, "rows: true class, columns: predicted (row-normalised)", (10, top + n * cell + 60), font,
                0.5, (80, 80, 80), 1, cv2.LINE_AA)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), img):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)
    return path
