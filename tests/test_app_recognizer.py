"""The Recognizer API (lldif_edge.app.recognizer) with a fake predictor and a fake detector."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fake_predictor import BrightnessPredictor

from lldif_edge.app import recognizer as rec_mod
from lldif_edge.app.recognizer import Face, Recognizer, crop_box, default_package
from lldif_edge.errors import LldifError, PackageError


class BoxesDetector:
    """Returns boxes stored in the frame's first pixel row: frame[0, i] = box index + 1 of BOXES."""

    BOXES = [(20, 30, 60, 60, 0.9), (150, 40, 50, 50, 0.8), (90, 120, 40, 40, 0.7)]

    def detect(self, frame):
        ids = [int(v) - 1 for v in frame[0, :3, 0] if v]
        return [self.BOXES[i] for i in ids]


def frame_with(ids, level):
    f = np.full((200, 240, 3), level, np.uint8)
    f[0, :3] = 0
    for k, i in enumerate(ids):
        f[0, k] = i + 1
    return f


def test_crop_box_square_shifted_and_clipped():
    assert crop_box((40, 40, 20, 20), (100, 100), 0.1) == (38, 38, 62, 62)
    x0, y0, x1, y1 = crop_box((0, 0, 30, 30), (100, 200), 0.2)  # at a corner: shifted inside, still square
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 42
    x0, y0, x1, y1 = crop_box((150, 80, 50, 20), (100, 200), 0.1)  # wide box at the right edge
    assert x1 == 200 and x1 - x0 == y1 - y0 == 60
    # bigger than the frame: the largest square that fits, centred on the box
    assert crop_box((0, 0, 100, 100), (80, 120), 0.1) == (10, 0, 90, 80)


def test_crops_rgb_or_gray_from_the_original_frame():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[..., 0] = 10  # B
    frame[..., 2] = 200  # R
    r = Recognizer(BrightnessPredictor(), BoxesDetector())
    c = r.crop(frame, (10, 10, 50, 50))
    assert c.shape == (60, 60, 3) and c[0, 0, 0] == 200 and c[0, 0, 2] == 10  # RGB
    g = Recognizer(BrightnessPredictor(channels=1), BoxesDetector()).crop(frame, (10, 10, 50, 50))
    assert g.ndim == 2 and g.shape == (60, 60)
    gray_frame = np.full((100, 100), 7, np.uint8)
    c = r.crop(gray_frame, (10, 10, 50, 50))
    assert c.shape == (60, 60, 3)
    c[:] = 0
    assert gray_frame.min() == 7  # a copy, not a view


def test_process_faces_labels_and_tracks():
    r = Recognizer(BrightnessPredictor(), BoxesDetector(), smoothing=0.5)
    faces = r.process(frame_with([0, 1], 250))
    assert [f.track_id for f in faces] == [1, 2]
    f = faces[0]
    assert isinstance(f, Face) and f.box == (20, 30, 60, 60) and f.score == 0.9
    assert f.label == "neutral" and f.confidence == pytest.approx(max(f.probabilities.values()))
    assert list(f.probabilities) == r.classes and sum(f.probabilities.values()) == pytest.approx(1, abs=1e-5)
    d = f.to_dict()
    assert d["box"] == [20, 30, 60, 60] and d["label"] == "neutral" and d["track_id"] == 1
    assert f.track_label == "neutral" and f.track_confidence == pytest.approx(f.confidence)
    assert d["track_label"] == "neutral"
    # next frame darker: this frame's label follows at once, the track's smoothed one moves half way; the id stays
    f2 = r.process(frame_with([1, 0], 0))
    assert sorted(x.track_id for x in f2) == [1, 2]
    assert f2[1].label == "angry" and f2[1].probabilities["angry"] > 0.9
    assert f2[1].track_label in ("angry", "neutral") and 0.45 < f2[1].track_confidence < 0.55
    # stateless mode
    f3 = r.process(frame_with([0], 0), track=False)
    assert f3[0].track_id == -1 and f3[0].label == "angry" and f3[0].track_label is None
    assert r.process(frame_with([], 0)) == []


