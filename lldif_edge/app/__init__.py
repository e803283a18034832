"""The application layer: face detection and alignment, tracking, overlay, the `Recognizer` API and the `run` loop.

Runtime only: numpy + OpenCV (+ the model runtime, imported lazily by `Recognizer.load`). Never imports torch.
"""

from lldif_edge.app.align import align_face
from lldif_edge.app.detect import (
    BRIGHTEN_MODES,
    DEFAULT_BRIGHTEN,
    DEFAULT_DETECTOR,
    Detection,
    HaarDetector,
    YuNetDetector,
    brighten,
    fetch_yunet,
    make_detector,
    resolve_yunet,
)
from lldif_edge.app.loop import open_source, run
from lldif_edge.app.overlay import draw
from lldif_edge.app.recognizer import Face, Recognizer
from lldif_edge.app.track import Tracker, iou

__all__ = [
    "BRIGHTEN_MODES", "DEFAULT_BRIGHTEN", "DEFAULT_DETECTOR", "Detection", "Face", "HaarDetector", "Recognizer",
    "Tracker", "YuNetDetector", "align_face", "brighten", "draw", "fetch_yunet", "iou", "make_detector",
    "open_source", "resolve_yunet", "run",
]
