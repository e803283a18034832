"""`Recognizer`: the Python API for robot software. Detect faces, classify their expression, track them.

    rec = Recognizer.load()                       # default package, onnxruntime, YuNet if cached, else Haar
    for face in rec.process(frame_bgr):           # one call per camera frame
        print(face.track_id, face.label, face.confidence, face.track_label, face.box)
    probs = rec.predict([face_crop, ...])         # (N, len(rec.classes)) float32, no detection

Thread-safe: detection and classification run outside the lock (detector and predictor are thread-safe), the
tracker update is under a lock. Each `stream` (a camera, say) has its own tracker, so several threads feeding
several streams get exactly what sequential calls would give. Frames of one stream must come in order.
No torch here: the predictor is an onnxruntime/OpenVINO/TensorRT pipeline from `lldif_edge.runtimes`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lldif_edge.app.align import align_face
from lldif_edge.app.detect import DEFAULT_BRIGHTEN, DEFAULT_DETECTOR, Detection, Detector, HaarDetector, make_detector
from lldif_edge.app.track import Tracker
from lldif_edge.errors import BackendError, LldifError, PackageError


class Predictor(Protocol):
    classes: list[str]

    def predict(self, faces) -> np.ndarray: ...


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    track_id: int  # stable over frames; -1 when tracking is off
    label: str | None  # None: "not sure", `confidence` is under the recognizer's `min_confidence`
    confidence: float  # probability of the most likely class in this frame
    probabilities: dict[str, float] = field(repr=False)  # class -> probability in this frame
    score: float = 0.0  # detector score
    track_label: str | None = None  # the track's smoothed label; None when untracked or not sure
    track_confidence: float | None = None  # the smoothed probability of `track_label`

    def to_dict(self, digits: int = 4) -> dict:
        return {"box": list(self.box), "track_id": self.track_id, "label": self.label,
                "confidence": round(self.confidence, digits), "score": round(self.score, digits),
                "track_label": self.track_label,
                "track_confidence": None if self.track_confidence is None else round(self.track_confidence, digits),
                "probabilities": {k: round(v, digits) for k, v in self.probabilities.items()}}


def crop_box(box, frame_shape, margin: float = 0.1) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) around box (x,y,w,h) grown by `margin` per side, shifted then clipped into
    the frame."""
    H, W = frame_shape[:2]
    x, y, w, h = box[:4]
    side = max(w, h) * (1.0 + 2.0 * margin)
    side = int(round(min(side, W, H)))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(round(min(max(cx - side / 2.0, 0), W - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), H - side)))
    return max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)


