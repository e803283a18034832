"""Face alignment from five landmarks: the crop the expression model was trained on.

The model learnt from FER2013 faces: 48x48 crops in which, measured with YuNet on 704 val faces (scaled up 4x),
the eyes sit at 37.5 % of the height, 36 % of the width apart, and the mouth corners at 75 %. `alignment_matrix`
maps a detected face onto that frame: it turns the face so the eyes are level, scales it so the eye distance and
the eye-to-mouth distance fit the template (the larger of the two, since turning the head away shortens one of
them but never lengthens it), and centres it between eyes and mouth.

Landmarks are YuNet's order: the eye on the image's left, the other eye, nose tip, the mouth corner on the
image's left, the other one; (5, 2) in frame pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# FER2013 framing, as fractions of the crop's side (YuNet's median landmarks on val faces, made symmetric).
EYE_Y = 0.375
EYE_DISTANCE = 0.362
MOUTH_Y = 0.748


def alignment_matrix(landmarks: np.ndarray, out_px: int) -> np.ndarray:
    """The 2x3 similarity transform from frame pixels to an aligned `out_px`-square crop."""
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    left_eye, right_eye = p[0], p[1]
    eyes = (left_eye + right_eye) / 2.0
    mouth = (p[3] + p[4]) / 2.0
    dx, dy = right_eye - left_eye
    angle = math.atan2(dy, dx)  # the eye line's tilt; turning by -angle levels it
    eye_dist = math.hypot(dx, dy)
    eye_mouth = float(np.hypot(*(mouth - eyes)))
    size = max(eye_dist / EYE_DISTANCE, eye_mouth / (MOUTH_Y - EYE_Y), 1e-3)  # face side in frame pixels
    s = out_px / size
    c, si = s * math.cos(-angle), s * math.sin(-angle)
    rot = np.array([[c, -si], [si, c]])
    anchor = (eyes + mouth) / 2.0  # lands on the template's point between eyes and mouth
    target = np.array([0.5, (EYE_Y + MOUTH_Y) / 2.0]) * out_px
    return np.hstack([rot, (target - rot @ anchor)[:, None]]).astype(np.float64)


def align_face(frame: np.ndarray, landmarks: np.ndarray, out_px: int) -> np.ndarray:
    """The aligned `out_px`-square crop of one face (same channels as `frame`); outside the frame is replicated."""
    m = alignment_matrix(landmarks, out_px)
    return cv2.warpAffine(frame, m, (out_px, out_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
