"""Per-face tracking by greedy IoU matching, with per-track smoothing of the class probabilities.

Track ids are stable while a face keeps overlapping its previous box; a track that is not matched for more than
`max_missed` consecutive frames is dropped. Probabilities are smoothed with an exponential moving average
(`alpha` = weight of the newest frame), so the label does not flicker from frame to frame.

Not thread-safe by itself: `Recognizer` holds a lock around `update`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a[:4]
    bx, by, bw, bh = b[:4]
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = float(iw) * float(ih)
    return inter / (float(aw) * ah + float(bw) * bh - inter)


@dataclass
class Track:
    id: int
    box: Box
    probs: np.ndarray  # smoothed, float32, sums to 1
    hits: int = 1  # frames matched
    missed: int = 0  # consecutive frames not matched
    raw: np.ndarray | None = field(default=None, repr=False)  # this frame's unsmoothed probabilities


class Tracker:
    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, alpha: float = 0.4):
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.alpha = alpha
        self.tracks: list[Track] = []
        self._next_id = 1

    def reset(self) -> None:
        self.tracks.clear()
        self._next_id = 1

    def update(self, boxes: list, probs: np.ndarray | None) -> list[Track]:
        """Match this frame's boxes (x,y,w,h[,score]) and their probabilities (N,C) to tracks.

        Returns one track per input box, in input order. Greedy: the pair with the highest IoU first.
        """
        n = len(boxes)
        assigned: list[Track | None] = [None] * n
        used = set()
        if n and self.tracks:
            pairs = []
            for i, b in enumerate(boxes):
                for j, t in enumerate(self.tracks):
                    v = iou(b, t.box)
                    if v >= self.iou_threshold:
                        pairs.append((v, i, j))
            pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
            for _, i, j in pairs:
                if assigned[i] is None and j not in used:
                    assigned[i] = self.tracks[j]
                    used.add(j)
        for j, t in enumerate(self.tracks):
            if j not in used:
                t.missed += 1
                t.raw = None
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for i, b in enumerate(boxes):
            p = None if probs is None else np.asarray(probs[i], dtype=np.float32)
            t = assigned[i]
            box = tuple(int(v) for v in b[:4])
            if t is None:
                t = Track(self._next_id, box, p.copy() if p is not None else np.zeros(0, np.float32))
                self._next_id += 1
                self.tracks.append(t)
            else:
                t.box = box
                t.hits += 1
                t.missed = 0
                if p is not None:
                    if t.probs.shape == p.shape:
                        t.probs = (self.alpha * p + (1.0 - self.alpha) * t.probs).astype(np.float32)
                    else:
                        t.probs = p.copy()
            t.raw = p
            assigned[i] = t
        return assigned  # type: ignore[return-value]
