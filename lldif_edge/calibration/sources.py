"""Calibration sources: a folder, a video file, a live camera, or arrays made elsewhere (data-free).

All share one iterator protocol, ONNX Runtime's `CalibrationDataReader` style: `get_next()` returns the next
uint8 face crop ((H,W) grey or (H,W,3) RGB, any size; `Pipeline.preprocess` takes it as is) or None when
the source is exhausted; `rewind()` starts again; iterating yields the same crops. `collect_faces` turns a
source into a fixed-size stack at the model's input size, optionally darkened.

Crop or photo: an image whose longer side is at most `CROP_MAX_SIDE` px, or a roughly square image up to
`SQUARE_CROP_MAX_SIDE` px, is taken to be a face crop already; anything else goes through face detection and
is cropped as at run time (`crop_face`). Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from lldif_edge.data import IMAGE_EXTS, to_model_pixels
from lldif_edge.errors import DataError
from lldif_edge.lowlight import darken

log = logging.getLogger(__name__)

CROP_MAX_SIDE = 96
SQUARE_CROP_MAX_SIDE = 160
SQUARE_TOLERANCE = 0.1
CROP_MARGIN = 0.1  # of the detected box side, added on each side
NORMAL_LIGHT_MEAN = 0.25  # a crop brighter than this (mean in 0..1) counts as normal light for --darken
CAMERA_MAX_FRAMES = 1800  # a camera gives up after this many frames (a minute at 30 fps)

Detection = tuple[int, int, int, int, float]
DetectFn = Callable[[np.ndarray], list[Detection]]


# ---------------------------------------------------------------- detection and cropping
def default_detector() -> DetectFn:
    """The run-time detector, so calibration crops faces exactly as `lldif-edge run` does."""
    from lldif_edge.app.detect import HaarDetector

    return HaarDetector().detect


def is_crop(image: np.ndarray) -> bool:
    """A small image, or a roughly square one of moderate size, is a face crop; anything else is a photo."""
    h, w = image.shape[:2]
    side = max(h, w)
    return side <= CROP_MAX_SIDE or (abs(h - w) <= SQUARE_TOLERANCE * side and side <= SQUARE_CROP_MAX_SIDE)


def crop_face(frame: np.ndarray, box, margin: float = CROP_MARGIN) -> np.ndarray:
    """The face crop of a detected box (x,y,w,h,...) exactly as the run-time app takes it."""
    from lldif_edge.app.recognizer import crop_box

    x0, y0, x1, y1 = crop_box(box, frame.shape, margin)
    return frame[y0:y1, x0:x1]


def _rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return bgr
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------- the protocol
class FaceSource:
    """Base class: subclasses implement `_faces()`; users call `get_next()`, `rewind()` or iterate."""

    description = "faces"

    def __init__(self) -> None:
        self._it: Iterator[np.ndarray] | None = None
        self.stats: dict[str, int] = {}

    def _faces(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def get_next(self) -> np.ndarray | None:
        if self._it is None:
            self._it = self._faces()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._faces()

    def _faces_in(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        """The face crops of one decoded frame (BGR): the frame itself when it is a crop, else detections."""
        self.stats["frames"] = self.stats.get("frames", 0) + 1
        if is_crop(frame_bgr):
            self.stats["crops"] = self.stats.get("crops", 0) + 1
            return [_rgb(frame_bgr)]
        boxes = self.detect(frame_bgr)
        self.stats["detected"] = self.stats.get("detected", 0) + len(boxes)
        crops = [crop_face(frame_bgr, b) for b in boxes]
        return [_rgb(c) for c in crops if c.size and min(c.shape[:2]) >= 8]

    @property
    def detect(self) -> DetectFn:
        if getattr(self, "_detect", None) is None:
            self._detect = default_detector()
        return self._detect


class FolderSource(FaceSource):
    """Every image under `root` (any nesting, class folders or flat), in a fixed shuffled order so that a
    partial read covers every class folder."""

    def __init__(self, root: str | Path, detect: DetectFn | None = None, seed: int = 0):
        super().__init__()
        self.root = Path(root)
        self._detect = detect
        self.description = f"folder {self.root}"
        if not self.root.is_dir():
            raise DataError(f"calibration folder not found: {self.root}")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise DataError(f"calibration folder {self.root} has no images ({'/'.join(sorted(IMAGE_EXTS))})")
        self.files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]

    def _faces(self) -> Iterator[np.ndarray]:
        for f in self.files:
            raw = np.fromfile(str(f), dtype=np.uint8)
            img = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
            if img is None:
                log.warning("calibration: skipped unreadable image %s", f)
                self.stats["unreadable"] = self.stats.get("unreadable", 0) + 1
                continue
            yield from self._faces_in(img)


class VideoSource(FaceSource):
    """Frames of a video file, every `stride`-th (default: spread `want` frames over the whole video)."""

    def __init__(self, path: str | Path, want: int = 256, detect: DetectFn | None = None, stride: int | None = None):
        super().__init__()
        self.path = Path(path)
        self._detect = detect
        self.description = f"video {self.path}"
        if not self.path.is_file():
            raise DataError(f"calibration video not found: {self.path}")
        cap = self._open()
        ok, _ = cap.read()
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        if not ok:
            raise DataError(f"cannot read video {self.path} (not a video, or a codec OpenCV lacks)")
        self.total_frames = total
        self.stride = stride or max(1, total // max(1, want))

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DataError(f"cannot read video {self.path} (not a video, or a codec OpenCV lacks)")
        return cap

    def _faces(self) -> Iterator[np.ndarray]:
        cap = self._open()
        try:
            i = 0
            while True:
                if i % self.stride:
                    if not cap.grab():
                        return
                else:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield from self._faces_in(frame)
                i += 1
        finally:
            cap.release()


class CameraSource(FaceSource):
    """Live frames from camera `index` (every `stride`-th frame); stops after `max_frames` frames."""

    def __init__(self, index: int, detect: DetectFn | None = None, stride: int = 3,
                 max_frames: int | None = None):
        super().__init__()
        self.index = int(index)
        self._detect = detect
        self.description = f"camera {self.index}"
        self.stride = stride
        self.max_frames = max_frames or CAMERA_MAX_FRAMES
        cap = cv2.VideoCapture(self.index)
        opened = cap.isOpened()
        cap.release()
        if not opened:
            raise DataError(f"camera {self.index} does not open (is it connected, and free?)")

    def _faces(self) -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            raise DataError(f"camera {self.index} does not open (is it connected, and free?)")
        try:
            for i in range(self.max_frames):
                ok, frame = cap.read()
                if not ok:
                    raise DataError(f"camera {self.index} stopped delivering frames")
                if i % self.stride == 0:
                    yield from self._faces_in(frame)
        finally:
            cap.release()


class ArraySource(FaceSource):
    """Face crops already in memory (synthesised, or loaded elsewhere)."""

    def __init__(self, faces: np.ndarray, description: str):
        super().__init__()
        self.faces = faces
        self.description = description

    def _faces(self) -> Iterator[np.ndarray]:
        yield from self.faces


def open_calibration_source(calib: str | Path | None, camera: int | None, want: int, detect: DetectFn | None = None
                ) -> FaceSource:
    """A folder or video file from `calib`, or camera `camera`. Exactly one of them."""
    if calib is not None and camera is not None:
        from lldif_edge.errors import LldifError

        raise LldifError("give either --calib or --calib-camera, not both")
    if camera is not None:
        return CameraSource(camera, detect)
    p = Path(calib)
    if p.is_dir():
        return FolderSource(p, detect)
    if p.is_file():
        return VideoSource(p, want, detect)
    raise DataError(f"calibration source not found: {p} (a folder of faces or photos, or a video file)")


# ---------------------------------------------------------------- collecting
def collect_faces(source: FaceSource, count: int, size: int, channels: int, darken_normal: bool = False,
                  seed: int = 0) -> tuple[np.ndarray, dict]:
    """Up to `count` faces from `source` as (N,size,size,channels) uint8; fewer is a warning, none an error.

    `darken_normal` darkens (docs/design.md, section 2; seeded) the faces that are normal-light (mean > 0.25);
    faces that are already dark are kept as they are.
    """
    if count < 1:
        from lldif_edge.errors import LldifError

        raise LldifError(f"--calib-count must be at least 1, not {count}")
    faces = []
    source.rewind()
    while len(faces) < count:
        f = source.get_next()
        if f is None:
            break
        faces.append(to_model_pixels(np.ascontiguousarray(f), size, channels))
    info = {"source": source.description, "requested": count, "count": len(faces), **source.stats}
    if not faces:
        frames = source.stats.get("frames", 0)
        raise DataError(f"no face found in {source.description} ({frames} images/frames read)")
    if len(faces) < count:
        log.warning("calibration: only %d faces found in %s (asked for %d); continuing with those",
                    len(faces), source.description, count)
    out = np.stack(faces)
    if darken_normal:
        rng = np.random.default_rng(seed)
        normal = out.reshape(len(out), -1).mean(axis=1) / 255.0 > NORMAL_LIGHT_MEAN
        for i in np.flatnonzero(normal):
            out[i] = darken(out[i], rng)
        info["darkened"] = int(normal.sum())
    return out, info
