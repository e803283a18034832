"""The `lldif-edge run` loop: capture -> detect -> classify -> track -> overlay -> show / record / JSON lines.

    source = open_source(camera=0)            # or video="clip.mp4" / "rtsp://...", or images="dir/"
    stats = run(recognizer, source, record="out.mp4", json_out=sys.stdout, max_frames=300)

Failure behaviour:
* a camera that does not open (or gives no first frame) raises LldifError within `open_timeout` (5 s);
* a video that cannot be opened or decoded raises DataError;
* a camera or stream (URL) that stops delivering frames is retried `retries` times, then the run ends cleanly;
* Ctrl-C (KeyboardInterrupt) ends the run cleanly; the recording is finalised and the JSON flushed on every
  exit, errors included (the mp4 is written to a hidden temp file beside it and renamed at the end);
* unreadable images in an images folder are skipped with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import Protocol, TextIO

import cv2
import numpy as np

from lldif_edge.app.overlay import draw
from lldif_edge.data import IMAGE_EXTS
from lldif_edge.errors import DataError, LldifError

log = logging.getLogger(__name__)

STAGES = ("capture", "detect", "classify", "track_overlay", "write")


# ---------------------------------------------------------------- sources
class Source(Protocol):
    name: str
    live: bool  # a camera or network stream: read failures are retried
    fps: float  # nominal frame rate (for the recording)

    def read(self) -> np.ndarray | None: ...  # a BGR frame, or None (end of input or failure)

    def close(self) -> None: ...


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV's own warnings (e.g. "can't open camera by index") off while we raise our own message."""
    try:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        level = None
    try:
        yield
    finally:
        if level is not None:
            cv2.utils.logging.setLogLevel(level)


class CaptureSource:
    """A camera index, a video file or a stream URL through cv2.VideoCapture. The first frame is read on open."""

    def __init__(self, cap: cv2.VideoCapture, first: np.ndarray, name: str, live: bool):
        self.cap, self.name, self.live = cap, name, live
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 1.0 <= fps <= 240.0 else 30.0
        self._pending: np.ndarray | None = first

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            f, self._pending = self._pending, None
            return f
        ok, frame = self.cap.read()
        return frame if ok and frame is not None and frame.size else None

    def close(self) -> None:
        self.cap.release()


class ImageFolderSource:
    """The images of a folder (sorted, recursive), one frame each; unreadable files are skipped with a warning."""

    live = False

    def __init__(self, folder: str | Path, fps: float = 2.0):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"images folder not found: {folder}")
        self.files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not self.files:
            raise DataError(f"no images ({'/'.join(sorted(IMAGE_EXTS))}) in {folder}")
        self.name, self.fps = str(folder), fps
        self.skipped = 0
        self.current: Path | None = None
        self._i = 0

    def read(self) -> np.ndarray | None:
        while self._i < len(self.files):
            f = self.files[self._i]
            self._i += 1
            try:
                img = cv2.imdecode(np.fromfile(str(f), np.uint8), cv2.IMREAD_COLOR)
            except (OSError, ValueError):
                img = None
            if img is None:
                self.skipped += 1
                log.warning("skipped unreadable image %s", f)
                continue
            self.current = f
            return img
        return None

    def close(self) -> None:
        pass


class PrefetchSource:
    """Decodes the next frames of a capture in a worker thread while the current one is processed.

    OpenCV releases the GIL while it decodes, so capture overlaps detection and classification on the other
    core (~1 ms of a ~10 ms frame at 640x480). Frames keep their order; at most `depth` wait, so memory is
    bounded and a live camera is at most `depth` frames behind. A failed read of a live source reaches the
    reader as None like before (and is retried there); a file's None ends it.
    """

    def __init__(self, inner: Source, depth: int = 2):
        self.inner, self.name, self.live, self.fps = inner, inner.name, inner.live, inner.fps
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._work, name="lldif-edge-capture", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.inner.read()
            except Exception as e:  # noqa: BLE001 - reported to the reader as a failed read
                log.warning("%s: read failed: %s", self.name, e)
                frame = None
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if frame is None:
                if not self.live:
                    return
                time.sleep(0.05)  # a live source that failed: do not spin

    def read(self) -> np.ndarray | None:
        while not self._ended:
            try:
                frame = self._queue.get(timeout=0.1)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                return None
            if frame is None and not self.live:
                self._ended = True
            return frame
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.inner.close()


