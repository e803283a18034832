"""Classification, confidence-calibration and selective-prediction metrics, and their images (numpy + OpenCV,
no torch)."""

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
    return write_png(img, path)


def write_png(img: np.ndarray, path: str | Path) -> Path:
    """Write an image to a temporary name and rename it into place."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), img):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- confidence calibration
ECE_BINS = 15  # equal-width bins of the top-1 confidence, as in Guo et al. 2017 ("On calibration of modern NNs")
TEMPERATURE_RANGE = (0.1, 10.0)
MAX_LABEL_SMOOTHING = 0.5
LOSS_FLOOR = 1e-4  # the fit's log loss clips probabilities here: undoing smoothing can set a class to exactly 0


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def calibrated_probabilities(logits: np.ndarray, temperature: float = 1.0,
                             label_smoothing: float = 0.0) -> np.ndarray:
    """Class probabilities from logits: softmax(logits / temperature), then label smoothing undone.

    A model trained against label-smoothed targets ((1 - e) one-hot + e / C) learns to predict them, so its
    softmax never exceeds 1 - e + e / C and it is under-confident where it is sure. Undoing it,
    max(p - e / C, 0) renormalised, is the inverse map; the temperature rescales the logits first. Both keep
    the most likely class, so accuracy does not change. (1, 0) is the plain softmax."""
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if label_smoothing > 0:
        p = np.maximum(p - label_smoothing / p.shape[-1], 0.0)  # the top class always stays above 0
        p /= p.sum(axis=-1, keepdims=True)
    return p.astype(np.float32)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width bin of the top-1 confidence: how many faces, their mean confidence and their accuracy."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == np.asarray(labels)).astype(np.float64)
    idx = np.minimum((conf * bins).astype(np.int64), bins - 1)  # a confidence of exactly 1 is in the last bin
    count = np.bincount(idx, minlength=bins)
    safe = np.maximum(count, 1)
    return {"edges": np.linspace(0.0, 1.0, bins + 1).round(6).tolist(), "count": count.tolist(),
            "confidence": (np.bincount(idx, conf, bins) / safe).tolist(),
            "accuracy": (np.bincount(idx, correct, bins) / safe).tolist()}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over the confidence bins of |accuracy - mean confidence|, weighted by the bin's share of the faces."""
    r = reliability_bins(probs, labels, bins)
    n = np.asarray(r["count"], np.float64)
    gap = np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"]))
    return float((n * gap).sum() / max(n.sum(), 1))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class, probabilities clipped at LOSS_FLOOR."""
    p = np.asarray(probs, np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.maximum(p, LOSS_FLOOR)).mean())


def fit_calibration(logits: np.ndarray, labels: np.ndarray, label_smoothing: bool = True) -> tuple[float, float]:
    """(temperature, label_smoothing) of `calibrated_probabilities` that minimise the log loss on labelled
    logits; `label_smoothing=False` fits the temperature alone (plain temperature scaling).

    Two parameters: a grid over log T x e, then three finer grids around the best point (the loss is smooth
    but, with the clipping, not convex in e)."""
    logits, labels = np.asarray(logits), np.asarray(labels)

    def loss(t: float, e: float) -> float:
        return log_loss(calibrated_probabilities(logits, t, e), labels)

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    log_ts = np.linspace(lo, hi, 41)
    es = np.linspace(0.0, MAX_LABEL_SMOOTHING, 26) if label_smoothing else np.zeros(1)
    dt, de = log_ts[1] - log_ts[0], (es[1] - es[0]) if label_smoothing else 0.0
    best = min((loss(np.exp(t), e), t, e) for t in log_ts for e in es)
    for _ in range(3):
        _, t0, e0 = best
        ts = np.clip(t0 + np.linspace(-dt, dt, 11), lo, hi)
        es = np.unique(np.clip(e0 + np.linspace(-de, de, 11), 0.0, MAX_LABEL_SMOOTHING))
        best = min([best] + [(loss(np.exp(t), e), t, e) for t in ts for e in es])
        dt, de = dt / 5, de / 5
    return float(np.exp(best[1])), float(best[2])


# ---------------------------------------------------------------- selective prediction
COVERAGES = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 5 %, 10 %, ..., 100 %


def risk_coverage(confidence: np.ndarray, correct: np.ndarray, coverages=COVERAGES) -> dict:
    """Selective prediction: answer only the most confident faces. For each coverage c, the accuracy on the
    c share of faces with the highest confidence, and the confidence threshold that keeps them (`run
    --min-confidence`). `aurc`: the area under the risk (1 - accuracy) against coverage, over every face."""
    conf = np.asarray(confidence, np.float64)
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(np.asarray(correct, np.float64)[order])
    n = len(conf)
    kept = np.arange(1, n + 1)
    rows = []
    for c in coverages:
        k = max(1, int(round(c * n)))
        rows.append({"coverage": float(c), "accuracy": float(hits[k - 1] / k), "threshold": float(conf[order[k - 1]]),
                     "faces": int(k)})
    return {"points": rows, "aurc": float((1.0 - hits / kept).mean()), "faces": int(n)}


# ---------------------------------------------------------------- images
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GREY, _BLACK = (150, 150, 150), (0, 0, 0)


class _Plot:
    """A square plot area on an image: data (x, y) in [0,1] x [y0,y1] -> pixels, with axes, grid and labels."""

    def __init__(self, img, left: int, top: int, size: int, xlabel: str, ylabel: str, y_range=(0.0, 1.0)):
        self.img, self.left, self.top, self.size, self.y_range = img, left, top, size, y_range
        for i in range(6):
            v = i / 5
            x, y = self.px(v, y_range[0])[0], self.px(0, y_range[0] + v * (y_range[1] - y_range[0]))[1]
            cv2.line(img, (x, top), (x, top + size), (230, 230, 230), 1)
            cv2.line(img, (left, y), (left + size, y), (230, 230, 230), 1)
            cv2.putText(img, f"{v:.1f}", (x - 10, top + size + 16), _FONT, 0.4, _BLACK, 1, cv2.LINE_AA)
            yv = y_range[0] + v * (y_range[1] - y_range[0])
            cv2.putText(img, f"{yv:.2f}", (left - 36, y + 4), _FONT, 0.4, _BLACK, 1, cv2.LINE_AA)
        cv2.rectangle(img, (left, top), (left + size, top + size), _BLACK, 1)
        cv2.putText(img, xlabel, (left + size // 2 - 4 * len(xlabel), top + size + 34), _FONT, 0.45, _BLACK, 1,
                    cv2.LINE_AA)
        cv2.putText(img, ylabel, (left - 36, top - 8), _FONT, 0.45, _BLACK, 1, cv2.LINE_AA)

    def px(self, x: float, y: float) -> tuple[int, int]:
        lo, hi = self.y_range
        return (int(round(self.left + x * self.size)),
                int(round(self.top + self.size * (1 - (y - lo) / (hi - lo)))))


def write_reliability_png(before: dict, after: dict | None, path: str | Path, title: str = "") -> Path:
    """Reliability diagram (`reliability_bins`): accuracy per confidence bin against the diagonal, the gap to
    the bin's mean confidence in red, the share of faces per bin in grey; one panel per entry, before and
    after calibration. `before`/`after`: {"bins": reliability_bins(...), "ece": float, "name": str}."""
    panels = [p for p in (before, after) if p is not None]
    size, left, top = 360, 60, 70
    img = np.full((top + size + 60, len(panels) * (size + left + 30) + 10, 3), 255, np.uint8)
    cv2.putText(img, title, (10, 25), _FONT, 0.55, _BLACK, 1, cv2.LINE_AA)
    for i, panel in enumerate(panels):
        plot = _Plot(img, left + i * (size + left + 30), top, size, "confidence", "accuracy")
        r = panel["bins"]
        edges, total = r["edges"], max(sum(r["count"]), 1)
        for j, n in enumerate(r["count"]):
            if not n:
                continue
            x0, x1 = plot.px(edges[j], 0)[0] + 1, plot.px(edges[j + 1], 0)[0] - 1
            base = plot.px(0, 0)[1]
            cv2.rectangle(img, (x0, plot.px(0, r["accuracy"][j])[1]), (x1, base), (200, 130, 40), -1)
            ya, yc = plot.px(0, r["accuracy"][j])[1], plot.px(0, r["confidence"][j])[1]
            cv2.rectangle(img, (x0, min(ya, yc)), (x1, max(ya, yc)), (60, 60, 220), 2)
            cv2.rectangle(img, (x0, base - int(0.25 * size * n / total)), (x1, base), _GREY, -1)
        cv2.line(img, plot.px(0, 0), plot.px(1, 1), _BLACK, 1, cv2.LINE_AA)
        cv2.putText(img, f"{panel['name']}: ECE {panel['ece']:.4f}", (plot.left, top - 28), _FONT, 0.5, _BLACK, 1,
                    cv2.LINE_AA)
    cv2.putText(img, "blue: accuracy per bin; red: gap to its mean confidence; grey: share of faces",
                (10, img.shape[0] - 10), _FONT, 0.42, (80, 80, 80), 1, cv2.LINE_AA)
    return write_png(img, path)


def write_risk_coverage_png(curve: dict, path: str | Path, title: str = "",
                            marks: tuple[float, ...] = (0.5, 0.8)) -> Path:
    """Accuracy against coverage (`risk_coverage`), with the accuracy and threshold at `marks` written in."""
    pts = curve["points"]
    lo = max(0.0, np.floor(min(p["accuracy"] for p in pts) * 10 - 1) / 10)
    size, left, top = 400, 60, 60
    img = np.full((top + size + 70, left + size + 30, 3), 255, np.uint8)
    cv2.putText(img, title, (10, 25), _FONT, 0.55, _BLACK, 1, cv2.LINE_AA)
    plot = _Plot(img, left, top, size, "coverage (share of faces answered)", "accuracy", (lo, 1.0))
    line = np.array([plot.px(p["coverage"], p["accuracy"]) for p in pts], np.int32)
    cv2.polylines(img, [line], False, (200, 130, 40), 2, cv2.LINE_AA)
    for p in pts:
        if any(abs(p["coverage"] - m) < 1e-9 for m in marks):
            x, y = plot.px(p["coverage"], p["accuracy"])
            cv2.circle(img, (x, y), 5, (60, 60, 220), -1, cv2.LINE_AA)
            cv2.putText(img, f"{p['accuracy']:.3f} (P >= {p['threshold']:.2f})", (x - 150, y + 20), _FONT, 0.42,
                        (60, 60, 220), 1, cv2.LINE_AA)
    cv2.putText(img, f"{curve['faces']} faces; AURC {curve['aurc']:.4f}", (10, img.shape[0] - 10), _FONT, 0.42,
                (80, 80, 80), 1, cv2.LINE_AA)
    return write_png(img, path)


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict:
    """How far logits `got` are from the reference `ref` (same faces): top-1 agreement, mean KL divergence of
    the softmaxes, the largest absolute logit difference. The one comparison of export verification,
    calibration and `eval --compare`."""
    p, q = softmax(ref), softmax(got)
    kl = np.maximum((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(-1), 0.0)
    return {"top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
            "mean_kl": float(kl.mean()), "max_abs_logit_diff": float(np.abs(ref - got).max()),
            "images": int(len(ref))}
