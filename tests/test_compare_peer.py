"""scripts/compare_peer.py without its peer installed: how it asks fer for a label, and its one-line errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_peer.py"


def _load():
    spec = importlib.util.spec_from_file_location("compare_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeFer:
    """Answers like fer's FER.detect_emotions: one face per given box, scores rounded to two decimals."""

    def __init__(self, scores):
        self.scores, self.calls = scores, []

    def detect_emotions(self, img, face_rectangles):
        self.calls.append((img.shape, face_rectangles))
        return [{"box": face_rectangles[0], "emotions": self.scores.pop(0)}]


def test_fer_labels_gives_the_whole_face_and_takes_the_first_highest_score():
    cp = _load()
    order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    tie = dict.fromkeys(order, 0.0) | {"sad": 0.4, "neutral": 0.4}
    sure = dict.fromkeys(order, 0.0) | {"happy": 0.9}
    fake = _FakeFer([tie, sure])
    labels = cp.fer_labels(fake, np.zeros((2, 48, 48, 1), np.uint8))
    assert labels.tolist() == [order.index("sad"), order.index("happy")]
    assert fake.calls == [((48, 48, 3), [(0, 0, 48, 48)])] * 2  # BGR, the face box is the whole crop


def test_an_unwritable_json_path_is_one_line_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "missing"), "--json",
                           str(blocker / "peer.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: --json {blocker / 'peer.json'}: {blocker} is not a folder"]