def _open_capture(target, timeout: float, params: list[int]) -> tuple[cv2.VideoCapture | None, np.ndarray | None, bool]:
    """Open and read the first frame in a worker thread. (cap, first frame, finished in time)."""
    box: dict = {}

    def work():
        with _quiet_opencv():
            cap = cv2.VideoCapture(target, cv2.CAP_ANY, params) if params else cv2.VideoCapture(target)
            first = None
            if cap.isOpened():
                ok, frame = cap.read()
                first = frame if ok and frame is not None and frame.size else None
        box["cap"], box["first"] = cap, first

    t = threading.Thread(target=work, name="lldif-edge-open", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():  # the capture stays with the daemon thread; nothing else to do with it
        return None, None, False
    return box["cap"], box["first"], True


def open_source(camera: int | None = None, video: str | Path | None = None, images: str | Path | None = None,
                open_timeout: float = 5.0) -> Source:
    """Exactly one of: a camera index, a video file or stream URL, an images folder."""
    if sum(v is not None for v in (camera, video, images)) != 1:
        raise LldifError("give exactly one source: --camera N, --video FILE|URL or --images DIR")
    if images is not None:
        return ImageFolderSource(images)
    ms = int(open_timeout * 1000)
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    if camera is not None:
        cap, first, in_time = _open_capture(int(camera), open_timeout, [])
        if not in_time:
            raise LldifError(f"camera {camera} did not open within {open_timeout:g} s")
        if not cap.isOpened():
            raise LldifError(f"camera {camera} cannot be opened (no such device, no permission, or in use)")
        if first is None:
            cap.release()
            raise LldifError(f"camera {camera} opened but delivered no frame")
        return CaptureSource(cap, first, f"camera {camera}", live=True)
    target = str(video)
    is_url = "://" in target
    if not is_url and not Path(target).is_file():
        raise DataError(f"video file not found: {target}")
    cap, first, in_time = _open_capture(target, open_timeout, timeouts)
    if not in_time:
        raise DataError(f"video {target} did not open within {open_timeout:g} s")
    if not cap.isOpened():
        raise DataError(f"cannot open video {target}: not a readable video file or stream"
                        + (" (unreachable?)" if is_url else " (corrupt or unsupported format)"))
    if first is None:
        cap.release()
        raise DataError(f"cannot decode any frame from video {target}")
    return CaptureSource(cap, first, target, live=is_url)


# ---------------------------------------------------------------- outputs
def display_available() -> bool:
    """A display to show a window on: DISPLAY/WAYLAND_DISPLAY on Linux; assumed elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def gui_available() -> bool:
    """Whether this OpenCV build can open windows (opencv-python-headless cannot)."""
    m = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(m) and m.group(1).upper() != "NONE"


class Recorder:
    """An mp4 (mp4v) written to `.NAME.partial.mp4` beside the target and renamed on `close()`."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise LldifError(f"--record needs a .mp4 file name, not {self.path.name}")
        if not self.path.parent.is_dir():
            raise LldifError(f"folder of the recording does not exist: {self.path.parent}")
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fps = fps
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self._writer is None:
            self.size = (frame.shape[1], frame.shape[0])
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self._writer.isOpened():
                self._writer = None
                raise LldifError(f"cannot write the recording {self.path} (mp4v codec or folder not writable)")
        if (frame.shape[1], frame.shape[0]) != self.size:  # an images folder with mixed sizes
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; None when nothing was written."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames:
            os.replace(self.tmp, self.path)
            return self.path
        self.tmp.unlink(missing_ok=True)
        return None


class StageTimes:
    """Per-stage milliseconds: exact means, medians over the last `window` frames (fixed memory)."""

    def __init__(self, stages=STAGES, window: int = 4096):
        self.stages = list(stages)
        self.buf = np.zeros((window, len(self.stages)), np.float64)
        self.sums = np.zeros(len(self.stages), np.float64)
        self.n = 0

    def add(self, row: list[float]) -> None:
        self.buf[self.n % len(self.buf)] = row
        self.sums += row
        self.n += 1

    def summary(self) -> dict:
        if not self.n:
            return {s: {"mean_ms": None, "median_ms": None} for s in self.stages}
        med = np.median(self.buf[: min(self.n, len(self.buf))], axis=0)
        return {s: {"mean_ms": round(float(self.sums[i] / self.n), 3), "median_ms": round(float(med[i]), 3)}
                for i, s in enumerate(self.stages)}


# ---------------------------------------------------------------- the loop
def run(recognizer, source: Source, *, show: bool | None = None, record: str | Path | None = None,
        json_out: TextIO | None = None, max_frames: int | None = None, track: bool | None = None,
        retries: int = 3, retry_sleep: float = 0.2, overlay: bool | None = None,
        window: str = "lldif-edge", prefetch: bool = True) -> dict:
    """Run `recognizer` over `source` (closed at the end) until it ends, `max_frames`, `q`/Esc or Ctrl-C.

    `show`: a window (default: only when a display and a GUI-capable OpenCV exist). `record`: an .mp4 path.
    `json_out`: a text stream that gets one JSON line per frame. `track`: default on, off for an images folder
    (unrelated stills). `overlay`: draw on the frames (default: when showing or recording).
    `prefetch`: decode camera/video frames in a worker thread (PrefetchSource).
    Returns stats: frames, seconds, fps, per-stage mean/median ms, how the run ended, and more; `cpu_seconds` is
    the CPU time of the whole process (all its threads) over the loop, a measure of cost that other programs
    sharing the CPU do not inflate the way they do `fps`.
    """
    if prefetch and isinstance(source, CaptureSource):
        source = PrefetchSource(source)
    try:
        if show is None:
            show = display_available() and gui_available()
        elif show:
            if not gui_available():
                raise LldifError("--show needs OpenCV with GUI support (pip install opencv-python, not -headless); "
                                 "use --record or --json instead")
            if not display_available():
                raise LldifError("--show needs a display (DISPLAY / WAYLAND_DISPLAY is not set); "
                                 "use --record or --json")
        recorder = Recorder(record, source.fps) if record else None
    except BaseException:
        source.close()
        raise
    if track is None:
        track = not isinstance(source, ImageFolderSource)
    if overlay is None:
        overlay = bool(show or record)
    times = StageTimes()
    stream = object()  # this run's own tracks
    frames = read_failures = 0
    ended = "end"
    fps_ema = 0.0
    last_log = t_start = time.perf_counter()
    cpu_start = time.process_time()
    timings: dict = {}
    try:
        try:
            while max_frames is None or frames < max_frames:
                t0 = time.perf_counter()
                frame = source.read()
                tries = 0
                while frame is None and source.live and tries < retries:
                    tries += 1
                    read_failures += 1
                    time.sleep(retry_sleep)
                    frame = source.read()
                if frame is None:
                    if source.live:
                        ended = "stream_lost"
                        log.warning("%s stopped delivering frames; ending the run", source.name)
                    break
                t1 = time.perf_counter()
                faces = recognizer.process(frame, stream=stream, track=track, timings=timings)
                t2 = time.perf_counter()
                if overlay:
                    draw(frame, faces, fps_ema if fps_ema > 0 else None)
                t3 = time.perf_counter()
                if json_out is not None:
                    json_out.write(json.dumps({
                        "t": round(time.time(), 3), "frame": frames,
                        "faces": [f.to_dict() for f in faces],
                        "latency_ms": round(1000.0 * (t3 - t0), 2),
                    }, separators=(",", ":")) + "\n")
                    json_out.flush()
                if recorder is not None:
                    recorder.write(frame)
                quit_now = False
                if show:
                    cv2.imshow(window, frame)
                    key = cv2.waitKey(1) & 0xFF
                    quit_now = key in (27, ord("q")) or cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1
                t4 = time.perf_counter()
                track_ms = timings.get("track", 0.0)
                times.add([1000.0 * (t1 - t0), timings.get("detect", 0.0), timings.get("classify", 0.0),
                           track_ms + 1000.0 * (t3 - t2), 1000.0 * (t4 - t3)])
                frames += 1
                dt = t4 - t0
                if dt > 0:
                    fps_ema = 1.0 / dt if fps_ema == 0 else 0.9 * fps_ema + 0.1 / dt
                if t4 - last_log > 5.0:
                    last_log = t4
                    log.info("%d frames, %.1f FPS", frames, fps_ema)
                if quit_now:
                    ended = "quit"
                    break
            else:
                ended = "max_frames"
        except KeyboardInterrupt:
            ended = "interrupted"
        except BrokenPipeError:  # e.g. `--json | head`
            ended = "output_closed"
            json_out = None
    finally:
        seconds = time.perf_counter() - t_start
        cpu_seconds = time.process_time() - cpu_start
        written = recorder.close() if recorder is not None else None
        if json_out is not None:
            try:
                json_out.flush()
            except (BrokenPipeError, ValueError):
                pass
        source.close()
        if show:
            try:
                cv2.destroyWindow(window)
            except cv2.error:
                pass
    stats = {
        "frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "cpu_seconds": round(cpu_seconds, 3),
        "stages": times.summary(), "ended": ended, "source": source.name, "read_failures": read_failures,
        "recording": str(written) if written else None,
    }
    if isinstance(source, ImageFolderSource):
        stats["skipped_images"] = source.skipped
    return stats
