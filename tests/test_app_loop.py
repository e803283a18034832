"""The run loop (lldif_edge.app.loop): sources, JSON lines, recording, failure behaviour."""

from __future__ import annotations

import io
import json
import logging
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from detection_study import background, paste_on_canvas
from fake_predictor import BrightnessPredictor

from lldif_edge.app import loop
from lldif_edge.app.detect import HaarDetector
from lldif_edge.app.loop import open_source, run
from lldif_edge.app.recognizer import Recognizer
from lldif_edge.errors import DataError, LldifError
from lldif_edge.lowlight import darken

SHARED = Path(__file__).resolve().parents[2] / "shared"  # the checkout's sibling, like conftest.SHARED
FACES = SHARED / "data" / "faces"
N_FRAMES = 16


class CentreDetector:
    def detect(self, frame):
        h, w = frame.shape[:2]
        return [(w // 4, h // 4, w // 2, h // 2, 1.0)]


def fake_recognizer():
    return Recognizer(BrightnessPredictor(), CentreDetector())


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def write_video(path: Path, frames, fps=10.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()
    return path


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    """A real photo drifting across a 640x480 frame, darkened by lowlight.darken (one parameter draw, seed 0).

    Background and photo are darkened once each with the same parameters (darken is per pixel), then composed.
    """
    if not FACES.is_dir():
        pytest.skip(f"{FACES} not available")
    name = "deepface_img10.jpg"
    img = cv2.imread(str(FACES / name))
    h = int(480 * 0.6)
    small = cv2.resize(img, (round(img.shape[1] * h / img.shape[0]), h), interpolation=cv2.INTER_AREA)

    def dark(x):
        return darken(x, np.random.default_rng([0, zlib.crc32(name.encode())]))

    bg, face = dark(background(img, (640, 480))), dark(small)
    frames = [paste_on_canvas(face, (640, 480), 0.6, (4 * k - 30, 0), canvas=bg) for k in range(N_FRAMES)]
    return write_video(tmp_path_factory.mktemp("video") / "dark_face.mp4", frames)


@pytest.fixture
def plain_video(tmp_path):
    rng = np.random.default_rng(0)
    return write_video(tmp_path / "plain.mp4", [rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(8)])


class ListSource:
    """A live source from a list; after the list: None (stream lost) or an exception."""

    def __init__(self, frames, live=True, then=None):
        self.frames, self.live, self.then = list(frames), live, then
        self.name, self.fps, self.closed, self.reads = "fake", 10.0, False, 0

    def read(self):
        self.reads += 1
        if self.frames:
            return self.frames.pop(0).copy()
        if self.then is not None:
            raise self.then
        return None

    def close(self):
        self.closed = True


def frames(n, shape=(120, 160, 3)):
    return [np.full(shape, 10 * i, np.uint8) for i in range(n)]


def json_lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


# ---------------------------------------------------------------- end to end with a real detector
def test_video_end_to_end_haar(face_video, tmp_path):
    out, buf = tmp_path / "out.mp4", io.StringIO()
    rec = Recognizer(BrightnessPredictor(), HaarDetector())
    stats = run(rec, open_source(video=face_video), show=False, record=out, json_out=buf)
    assert stats["frames"] == N_FRAMES and stats["ended"] == "end" and stats["fps"] > 0
    assert set(stats["stages"]) == {"capture", "detect", "classify", "track_overlay", "write"}
    assert all(v["mean_ms"] >= 0 and v["median_ms"] >= 0 for v in stats["stages"].values())
    lines = json_lines(buf)
    assert [ln["frame"] for ln in lines] == list(range(N_FRAMES))
    with_face = [ln for ln in lines if ln["faces"]]
    assert len(with_face) >= 12
    for ln in with_face:
        f = ln["faces"][0]
        assert set(f) >= {"box", "track_id", "label", "probabilities", "confidence"} and ln["latency_ms"] > 0
        assert f["label"] in rec.classes and abs(sum(f["probabilities"].values()) - 1) < 1e-3
        x, y, w, h = f["box"]
        assert 120 < x + w / 2 < 520
    ids = Counter(ln["faces"][0]["track_id"] for ln in with_face)
    assert ids.most_common(1)[0][1] >= len(with_face) - 2  # one stable id for the drifting face
    assert stats["recording"] == str(out) and count_frames(out) == N_FRAMES
    assert not list(tmp_path.glob(".*partial*"))


def test_max_frames_and_stdout_like_stream(plain_video):
    buf = io.StringIO()
    stats = run(fake_recognizer(), open_source(video=plain_video), show=False, json_out=buf, max_frames=5)
    assert stats["frames"] == 5 and stats["ended"] == "max_frames" and len(json_lines(buf)) == 5


# ---------------------------------------------------------------- sources
def test_bad_camera_index_fails_fast():
    t = time.perf_counter()
    with pytest.raises(LldifError) as e:
        open_source(camera=97)
    assert time.perf_counter() - t < 5.0
    assert "camera 97" in str(e.value) and "\n" not in str(e.value)


def test_hanging_camera_times_out(monkeypatch):
    class Slow:
        def __init__(self, *a):
            time.sleep(2.0)

        def isOpened(self):
            return False

    monkeypatch.setattr(loop.cv2, "VideoCapture", Slow)
    t = time.perf_counter()
    with pytest.raises(LldifError, match="did not open within 0.3 s"):
        open_source(camera=0, open_timeout=0.3)
    assert time.perf_counter() - t < 1.5


def test_corrupt_and_missing_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    with pytest.raises(DataError, match="cannot open video"):
        open_source(video=bad)
    with pytest.raises(DataError, match="not found"):
        open_source(video=tmp_path / "nope.mp4")
    with pytest.raises(LldifError, match="exactly one"):
        open_source()
    with pytest.raises(LldifError, match="exactly one"):
        open_source(camera=0, video=bad)


def test_images_dir_skips_unreadable(tmp_path, caplog):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.png"), np.full((100, 120, 3), 100, np.uint8))
    cv2.imwrite(str(d / "sub" / "c.jpg"), np.full((90, 200, 3), 200, np.uint8))  # another size
    (d / "b.jpg").write_bytes(b"not a jpeg")
    buf, out = io.StringIO(), tmp_path / "imgs.mp4"
    with caplog.at_level(logging.WARNING):
        stats = run(fake_recognizer(), open_source(images=d), show=False, json_out=buf, record=out)
    assert stats["frames"] == 2 and stats["skipped_images"] == 1
    assert "b.jpg" in caplog.text
    lines = json_lines(buf)
    assert [ln["faces"][0]["track_id"] for ln in lines] == [-1, -1]  # stills: no tracking
    assert [ln["faces"][0]["label"] for ln in lines] == ["fear", "surprise"]
    assert count_frames(out) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_source(images=tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        open_source(images=tmp_path / "missing")


# ---------------------------------------------------------------- failure behaviour of the loop
def test_stream_lost_is_retried_then_ends_cleanly(tmp_path):
    src = ListSource(frames(5))
    buf, out = io.StringIO(), tmp_path / "lost.mp4"
    stats = run(fake_recognizer(), src, show=False, json_out=buf, record=out, retries=2, retry_sleep=0.01)
    assert stats["ended"] == "stream_lost" and stats["frames"] == 5 and stats["read_failures"] == 2
    assert src.reads == 5 + 1 + 2 and src.closed
    assert len(json_lines(buf)) == 5 and count_frames(out) == 5
    ids = {ln["faces"][0]["track_id"] for ln in json_lines(buf)}
    assert ids == {1}


def test_end_of_file_is_not_retried(plain_video):
    t = time.perf_counter()
    stats = run(fake_recognizer(), open_source(video=plain_video), show=False, retry_sleep=1.0)
    assert stats["frames"] == 8 and stats["ended"] == "end" and stats["read_failures"] == 0
    assert time.perf_counter() - t < 1.0


def test_ctrl_c_ends_cleanly(tmp_path):
    buf, out = io.StringIO(), tmp_path / "int.mp4"
    src = ListSource(frames(3), then=KeyboardInterrupt())
    stats = run(fake_recognizer(), src, show=False, json_out=buf, record=out)
    assert stats["ended"] == "interrupted" and stats["frames"] == 3 and src.closed
    assert len(json_lines(buf)) == 3 and count_frames(out) == 3
    assert not (tmp_path / ".int.partial.mp4").exists()


def test_error_mid_run_still_finalises_the_recording(tmp_path):
    class Failing(Recognizer):
        def process(self, frame, **kw):
            if frame[0, 0, 0] >= 20:
                raise RuntimeError("boom")
            return super().process(frame, **kw)

    buf, out = io.StringIO(), tmp_path / "err.mp4"
    src = ListSource(frames(5))
    with pytest.raises(RuntimeError, match="boom"):
        run(Failing(BrightnessPredictor(), CentreDetector()), src, show=False, json_out=buf, record=out)
    assert src.closed and len(json_lines(buf)) == 2 and count_frames(out) == 2


def test_output_options_are_checked(tmp_path):
    cases = [({"record": tmp_path / "no" / "x.mp4"}, "folder"), ({"record": tmp_path / "x.avi"}, ".mp4")]
    if not loop.gui_available():
        cases.append(({"show": True}, "--show"))
    for kwargs, msg in cases:
        src = ListSource(frames(1))
        with pytest.raises(LldifError, match=msg):
            run(fake_recognizer(), src, **{"show": False, **kwargs})
        assert src.closed and src.reads == 0


def test_show_default_follows_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(loop.sys, "platform", "linux")
    assert not loop.display_available()
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert loop.display_available()
    stats = run(fake_recognizer(), ListSource(frames(2), live=False), json_out=None)  # no window on headless
    assert stats["frames"] == 2


def test_stage_times_fixed_memory():
    st = loop.StageTimes(window=8)
    for i in range(100):
        st.add([i, 1, 2, 3, 4])
    s = st.summary()
    assert s["capture"]["mean_ms"] == pytest.approx(49.5) and s["capture"]["median_ms"] == pytest.approx(95.5)
    assert st.buf.shape == (8, 5)


def test_prefetch_keeps_order_and_ends_with_the_file():
    src = loop.PrefetchSource(ListSource(frames(6), live=False), depth=2)
    got = [src.read() for _ in range(6)]
    assert [int(f[0, 0, 0]) for f in got] == [0, 10, 20, 30, 40, 50]
    assert src.read() is None and src.read() is None
    src.close()
    assert src.inner.closed and not src._thread.is_alive()


def test_prefetched_live_stream_lost_still_ends_cleanly(tmp_path):
    inner = ListSource(frames(5))
    buf = io.StringIO()
    stats = run(fake_recognizer(), loop.PrefetchSource(inner), show=False, json_out=buf, retries=2,
                retry_sleep=0.01)
    assert stats["ended"] == "stream_lost" and stats["frames"] == 5 and stats["read_failures"] == 2
    assert inner.closed and len(json_lines(buf)) == 5


def test_run_prefetches_video_files(plain_video, monkeypatch):
    made = []
    original = loop.PrefetchSource
    monkeypatch.setattr(loop, "PrefetchSource", lambda s: made.append(s) or original(s))
    stats = run(fake_recognizer(), open_source(video=plain_video), show=False)
    assert stats["frames"] == 8 and stats["ended"] == "end" and len(made) == 1
