"""scripts/make_clip.py and scripts/score_clip.py: labelled clips for `lldif-edge run` and their scoring."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fake_predictor import BrightnessPredictor

from lldif_edge.app.recognizer import Recognizer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_clip = load("make_clip")
score_clip = load("score_clip")


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory) -> Path:
    """Three tiny 'photos' with labels.csv."""
    d = tmp_path_factory.mktemp("faces")
    rows = ["file,expression,label_source,source_repo,source_path"]
    for i, label in enumerate(["happy", "sad", "angry"]):
        img = np.full((60, 50, 3), 40 + 60 * i, np.uint8)
        cv2.imwrite(str(d / f"p{i}.png"), img)
        rows.append(f"p{i}.png,{label},test,none,none")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d


def test_make_clip_writes_clips_and_truth(faces_dir, tmp_path):
    assert make_clip.main([str(faces_dir), "--out", str(tmp_path), "--frames", "2"]) == 0
    for layout, per_frame in (("one", 1), ("six", 6)):
        for light in ("dark", "normal"):
            clip = tmp_path / f"{layout}_{light}.mp4"
            truth = json.loads(clip.with_suffix(".truth.json").read_text())
            assert len(truth["frames"]) == 6 and all(len(f) == per_frame for f in truth["frames"])
            cap = cv2.VideoCapture(str(clip))
            n = 0
            while cap.read()[0]:
                n += 1
            assert n == 6
    one = json.loads((tmp_path / "one_normal.truth.json").read_text())["frames"]
    assert [f[0]["label"] for f in one] == ["happy", "happy", "sad", "sad", "angry", "angry"]
    x, y, w, h = one[0][0]["rect"]
    assert h == int(480 * 0.6) and 0 <= x and x + w <= 640
    six = json.loads((tmp_path / "six_normal.truth.json").read_text())["frames"]
    assert [f["photo"] for f in six[2]] == ["p1.png", "p2.png", "p0.png"] * 2  # moved on by one photo
    assert not list(tmp_path.glob(".*"))  # no temp files left


def face(box, label, track_id=1, track_label=None, probs=None):
    return {"box": box, "label": label, "track_id": track_id, "track_label": track_label or label,
            "probabilities": probs or {}}


def test_score_counts_found_right_and_majority():
    truth = {"photos": ["a", "b"], "frames": [
        [{"photo": "a", "label": "happy", "rect": [0, 0, 100, 100]}],
        [{"photo": "a", "label": "happy", "rect": [0, 0, 100, 100]}],
        [{"photo": "a", "label": "happy", "rect": [0, 0, 100, 100]}],
        [{"photo": "b", "label": "sad", "rect": [0, 0, 100, 100]}],
    ]}
    frames = [
        {"frame": 0, "faces": [face([10, 10, 50, 50], "happy"), face([200, 200, 90, 90], "sad")]},  # 2nd: elsewhere
        {"frame": 1, "faces": [face([10, 10, 20, 20], "sad"), face([5, 5, 60, 60], "happy", track_label="sad")]},
        {"frame": 2, "faces": [face([10, 10, 50, 50], None, track_label="sad")]},  # not sure in this frame
        {"frame": 3, "faces": []},
    ]
    s = score_clip.score(truth, frames)
    assert s == {"photos": 2, "photos_found": 1, "photos_right": 1, "photos_right_track": 0, "faces": 4,
                 "faces_found": 3, "frame_right": 2, "track_right": 1, "not_sure": 1}
    with pytest.raises(SystemExit, match="frames"):
        score_clip.score(truth, frames[:3])


def test_resmooth_replays_the_recognizers_track_labels():
    """score_clip's replay of the smoothing gives the track labels Recognizer gave at that smoothing."""

    class Box:
        def detect(self, frame):
            return [(20, 20, 60, 60, 0.9)]

    rng = np.random.default_rng(3)
    levels = rng.integers(0, 256, 30)
    for alpha in (0.3, 0.7):
        rec = Recognizer(BrightnessPredictor(sharpness=0.5), Box(), smoothing=alpha)
        frames = [{"frame": i, "faces": [f.to_dict(digits=8) for f in rec.process(np.full((120, 120, 3), v, np.uint8))]}
                  for i, v in enumerate(levels)]
        got = score_clip.resmooth(frames, alpha)
        assert [f["faces"][0]["track_label"] for f in got] == [f["faces"][0]["track_label"] for f in frames]
        other = score_clip.resmooth(frames, 1.0)  # no smoothing: the frame's own label
        assert [f["faces"][0]["track_label"] for f in other] == [f["faces"][0]["label"] for f in frames]
        assert other != got  # the weights matter on this sequence
