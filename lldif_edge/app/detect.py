"""Face detectors behind one tiny interface: `detector.detect(frame_bgr) -> [(x, y, w, h, score), ...]`.

Boxes are ints in the coordinates of the frame passed in. Detection runs on a downscaled copy for speed,
optionally brightened (`brighten`); the classifier crop is always taken from the original frame, because
the expression model is trained on dark faces.

* `HaarDetector`: the frontal-face cascade shipped with opencv-python(-headless) 4.x. Default.
* `YuNetDetector`: OpenCV's YuNet ONNX model via `cv2.FaceDetectorYN`, file given by path or found in the
  cache dir (`~/.cache/lldif-edge`, env `LLDIF_EDGE_CACHE`), verified by sha256. Its boxes carry five landmarks
  (`Detection.landmarks`), which `Recognizer` uses to align the face.

Both have `detect_near(frame, box)`: re-find a known face in a small window around its last box, a fraction of the
cost of a full-frame pass; `Recognizer` uses it between full detections.

Both are thread-safe (a lock around the OpenCV object, which keeps scratch state).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lldif_edge.app.track import iou
from lldif_edge.errors import LldifError
from lldif_edge.package import sha256_file

log = logging.getLogger(__name__)


class Detection(tuple):
    """A face box `(x, y, w, h, score)`: a plain 5-tuple, plus `landmarks`, a (5, 2) float32 array in frame pixels
    (the eye on the image's left, the other eye, nose tip, mouth corner on the image's left, the other one) when
    the detector gives them (YuNet), else None."""

    landmarks: np.ndarray | None = None

    def __new__(cls, x: int, y: int, w: int, h: int, score: float, landmarks: np.ndarray | None = None):
        d = super().__new__(cls, (x, y, w, h, score))
        if landmarks is not None:
            d.landmarks = landmarks
        return d


YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_URL = ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
             + YUNET_FILE)
HAAR_FILE = "haarcascade_frontalface_default.xml"

BRIGHTEN_MODES = ("none", "gamma", "clahe", "gamma+clahe", "auto")
DEFAULT_BRIGHTEN = "auto"
# `auto` brightens only frames whose mean brightness is below this (0..1).
AUTO_DARK_MEAN = 0.25
# Adaptive gamma maps the frame mean to this (0..1).
GAMMA_TARGET_MEAN = 0.4


class Detector(Protocol):
    def detect(self, frame_bgr: np.ndarray) -> list[Detection]: ...


# ---------------------------------------------------------------- brightening (detector input only)
class Brightener:
    """Brightens a uint8 grey or BGR image for detection. Lookup tables are cached; no per-call growth.

    * `none`: unchanged.
    * `gamma`: adaptive gamma, chosen so the mean maps to ~0.4 (never darkens).
    * `clahe`: contrast-limited adaptive histogram equalisation of the luminance.
    * `gamma+clahe`: both, gamma first.
    * `auto`: adaptive gamma, applied only when the frame is dark (mean < 0.25); else unchanged.
    """

    def __init__(self, mode: str = "none", clip_limit: float = 2.0, tiles: int = 8):
        if mode not in BRIGHTEN_MODES:
            raise LldifError(f"unknown brightening mode '{mode}': use one of {', '.join(BRIGHTEN_MODES)}")
        self.mode = mode
        self.clip_limit = clip_limit
        self.tiles = tiles
        self._luts: dict[int, np.ndarray] = {}  # at most ~20 entries: gamma quantised to 0.05
        self._local = threading.local()  # cv2.CLAHE keeps scratch buffers: one per thread

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return img
        mean = _mean01(img)
        if self.mode == "auto" and mean >= AUTO_DARK_MEAN:
            return img
        if self.mode in ("gamma", "gamma+clahe", "auto"):
            img = self._gamma(img, mean)
        if self.mode in ("clahe", "gamma+clahe"):
            img = self._clahe(img)
        return img

    def _gamma(self, img: np.ndarray, mean: float) -> np.ndarray:
        if mean >= GAMMA_TARGET_MEAN or mean <= 0.0:
            return img
        g = math.log(GAMMA_TARGET_MEAN) / math.log(max(mean, 1e-3))
        key = int(round(min(max(g, 0.15), 1.0) * 20))  # gamma in steps of 0.05
        lut = self._luts.get(key)
        if lut is None:
            lut = np.round(255.0 * (np.arange(256) / 255.0) ** (key / 20)).astype(np.uint8)
            self._luts[key] = lut
        return cv2.LUT(img, lut)

    def _clahe(self, img: np.ndarray) -> np.ndarray:
        clahe = getattr(self._local, "clahe", None)
        if clahe is None:
            clahe = self._local.clahe = cv2.createCLAHE(self.clip_limit, (self.tiles, self.tiles))
        if img.ndim == 2:
            return clahe.apply(img)
        ycc = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
        ycc[..., 0] = clahe.apply(np.ascontiguousarray(ycc[..., 0]))
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


def _mean01(img: np.ndarray) -> float:
    return float(cv2.mean(img)[0] if img.ndim == 2 else np.mean(cv2.mean(img)[:3])) / 255.0


_BRIGHTENERS: dict[str, Brightener] = {}


def brighten(frame: np.ndarray, mode: str = DEFAULT_BRIGHTEN) -> np.ndarray:
    """Brighten a uint8 grey or BGR frame for the detector (see `Brightener` for the modes)."""
    b = _BRIGHTENERS.get(mode)
    if b is None:
        b = _BRIGHTENERS[mode] = Brightener(mode)
    return b(frame)


# ---------------------------------------------------------------- detectors
def _downscale(img: np.ndarray, max_width: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    if w <= max_width:
        return img, 1.0
    s = max_width / w
    return cv2.resize(img, (max_width, max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3) or frame.size == 0:
        raise LldifError("a frame must be a non-empty uint8 array (H,W) or (H,W,3) in BGR order")


class HaarDetector:
    """Viola-Jones frontal-face cascade on a grey frame downscaled to at most `max_width` px.

    `score` is the number of merged raw detections n squashed to (0,1) as n / (n + min_neighbors):
    0.5 at the acceptance threshold. It ranks boxes; it is not a probability.
    """

    name = "haar"

    def __init__(self, brighten: str = DEFAULT_BRIGHTEN, max_width: int = 320, min_size: int = 24,
                 scale_factor: float = 1.1, min_neighbors: int = 4, cascade: str | Path | None = None):
        path = str(cascade or Path(cv2.data.haarcascades) / HAAR_FILE)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise LldifError(f"cannot load the Haar cascade {path} (is opencv-python-headless 4.x installed?)")
        self.brightener = Brightener(brighten)
        self.max_width = max_width
        self.min_size = min_size  # px at detection scale
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self._lock = threading.Lock()

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        _check_frame(frame_bgr)
        if frame_bgr.ndim == 2:
            grey = frame_bgr
        else:
            grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2GRAY if frame_bgr.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        small, s = _downscale(grey, self.max_width)
        small = self.brightener(small)
        with self._lock:
            boxes, counts = self._cascade.detectMultiScale2(
                small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size))
        out = []
        for (x, y, w, h), n in zip(boxes, np.ravel(counts), strict=False):
            out.append((round(x / s), round(y / s), round(w / s), round(h / s),
                        float(n) / (float(n) + self.min_neighbors)))
        out.sort(key=lambda d: -d[2] * d[3])
        return out

    def detect_near(self, frame_bgr: np.ndarray, box, face_px: int = 40) -> Detection | None:
        """Re-find a known face in a window around its last box, at the one scale where it is ~face_px wide.

        Searching a few scales of a small window costs a fraction of a full-frame pass; `Recognizer` uses it
        between full detections.
        """
        x, y, w, h = (int(v) for v in box[:4])
        H, W = frame_bgr.shape[:2]
        pad = w // 2
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(W, x + w + pad), min(H, y + h + pad)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        roi = frame_bgr[y0:y1, x0:x1]
        grey = roi if roi.ndim == 2 else cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY)
        s = face_px / max(w, 1)
        small = self.brightener(cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
        lo, hi = int(face_px * 0.7), int(face_px * 1.45)
        with self._lock:
            boxes, counts = self._cascade.detectMultiScale2(
                small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(lo, lo),
                maxSize=(hi, hi))
        if len(boxes) == 0:
            return None
        i = int(np.argmax([bw * bh for _, _, bw, bh in boxes]))
        bx, by, bw, bh = boxes[i]
        n = float(np.ravel(counts)[i])
        return (x0 + round(bx / s), y0 + round(by / s), round(bw / s), round(bh / s), n / (n + self.min_neighbors))


class YuNetDetector:
    """OpenCV YuNet (2023mar) via `cv2.FaceDetectorYN` on a BGR frame downscaled to at most `max_width` px.

    320 px wide by default: on darkened 640x480 frames it found more faces than at 640 (downscaling averages the
    sensor noise away) in a quarter of the time (33 -> 9 ms on a loaded 2-core EPYC). `detect_near` runs a
    second, `near_px`-square network on the window around a known face; a window costs about a fifth of a full
    pass, so past `near_max` known faces `Recognizer` runs the full pass instead.
    """

    name = "yunet"
    near_max = 3

    def __init__(self, model_path: str | Path | None = None, brighten: str = DEFAULT_BRIGHTEN,
                 max_width: int = 320, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 top_k: int = 50, near_px: int = 128):
        path = resolve_yunet(model_path)
        self.model_path = path
        self._size = (max_width, max_width * 3 // 4)
        self._net = cv2.FaceDetectorYN.create(str(path), "", self._size, score_threshold, nms_threshold, top_k)
        # its own network for the re-find window: a fixed input size, never resized between the two uses
        self._near = cv2.FaceDetectorYN.create(str(path), "", (near_px, near_px), score_threshold, nms_threshold,
                                               top_k)
        self.near_px = near_px
        self.brightener = Brightener(brighten)
        self.max_width = max_width
        self._lock = threading.Lock()

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        _check_frame(frame_bgr)
        small, s = _downscale(_to_bgr(frame_bgr), self.max_width)
        small = self.brightener(small)
        size = (small.shape[1], small.shape[0])
        with self._lock:
            if size != self._size:
                self._net.setInputSize(size)
                self._size = size
            _, faces = self._net.detect(small)
        out = self._detections(faces, s, 0, 0, frame_bgr.shape)
        out.sort(key=lambda d: -d[2] * d[3])
        return out

    def detect_near(self, frame_bgr: np.ndarray, box) -> Detection | None:
        """Re-find a known face in the square window twice its size around its last box, scaled to `near_px`
        (the face ~near_px/2 wide): the detection that overlaps the last box most, or None."""
        x, y, w, h = (int(v) for v in box[:4])
        H, W = frame_bgr.shape[:2]
        side = 2 * max(w, h, 8)
        cx, cy = x + w // 2, y + h // 2
        x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
        x1, y1 = min(W, cx + side // 2), min(H, cy + side // 2)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        s = self.near_px / side
        roi = _to_bgr(frame_bgr[y0:y1, x0:x1])
        rw, rh = min(self.near_px, max(1, round((x1 - x0) * s))), min(self.near_px, max(1, round((y1 - y0) * s)))
        win = np.zeros((self.near_px, self.near_px, 3), np.uint8)  # clipped at the frame's edge: padded
        win[:rh, :rw] = self.brightener(cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA))
        with self._lock:
            _, faces = self._near.detect(win)
        found = self._detections(faces, s, x0, y0, frame_bgr.shape)
        best = max(found, key=lambda d: iou(d, box), default=None)
        return best if best is not None and iou(best, box) > 0.1 else None

    @staticmethod
    def _detections(faces, s: float, ox: int, oy: int, shape) -> list[Detection]:
        """YuNet rows (x, y, w, h, 5 landmarks, score) at scale `s`, offset (ox, oy) -> frame-pixel detections."""
        if faces is None:
            return []
        H, W = shape[:2]
        out = []
        for f in faces:
            x, y, w, h = (float(v) / s for v in f[:4])
            x0, y0 = max(0, round(ox + x)), max(0, round(oy + y))
            x1, y1 = min(W, round(ox + x + w)), min(H, round(oy + y + h))
            if x1 > x0 and y1 > y0:
                marks = (np.asarray(f[4:14], np.float32).reshape(5, 2) / s + np.float32([ox, oy]))
                out.append(Detection(x0, y0, x1 - x0, y1 - y0, float(f[14]), marks))
        return out


# ---------------------------------------------------------------- YuNet model file
def cache_dir() -> Path:
    """`$LLDIF_EDGE_CACHE` or `~/.cache/lldif-edge`."""
    env = os.environ.get("LLDIF_EDGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lldif-edge"


def _how_to_get() -> str:
    return (f"run once with --fetch-detector where there is network, or download {YUNET_URL} (sha256 "
            f"{YUNET_SHA256[:12]}...) on another machine and copy it here: pass --detector-model PATH or put it "
            f"in {cache_dir()}; or use --detector haar")


def resolve_yunet(model_path: str | Path | None = None) -> Path:
    """The verified YuNet model file: `model_path`, else the cached copy. Never downloads."""
    path = Path(model_path).expanduser() if model_path else cache_dir() / YUNET_FILE
    if not path.is_file():
        where = "not found" if model_path else "not in the cache"
        raise LldifError(f"YuNet model {path} {where}: {_how_to_get()}")
    digest = sha256_file(path)
    if digest != YUNET_SHA256:
        raise LldifError(f"YuNet model {path} has sha256 {digest[:12]}..., expected {YUNET_SHA256[:12]}...: "
                         f"{_how_to_get()}")
    return path


def fetch_yunet(cache: str | Path | None = None, url: str = YUNET_URL, timeout: float = 30.0) -> Path:
    """Download the YuNet model into the cache dir (sha256-checked, atomic). Raises LldifError when offline."""
    import urllib.error
    import urllib.request

    target = Path(cache).expanduser() if cache else cache_dir()
    dest = target / YUNET_FILE
    if dest.is_file() and sha256_file(dest) == YUNET_SHA256:
        return dest
    target.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 16), b""):
                h.update(chunk)
                f.write(chunk)
        if h.hexdigest() != YUNET_SHA256:
            raise LldifError(f"download of {url} has sha256 {h.hexdigest()[:12]}..., expected "
                             f"{YUNET_SHA256[:12]}...: {_how_to_get()}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise LldifError(f"cannot download the YuNet model ({e.__class__.__name__}: {e}): {_how_to_get()}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------- factory
DETECTORS = ("auto", "haar", "yunet")
DEFAULT_DETECTOR = "auto"


def make_detector(name: str = DEFAULT_DETECTOR, model_path: str | Path | None = None,
                  brighten: str = DEFAULT_BRIGHTEN, fetch: bool = False, **kwargs) -> Detector:
    """`haar`, `yunet` (model from `model_path` or the cache dir; `fetch=True` downloads it into the cache
    when it is not there) or `auto`: YuNet when its model is given or cached (or fetched), else Haar with a
    warning that says how to get YuNet. YuNet is the better choice where it can run: on darkened 640x480 clips
    it found more faces than Haar, its landmarks align the crops, and it labelled more frames right, at no more
    cost a frame (scripts/score_clip.py; README)."""
    if name == "auto":
        if model_path or fetch or (cache_dir() / YUNET_FILE).is_file():
            name = "yunet"
        else:
            log.warning("face detector: Haar. YuNet finds more faces in the dark and aligns them, but %s is not in "
                        "%s: run once with --fetch-detector, or copy it there, or pass --detector-model PATH",
                        YUNET_FILE, cache_dir())
            name = "haar"
    if name == "haar":
        if model_path:
            raise LldifError("--detector-model is for --detector yunet; the Haar cascade ships with OpenCV")
        return HaarDetector(brighten=brighten, **kwargs)
    if name == "yunet":
        if fetch and not model_path and not (cache_dir() / YUNET_FILE).is_file():
            fetch_yunet()
        return YuNetDetector(model_path, brighten=brighten, **kwargs)
    raise LldifError(f"unknown detector '{name}': use one of {', '.join(DETECTORS)}")
