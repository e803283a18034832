"""Face detectors and brightening (lldif_edge.app.detect). Never downloads anything."""

from __future__ import annotations

import shutil
import threading
import urllib.error
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from detection_study import measure_detection_rate, paste_on_canvas

from lldif_edge.app import detect
from lldif_edge.app.detect import (
    YUNET_FILE,
    Brightener,
    HaarDetector,
    YuNetDetector,
    brighten,
    fetch_yunet,
    make_detector,
    resolve_yunet,
)
from lldif_edge.errors import LldifError
from lldif_edge.lowlight import darken

SHARED = Path(__file__).resolve().parents[2] / "shared"  # the checkout's sibling, like conftest.SHARED
FACES = SHARED / "data" / "faces"
YUNET = SHARED / "models" / YUNET_FILE
PHOTOS = ["deepface_img10.jpg", "deepface_img17.jpg", "ronplussign_happy.jpg", "wujie_1.jpg"]


def dark_frames(names=PHOTOS, seed=0):
    """Real photos pasted on a 640x480 canvas and darkened; skips when the photo folder is absent."""
    if not FACES.is_dir():
        pytest.skip(f"{FACES} not available")
    out = []
    for n in names:
        img = cv2.imread(str(FACES / n))
        canvas = paste_on_canvas(img, (640, 480))
        out.append((n, darken(canvas, np.random.default_rng([seed, zlib.crc32(n.encode())]))))
    return out


def test_brighten_modes():
    rng = np.random.default_rng(0)
    dark = (rng.random((60, 80, 3)) * 40).astype(np.uint8)
    bright = (100 + rng.random((60, 80)) * 100).astype(np.uint8)
    assert brighten(dark, "none") is dark
    for mode in ("gamma", "auto", "gamma+clahe"):
        out = brighten(dark, mode)
        assert out.shape == dark.shape and out.dtype == np.uint8
        assert out.mean() > 2 * dark.mean()
    assert brighten(bright, "auto") is bright  # not dark: untouched
    assert brighten(bright, "gamma").mean() >= bright.mean() - 0.5  # gamma never darkens
    for img in (dark, bright):
        out = brighten(img, "clahe")
        assert out.shape == img.shape and out.dtype == np.uint8
    with pytest.raises(LldifError, match="brightening mode"):
        Brightener("hdr")


def test_brightener_lut_cache_is_bounded():
    b = Brightener("gamma")
    for level in range(1, 256, 3):
        b(np.full((8, 8), level, np.uint8))
    assert len(b._luts) <= 20


def test_haar_finds_darkened_real_faces():
    det = HaarDetector()
    found = 0
    for _, frame in dark_frames():
        boxes = det.detect(frame)
        for x, y, w, h, s in boxes:
            assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480 and 0 < s < 1
            assert w >= 48  # boxes are in full-frame pixels (min size 24 at 320 px wide)
        found += bool(boxes)
        if boxes:  # the largest box lies on the pasted photo (centre 384x288 region)
            x, y, w, h, _ = boxes[0]
            assert 120 <= x + w / 2 <= 520 and 90 <= y + h / 2 <= 390
    assert found >= 3


def test_haar_accepts_grey_and_rejects_bad_frames():
    det = HaarDetector()
    assert det.detect(np.zeros((120, 160), np.uint8)) == []
    with pytest.raises(LldifError):
        det.detect(np.zeros((120, 160, 3), np.float32))


