"""IoU tracking and probability smoothing (lldif_edge.app.track)."""

from __future__ import annotations

import numpy as np
import pytest

from lldif_edge.app.track import Tracker, iou


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10, 0.9), (0, 0, 5, 5)) == pytest.approx(0.25)


def p(*v):
    return np.array([v], np.float32)


def test_ids_stable_while_moving_and_new_faces_get_new_ids():
    tr = Tracker()
    ids = []
    for k in range(10):
        a = (100 + 4 * k, 100, 80, 80, 0.9)  # drifts right
        b = (400 - 3 * k, 200, 60, 60, 0.8)  # drifts left
        boxes = [a, b] if k % 2 == 0 else [b, a]  # order of detections does not matter
        tracks = tr.update(boxes, np.full((2, 3), 1 / 3, np.float32))
        ids.append({t.box[0] < 300: t.id for t in tracks})
    assert all(d == {True: 1, False: 2} for d in ids)
    t = tr.update([(10, 10, 30, 30)], p(1, 0, 0))
    assert t[0].id == 3


def test_tracks_expire_after_max_missed():
    tr = Tracker(max_missed=2)
    box = (50, 50, 40, 40)
    first = tr.update([box], p(1, 0))[0].id
    tr.update([], None)
    tr.update([], None)
    assert [t.id for t in tr.tracks] == [first]  # missed 2 frames: kept
    assert tr.update([box], p(1, 0))[0].id == first  # comes back with the same id
    for _ in range(3):
        tr.update([], None)
    assert tr.tracks == []
    assert tr.update([box], p(1, 0))[0].id != first


def test_ema_smoothing_and_no_flicker():
    tr = Tracker(alpha=0.25)
    box = (0, 0, 50, 50)
    t = tr.update([box], p(0.8, 0.2))[0]
    np.testing.assert_allclose(t.probs, [0.8, 0.2])
    t = tr.update([box], p(0.0, 1.0))[0]
    np.testing.assert_allclose(t.probs, [0.6, 0.4], atol=1e-6)
    np.testing.assert_allclose(t.raw, [0.0, 1.0])
    # noisy per-frame labels around a steady class 0: the smoothed label stays put
    rng = np.random.default_rng(0)
    raw_flips = smooth_flips = 0
    last_raw = last_smooth = 0
    for _ in range(50):
        q = 0.62 + rng.normal(0, 0.15)
        t = tr.update([box], p(q, 1 - q))[0]
        raw_flips += int(np.argmax(t.raw)) != last_raw
        smooth_flips += int(np.argmax(t.probs)) != last_smooth
        last_raw, last_smooth = int(np.argmax(t.raw)), int(np.argmax(t.probs))
    assert raw_flips >= 5 and smooth_flips <= 1
    assert t.id == 1


def test_greedy_matching_prefers_best_overlap():
    tr = Tracker(iou_threshold=0.1)
    tr.update([(0, 0, 100, 100), (60, 0, 100, 100)], np.eye(2, dtype=np.float32))
    # one detection overlapping both tracks goes to the one it overlaps most
    t = tr.update([(55, 0, 100, 100)], p(0, 1))[0]
    assert t.id == 2


def test_bad_alpha():
    with pytest.raises(ValueError):
        Tracker(alpha=0)