def test_predict_and_shape_check():
    r = Recognizer(BrightnessPredictor(), BoxesDetector())
    probs = r.predict([np.zeros((48, 48), np.uint8), np.full((64, 64, 3), 255, np.uint8)])
    assert probs.shape == (2, 7) and probs.dtype == np.float32
    assert r.classes[int(probs[0].argmax())] == "angry" and r.classes[int(probs[1].argmax())] == "neutral"
    assert r.predict(np.zeros((3, 48, 48), np.uint8)).shape == (3, 7)
    probs = r.predict_one(np.zeros((48, 48), np.uint8))
    assert max(probs, key=probs.get) == "angry"

    class Broken(BrightnessPredictor):
        def predict(self, faces):
            return np.zeros((len(faces), 3), np.float32)

    with pytest.raises(LldifError, match="shape"):
        Recognizer(Broken(), BoxesDetector()).predict([np.zeros((8, 8), np.uint8)])


def stream_frames(seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(12):
        ids = [int(i) for i in rng.permutation(3)[: rng.integers(0, 4)]]
        out.append(frame_with(ids, int(rng.integers(0, 256))))
    return out


def test_concurrent_process_and_predict_equal_sequential():
    streams = {s: stream_frames(s) for s in range(4)}
    seq = Recognizer(BrightnessPredictor(), BoxesDetector())
    expected = {s: [seq.process(f, stream=s) for f in frames] for s, frames in streams.items()}
    crops = [np.full((40, 40), v, np.uint8) for v in range(0, 256, 16)]
    expected_probs = seq.predict(crops)

    shared = Recognizer(BrightnessPredictor(), BoxesDetector())
    got, got_probs = {}, []
    barrier = threading.Barrier(6)

    def feed(s):
        barrier.wait()
        got[s] = [shared.process(f, stream=s) for f in streams[s]]

    def classify():
        barrier.wait()
        for _ in range(5):
            got_probs.append(shared.predict(crops))

    threads = [threading.Thread(target=feed, args=(s,)) for s in streams]
    threads += [threading.Thread(target=classify) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
    for pr in got_probs:
        np.testing.assert_array_equal(pr, expected_probs)


def test_reset_forgets_tracks():
    r = Recognizer(BrightnessPredictor(), BoxesDetector())
    assert r.process(frame_with([0], 100))[0].track_id == 1
    assert r.process(frame_with([2], 100))[0].track_id == 2
    r.reset()
    assert r.process(frame_with([2], 100))[0].track_id == 1


def test_load_uses_runtimes_lazily(tmp_path, monkeypatch):
    seen = {}

    def load_pipeline(package, backend, device, threads):
        seen.update(package=package, backend=backend, device=device, threads=threads)
        return BrightnessPredictor()

    import lldif_edge.runtimes as runtimes

    monkeypatch.setattr(runtimes, "load_pipeline", load_pipeline, raising=False)
    r = Recognizer.load(tmp_path, backend="openvino", device="cpu", detector=BoxesDetector(), smoothing=1.0)
    assert seen == {"package": tmp_path, "backend": "openvino", "device": "cpu", "threads": 1}
    assert r.classes[3] == "happy" and r.tracker_args["alpha"] == 1.0
    monkeypatch.delattr(runtimes, "load_pipeline")
    with pytest.raises(LldifError, match="runtime"):
        Recognizer.load(tmp_path, detector=BoxesDetector())


def test_default_package(tmp_path, monkeypatch):
    weights = tmp_path / "lldif_edge" / "weights"
    fake_file = tmp_path / "lldif_edge" / "app" / "recognizer.py"
    monkeypatch.setattr(rec_mod, "__file__", str(fake_file))
    with pytest.raises(PackageError, match="--package"):
        default_package()
    (weights / "default_fp32").mkdir(parents=True)
    assert default_package() == weights / "default_fp32"
    (weights / "default_int8").mkdir()
    assert default_package() == weights / "default_int8"



def test_every_face_of_a_frame_in_one_call_per_subgraph():
    """The shipped INT8 package: N faces of a frame go through each sub-graph once, as one batch, and get the
    probabilities they get one by one."""
    rec = Recognizer.load(detector=BoxesDetector(), threads=1)
    calls: dict[str, list[int]] = {}
    for name, stage in rec.predictor.stages:
        run = stage.run

        def counted(feeds, *a, _name=name, _run=run, **k):
            calls.setdefault(_name, []).append(len(next(iter(feeds.values()))))
            return _run(feeds, *a, **k)

        stage.run = counted
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 90, (200, 240, 3), dtype=np.uint8)  # a dark, noisy frame
    frame[0, :3] = [[1, 1, 1], [2, 2, 2], [3, 3, 3]]  # BoxesDetector: all three boxes
    faces = rec.process(frame, track=False)
    assert len(faces) == 3
    assert calls == {name: [3] for name, _ in rec.predictor.stages}  # one call each, batch of 3
    one_by_one = np.concatenate([rec.predict([rec.crop(frame, b)]) for b in BoxesDetector.BOXES])
    batched = np.array([[f.probabilities[c] for c in rec.classes] for f in faces])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_many_known_faces_are_found_again_by_a_full_pass():
    """Past the detector's `near_max` known faces, the tracked path runs one full detection instead of a
    re-find per face; below it, re-finds between full passes."""

    class Counting(BoxesDetector):
        near_max = 2

        def __init__(self):
            self.full = self.near = 0

        def detect(self, frame):
            self.full += 1
            return super().detect(frame)

        def detect_near(self, frame, box):
            self.near += 1
            return tuple(box[:4]) + (0.5,)

    for ids, full, near in (([0, 1], 1, 2 * 4), ([0, 1, 2], 5, 0)):
        det = Counting()
        r = Recognizer(BrightnessPredictor(), det, detect_every=10)
        for _ in range(5):
            r.process(frame_with(ids, 100))
        assert (det.full, det.near) == (full, near)


def test_concurrent_aligned_crops_equal_sequential():
    """Aligned crops (boxes with landmarks) from several threads and streams: what sequential calls give."""
    from lldif_edge.app.detect import Detection

    class MarkedBoxes(BoxesDetector):
        def detect(self, frame):
            out = []
            for x, y, w, h, s in super().detect(frame):
                marks = np.array([[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.35 * h], [x + 0.5 * w, y + 0.6 * h],
                                  [x + 0.35 * w, y + 0.8 * h], [x + 0.65 * w, y + 0.78 * h]], np.float32)
                out.append(Detection(x, y, w, h, s, marks))
            return out

    def textured(ids, level):
        f = frame_with(ids, level)
        f[1:] = np.random.default_rng(level).integers(0, 256, f[1:].shape, dtype=np.uint8)  # crops differ in content
        return f

    streams = {s: [textured(ids, int(v)) for ids, v in zip(([0, 1], [2], [0, 1, 2], [1]) * 3,
                                                           np.random.default_rng(s).integers(0, 256, 12),
                                                           strict=False)] for s in range(4)}
    seq = Recognizer(BrightnessPredictor(sharpness=0.5), MarkedBoxes(), align=True)
    expected = {s: [seq.process(f, stream=s) for f in frames] for s, frames in streams.items()}
    shared = Recognizer(BrightnessPredictor(sharpness=0.5), MarkedBoxes(), align=True)
    got = {}
    barrier = threading.Barrier(len(streams))

    def feed(s):
        barrier.wait()
        got[s] = [shared.process(f, stream=s) for f in streams[s]]

    threads = [threading.Thread(target=feed, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