def test_haar_concurrent_equals_sequential():
    frames = [f for _, f in dark_frames(PHOTOS[:2])] * 3
    det = HaarDetector()
    expected = [det.detect(f) for f in frames]
    got = [None] * len(frames)

    def work(i):
        got[i] = det.detect(frames[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_measure_detection_rate_helper():
    class Always:
        def detect(self, frame):
            return [(10, 10, 50, 50, 0.9), (200, 200, 20, 20, 0.5)]

    photos = [("a", np.full((100, 100, 3), 128, np.uint8))]
    r = measure_detection_rate(Always(), photos, 3, {"a": (12, 12, 50, 50)})
    assert r["images"] == 3 and r["found"] == 1.0 and r["hit"] == 1.0 and r["false_per_image"] == 1.0


# ---------------------------------------------------------------- YuNet
@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLDIF_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_yunet_missing_model_says_how_to_get_it(empty_cache):
    for call in (lambda: YuNetDetector(), lambda: make_detector("yunet"),
                 lambda: resolve_yunet(empty_cache / "x.onnx")):
        with pytest.raises(LldifError) as e:
            call()
        msg = str(e.value)
        assert "--detector-model" in msg and "\n" not in msg


def test_yunet_checksum_mismatch(tmp_path, empty_cache):
    bad = tmp_path / YUNET_FILE
    bad.write_bytes(b"not a model")
    with pytest.raises(LldifError, match="sha256"):
        resolve_yunet(bad)


def test_fetch_yunet_offline_raises_one_line(empty_cache, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(LldifError) as e:
        fetch_yunet()
    assert "--detector-model" in str(e.value) and "\n" not in str(e.value)
    assert not any(empty_cache.glob("*"))  # no partial file left


def test_fetch_yunet_checks_sha256(empty_cache, monkeypatch):
    import io

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: io.BytesIO(b"tampered"))
    with pytest.raises(LldifError, match="sha256"):
        fetch_yunet()
    assert not (empty_cache / YUNET_FILE).exists()
    if YUNET.is_file():  # a good download lands in the cache and is found there
        monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: io.BytesIO(YUNET.read_bytes()))
        assert fetch_yunet() == empty_cache / YUNET_FILE
        assert resolve_yunet() == empty_cache / YUNET_FILE


@pytest.mark.skipif(not YUNET.is_file(), reason="YuNet model not available")
def test_yunet_from_cache_finds_darkened_faces(empty_cache):
    empty_cache.mkdir()
    shutil.copy(YUNET, empty_cache / YUNET_FILE)
    det = make_detector("yunet")
    assert det.model_path == empty_cache / YUNET_FILE
    found = 0
    for _, frame in dark_frames():
        boxes = det.detect(frame)
        found += bool(boxes)
        for x, y, w, h, s in boxes:
            assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480 and 0 < s <= 1
    assert found >= 3


def test_make_detector_errors():
    with pytest.raises(LldifError, match="unknown detector"):
        make_detector("mtcnn")
    with pytest.raises(LldifError, match="--detector-model"):
        make_detector("haar", model_path="x.onnx")
    assert detect.DEFAULT_BRIGHTEN in detect.BRIGHTEN_MODES


@pytest.mark.skipif(not YUNET.is_file(), reason="YuNet model not available")
def test_yunet_landmarks_and_refind_near_the_last_box():
    det = YuNetDetector(YUNET)
    frames = dark_frames()
    hits = 0
    for _, frame in frames:
        boxes = det.detect(frame)
        if not boxes:
            continue
        x, y, w, h, _ = boxes[0]
        marks = boxes[0].landmarks
        assert marks.shape == (5, 2)
        assert (x <= marks[:, 0]).all() and (marks[:, 0] <= x + w).all()  # eyes, nose, mouth inside the box
        assert marks[0, 0] < marks[1, 0] and marks[:2, 1].max() < marks[3:, 1].min()  # eyes above the mouth
        moved = (x + 6, y - 4, w, h)  # the face's last box, a few pixels off
        again = det.detect_near(frame, moved)
        assert again is not None and again.landmarks is not None
        assert detect.iou(again, boxes[0]) > 0.6
        hits += 1
    assert hits >= 3
    empty = np.full((480, 640, 3), 30, np.uint8)
    assert det.detect_near(empty, (100, 100, 120, 120)) is None
    assert det.detect_near(frames[0][1], (636, 476, 2, 2)) is None  # a sliver at the edge: nothing to search


@pytest.mark.skipif(not YUNET.is_file(), reason="YuNet model not available")
def test_yunet_concurrent_equals_sequential():
    frames = [f for _, f in dark_frames(PHOTOS[:2])] * 3
    det = YuNetDetector(YUNET)
    box = (200, 120, 200, 200)

    def both(f):  # boxes with their landmarks
        return [(tuple(d), d.landmarks.tolist()) for d in det.detect(f) + [det.detect_near(f, box)] if d is not None]

    expected = [both(f) for f in frames]
    got = [None] * len(frames)

    def work(i):
        got[i] = both(frames[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_auto_detector_is_yunet_when_cached_else_haar_with_a_warning(empty_cache, caplog):
    with caplog.at_level("WARNING"):
        assert make_detector("auto").name == "haar"
    assert "--fetch-detector" in caplog.text and "--detector-model" in caplog.text
    if YUNET.is_file():
        empty_cache.mkdir()
        shutil.copy(YUNET, empty_cache / YUNET_FILE)
        assert make_detector().name == "yunet"
    with pytest.raises(LldifError, match="--fetch-detector") as e:  # asked for explicitly: an error, one line
        make_detector("yunet", model_path=empty_cache / "missing.onnx")
    assert "--detector haar" in str(e.value) and "\n" not in str(e.value)
