"""Face alignment from five landmarks (lldif_edge.app.align) and its use in Recognizer.crop."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from fake_predictor import BrightnessPredictor

from lldif_edge.app.align import EYE_DISTANCE, EYE_Y, MOUTH_Y, align_face, alignment_matrix
from lldif_edge.app.detect import Detection
from lldif_edge.app.recognizer import Recognizer

# An upright face in template coordinates (fractions of the crop's side): eyes, nose, mouth corners.
TEMPLATE = np.array([[0.5 - EYE_DISTANCE / 2, EYE_Y], [0.5 + EYE_DISTANCE / 2, EYE_Y], [0.5, 0.58],
                     [0.36, MOUTH_Y], [0.64, MOUTH_Y]])


def posed(side: float, angle_deg: float, centre=(300.0, 200.0)) -> np.ndarray:
    """The template face `side` px wide, turned by `angle_deg` about its middle and placed at `centre`."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return ((TEMPLATE - 0.5) * side) @ rot.T + np.asarray(centre)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("angle", [-35.0, -10.0, 0.0, 20.0, 40.0])
@pytest.mark.parametrize("side", [40.0, 150.0, 400.0])
def test_eyes_level_and_face_framed_like_the_template(angle, side):
    out = 96
    pts = posed(side, angle)
    got = apply(alignment_matrix(pts, out), pts)
    assert got[0, 1] == pytest.approx(got[1, 1], abs=1e-6)  # eyes level
    assert got[0, 0] < got[1, 0]  # and not turned upside down
    np.testing.assert_allclose(got[:2], TEMPLATE[:2] * out, atol=1e-6)  # scaled and placed like FER2013 faces
    np.testing.assert_allclose(got[3:], TEMPLATE[3:] * out, atol=1e-6)


def test_head_turned_away_keeps_the_scale_of_the_unshortened_distance():
    pts = posed(200.0, 0.0)
    turned = pts.copy()
    mid = turned[:, 0].mean()
    turned[:, 0] = mid + 0.5 * (turned[:, 0] - mid)  # yaw: the eyes look half as far apart
    got = apply(alignment_matrix(turned, 100), turned)
    eye_mouth = (got[3, 1] + got[4, 1]) / 2 - got[0, 1]
    assert eye_mouth == pytest.approx((MOUTH_Y - EYE_Y) * 100, rel=1e-6)  # not blown up 2x


def test_align_face_moves_the_pixels():
    """Dots drawn at the landmarks of a tilted face come out at the template's eye positions, level."""
    frame = np.zeros((400, 600, 3), np.uint8)
    pts = posed(160.0, 25.0)
    for x, y in pts[:2]:
        cv2.circle(frame, (round(x), round(y)), 4, (255, 255, 255), -1)
    crop = align_face(frame, pts, 96)
    assert crop.shape == (96, 96, 3)
    grey = crop[..., 0].astype(np.float32)
    for ex, ey in TEMPLATE[:2] * 96:
        x0, y0 = int(ex) - 6, int(ey) - 6
        patch = grey[y0:y0 + 13, x0:x0 + 13]
        yy, xx = np.mgrid[y0:y0 + 13, x0:x0 + 13]
        assert patch.sum() > 0
        cy, cx = (patch * yy).sum() / patch.sum(), (patch * xx).sum() / patch.sum()
        assert abs(cx - ex) < 1.5 and abs(cy - ey) < 1.5


def test_recognizer_crops_aligned_only_with_landmarks_and_when_asked():
    frame = np.zeros((400, 600, 3), np.uint8)
    pts = posed(160.0, 25.0).astype(np.float32)
    with_marks = Detection(200, 100, 200, 200, 0.9, pts)
    plain = (200, 100, 200, 200, 0.9)
    assert with_marks == plain and with_marks[:4] == (200, 100, 200, 200)  # still a plain 5-tuple
    x, y, w, h, s = with_marks
    rec = Recognizer(BrightnessPredictor(), align=True)
    assert rec.crop(frame, with_marks).shape == (rec.align_px, rec.align_px, 3)  # aligned, model size x2
    assert rec.crop(frame, plain).shape == (240, 240, 3)  # no landmarks: square crop with margin
    assert Recognizer(BrightnessPredictor(), align=False).crop(frame, with_marks).shape == (240, 240, 3)
