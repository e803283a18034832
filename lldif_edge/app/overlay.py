"""Drawing on a BGR frame, in place: face box, label, confidence bar, track id, FPS."""

from __future__ import annotations

import zlib

import cv2
import numpy as np

# BGR colours for the FER classes; other labels get a colour from a hash of their name.
COLORS = {
    "angry": (40, 40, 230), "disgust": (40, 150, 40), "fear": (180, 60, 160), "happy": (40, 210, 250),
    "sad": (200, 120, 40), "surprise": (240, 200, 0), "neutral": (200, 200, 200),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX
NOT_SURE = "not sure"  # what a face whose label is None ("min_confidence") shows
NOT_SURE_COLOR = (128, 128, 128)


def label_color(label: str) -> tuple[int, int, int]:
    c = COLORS.get(label)
    if c is None:
        h = zlib.crc32(label.encode())
        c = (80 + h % 160, 80 + (h >> 8) % 160, 80 + (h >> 16) % 160)
    return c


def shown_label(face) -> tuple[str | None, float]:
    """What the overlay shows: the track's smoothed label when the face is tracked, else this frame's."""
    if face.track_id >= 0 and getattr(face, "track_confidence", None) is not None:
        return face.track_label, face.track_confidence
    return face.label, face.confidence


def draw_face(frame: np.ndarray, face) -> None:
    """Box, `#id label 87%` above it and a confidence bar below it (inside the frame when near an edge); a
    label of None (under the recognizer's min_confidence) shows as "not sure", in grey."""
    H, W = frame.shape[:2]
    x, y, w, h = face.box
    label, confidence = shown_label(face)
    color = label_color(label) if label is not None else NOT_SURE_COLOR
    t = max(1, round(W / 400))
    scale = max(0.4, W / 1400)
    cv2.rectangle(frame, (x, y), (x + w, y + h), color, t)
    text = (f"#{face.track_id} " if face.track_id >= 0 else "") + f"{label or NOT_SURE} {confidence:.0%}"
    (tw, th), base = cv2.getTextSize(text, FONT, scale, t)
    ty = y - 4 if y - th - base - 4 >= 0 else min(H - base, y + h + th + 12)
    cv2.rectangle(frame, (x, ty - th - base), (x + tw + 4, ty + base // 2), color, -1)
    cv2.putText(frame, text, (x + 2, ty - base // 2), FONT, scale, (0, 0, 0), t, cv2.LINE_AA)
    bar_h = max(3, h // 16)
    by = y + h + 3 if y + h + 3 + bar_h < H else max(0, y + h - bar_h - 3)
    cv2.rectangle(frame, (x, by), (x + w, by + bar_h), (60, 60, 60), -1)
    cv2.rectangle(frame, (x, by), (x + round(w * min(max(confidence, 0.0), 1.0)), by + bar_h), color, -1)


def draw_fps(frame: np.ndarray, fps: float) -> None:
    W = frame.shape[1]
    scale, t = max(0.45, W / 1300), max(1, round(W / 500))
    text = f"{fps:.1f} FPS"
    cv2.putText(frame, text, (8, 8 + round(22 * scale)), FONT, scale, (0, 0, 0), t + 2, cv2.LINE_AA)
    cv2.putText(frame, text, (8, 8 + round(22 * scale)), FONT, scale, (255, 255, 255), t, cv2.LINE_AA)


def draw(frame: np.ndarray, faces, fps: float | None = None) -> np.ndarray:
    """Draw all faces (and the FPS when given) on `frame` in place; returns it."""
    for f in faces:
        draw_face(frame, f)
    if fps is not None:
        draw_fps(frame, fps)
    return frame