def check_min_confidence(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise LldifError(f"min_confidence must be a probability in [0, 1], not {p}")
    return float(p)


def default_package() -> Path:
    """`lldif_edge/weights/default_int8`, else `default_fp32`, inside the installed package."""
    weights = Path(__file__).resolve().parent.parent / "weights"
    for name in ("default_int8", "default_fp32"):
        if (weights / name).is_dir():
            return weights / name
    raise PackageError(f"no default model package in {weights} (default_int8 or default_fp32): pass --package DIR")


class Recognizer:
    def __init__(self, predictor: Predictor, detector: Detector | None = None, *, margin: float = 0.1,
                 track: bool = True, iou_threshold: float = 0.3, max_missed: int = 5, smoothing: float = 0.7,
                 max_faces: int = 16, color: str = "auto", detect_every: int = 10, align: bool = True,
                 min_confidence: float = 0.0):
        """`smoothing`: weight of the newest frame in the per-track moving average behind `Face.track_label`
        (1 = no smoothing). 0.7 labelled the most track frames right on the darkened clips of the 17 photos with
        YuNet (scripts/score_clip.py --smoothing): the model's errors there stick to a face rather than flicker,
        so smoothing gains about 1 % and heavier smoothing loses more at each change of expression.
        `color`: crops passed to the predictor: `rgb`, `gray`, or `auto` (gray if the predictor says
        `channels == 1`, else RGB). `detect_every`: with tracking, a full-frame detection every N frames of
        a stream; in between, known faces are re-found near their last box (detectors with `detect_near`),
        which is what makes 100+ FPS possible on a small CPU. New faces appear at most N-1 frames late.
        On this 2-core VM a full 640x480 Haar pass took 22.8 ms and a re-find 2.5 ms: every 5 frames the
        loop ran at 99 FPS, every 10 at 121 FPS (scripts/endurance.py, 10,000 frames).
        `align`: crop faces that come with landmarks (YuNet) turned upright and framed like the training faces
        (`lldif_edge.app.align`); faces without landmarks get the square crop with `margin`.
        `min_confidence`: a label (frame or track) whose calibrated probability is under it is None, "not sure",
        and the probabilities still come; `lldif-edge eval` shows the accuracy each threshold buys."""
        self.predictor = predictor
        self.detector = detector if detector is not None else HaarDetector()
        self.classes = list(predictor.classes)
        self.margin = margin
        self.track = track
        self.tracker_args = {"iou_threshold": iou_threshold, "max_missed": max_missed, "alpha": smoothing}
        self.max_faces = max_faces
        if color == "auto":
            grey = getattr(predictor, "grayscale", False) or getattr(predictor, "channels", 3) == 1
            color = "gray" if grey else "rgb"
        if color not in ("rgb", "gray"):
            raise LldifError(f"color must be rgb, gray or auto, not '{color}'")
        self.color = color
        self.align = align
        # aligned crops at twice the model's input: the predictor shrinks them with area averaging
        self.align_px = 2 * int(getattr(predictor, "input_size", 48))
        self.detect_every = max(1, int(detect_every))
        self.min_confidence = check_min_confidence(min_confidence)
        self._trackers: dict[object, Tracker] = {}
        self._recent: dict[object, tuple[int, list]] = {}  # stream -> (frames seen, last boxes)
        self._lock = threading.Lock()
        Tracker(**self.tracker_args)  # validate the settings now

    # ------------------------------------------------------------ construction from a model package
    @classmethod
    def load(cls, package: str | Path | None = None, backend: str = "onnxruntime", device: str | None = None,
             detector: str | Detector = DEFAULT_DETECTOR, detector_model: str | Path | None = None,
             brighten: str = DEFAULT_BRIGHTEN, threads: int | None = 1, **kwargs) -> Recognizer:
        """A recognizer on a model package (default: the one shipped in `lldif_edge/weights`).

        `threads`: runtime threads per call; 1 is fastest for one face at a time on a 2-core CPU (1.26 vs 1.85 ms
        with ONNX Runtime's default), and leaves the other core to capture and detection. With more, ONNX
        Runtime's workers sleep between calls instead of spinning: on a 2-core CPU shared with another job,
        spinning made 2 threads 3-4x slower than 1 (and slowed detection too), not spinning about as fast."""
        det = make_detector(detector, detector_model, brighten) if isinstance(detector, str) else detector
        import lldif_edge.runtimes as runtimes  # lazy: the runtimes pull in onnxruntime & co

        load_pipeline = getattr(runtimes, "load_pipeline", None)
        if load_pipeline is None:
            raise BackendError("this install has no model runtime (lldif_edge.runtimes.load_pipeline)")
        options = {"session.intra_op.allow_spinning": "0"} if backend == "onnxruntime" and (threads or 0) > 1 else {}
        predictor = load_pipeline(Path(package) if package else default_package(), backend=backend, device=device,
                                  threads=threads, **options)
        return cls(predictor, det, **kwargs)

    # ------------------------------------------------------------ classification only
    def predict(self, faces) -> np.ndarray:
        """Probabilities (N, len(classes)) for face crops: a list of uint8 (H,W) / (H,W,3) RGB, or (N,H,W[,3])."""
        probs = np.asarray(self.predictor.predict(faces), dtype=np.float32)
        n = len(faces)
        if probs.shape != (n, len(self.classes)):
            raise LldifError(f"the predictor returned shape {probs.shape}, expected {(n, len(self.classes))}")
        return probs

    def predict_one(self, face: np.ndarray) -> dict[str, float]:
        """class -> probability for one uint8 face crop (H,W) or (H,W,3) RGB."""
        return dict(zip(self.classes, self.predict([face])[0].tolist(), strict=True))

    # ------------------------------------------------------------ frames
    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.detector.detect(frame_bgr)[: self.max_faces]

    def crop(self, frame_bgr: np.ndarray, box) -> np.ndarray:
        """The predictor's input for one box, RGB or gray uint8 (a copy): aligned when the box has landmarks
        and `align` is on, else a square crop with margin."""
        marks = getattr(box, "landmarks", None)
        if self.align and marks is not None:
            c = align_face(frame_bgr, marks, self.align_px)
        else:
            x0, y0, x1, y1 = crop_box(box, frame_bgr.shape, self.margin)
            c = frame_bgr[y0:y1, x0:x1]
        if c.ndim == 2:
            return cv2.cvtColor(c, cv2.COLOR_GRAY2RGB) if self.color == "rgb" else c.copy()
        four = c.shape[2] == 4
        if self.color == "gray":
            return cv2.cvtColor(c, cv2.COLOR_BGRA2GRAY if four else cv2.COLOR_BGR2GRAY)
        return cv2.cvtColor(c, cv2.COLOR_BGRA2RGB if four else cv2.COLOR_BGR2RGB)

    def process(self, frame_bgr: np.ndarray, *, stream: object = "default", track: bool | None = None,
                timings: dict | None = None) -> list[Face]:
        """Faces in one BGR frame, largest first. `track=False` (or the constructor's) treats the frame alone:
        no smoothing, track_id -1. `timings`, when given, receives detect/classify/track milliseconds."""
        tracking = self.track if track is None else track
        t0 = time.perf_counter()
        dets = self._detect_tracked(frame_bgr, stream) if tracking else self.detect(frame_bgr)
        t1 = time.perf_counter()
        # every face of the frame in one batch: one call per sub-graph, whatever the number of faces
        probs = self.predict([self.crop(frame_bgr, d) for d in dets]) if dets else None
        t2 = time.perf_counter()
        if not tracking:
            faces = [self._face(d, -1, probs[i]) for i, d in enumerate(dets)]
        else:
            with self._lock:
                tracker = self._trackers.get(stream)
                if tracker is None:
                    tracker = self._trackers[stream] = Tracker(**self.tracker_args)
                tracks = tracker.update(dets, probs)
                faces = [self._face(d, t.id, probs[i], t.probs) for i, (d, t) in enumerate(zip(dets, tracks,
                                                                                              strict=True))]
        if timings is not None:
            t3 = time.perf_counter()
            timings["detect"] = 1000.0 * (t1 - t0)
            timings["classify"] = 1000.0 * (t2 - t1)
            timings["track"] = 1000.0 * (t3 - t2)
        return faces

    def _detect_tracked(self, frame_bgr: np.ndarray, stream: object) -> list[Detection]:
        with self._lock:
            seen, boxes = self._recent.get(stream, (0, []))
        near = getattr(self.detector, "detect_near", None)
        # past `near_max` faces one full pass costs less than re-finding them one by one
        many = len(boxes) > getattr(self.detector, "near_max", self.max_faces)
        if near is None or not boxes or many or seen % self.detect_every == 0:
            dets = self.detect(frame_bgr)
        else:
            dets = [d for d in (near(frame_bgr, b) for b in boxes) if d is not None]
        with self._lock:
            self._recent[stream] = (seen + 1, [d[:4] for d in dets])
        return dets

    def _face(self, det, track_id: int, p: np.ndarray, track_p: np.ndarray | None = None) -> Face:
        """A Face from this frame's probabilities `p` and, for a tracked face, the track's smoothed `track_p`."""
        k = int(np.argmax(p))
        values = p.tolist()
        track_label = track_conf = None
        if track_p is not None and len(track_p):
            j = int(np.argmax(track_p))
            track_label, track_conf = self.classes[j], float(track_p[j])
            if track_conf < self.min_confidence:
                track_label = None
        label = self.classes[k] if values[k] >= self.min_confidence else None
        return Face(tuple(int(v) for v in det[:4]), track_id, label, float(values[k]),
                    dict(zip(self.classes, values, strict=True)), float(det[4]) if len(det) > 4 else 0.0,
                    track_label, track_conf)

    def reset(self, stream: object = None) -> None:
        """Forget the tracks of one stream (or of all streams)."""
        with self._lock:
            if stream is None:
                self._trackers.clear()
                self._recent.clear()
            else:
                self._trackers.pop(stream, None)
                self._recent.pop(stream, None)
