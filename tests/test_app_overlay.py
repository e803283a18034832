"""Drawing (lldif_edge.app.overlay)."""

from __future__ import annotations

import numpy as np

from lldif_edge.app.overlay import draw, label_color
from lldif_edge.app.recognizer import Face


def face(box, label="happy", conf=0.8, tid=3):
    return Face(box, tid, label, conf, {label: conf})


def test_draw_in_place_and_at_the_edges():
    frame = np.zeros((240, 320, 3), np.uint8)
    out = draw(frame, [face((100, 80, 60, 60))], fps=12.3)
    assert out is frame and frame.any()
    assert (frame[80, 100:160] > 0).any()  # box edge
    assert frame[:30, :100].any()  # FPS text
    # boxes touching every edge, untracked faces, unknown labels, grey frames: no errors, stays in bounds
    edge = [face((0, 0, 50, 50), tid=-1), face((270, 190, 50, 50), "bored", 1.2), face((0, 200, 320, 40))]
    draw(np.zeros((240, 320, 3), np.uint8), edge, fps=None)
    draw(np.zeros((240, 320), np.uint8), edge, fps=30.0)


def test_label_colors_stable():
    assert label_color("happy") == label_color("happy") != label_color("sad")
    assert label_color("bored") == label_color("bored")
