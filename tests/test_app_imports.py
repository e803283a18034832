"""The application layer runs on a robot with numpy + OpenCV + onnxruntime only: no torch, no training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = (
    "import sys, lldif_edge.app; "
    "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'lldif_edge.lldif'))]; "
    "assert not bad, bad"
)


def test_importing_the_app_does_not_import_torch():
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_app_works_when_torch_cannot_be_imported(tmp_path):
    # a `torch` that fails on import, first on the path: the app must not touch it
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch on this robot')\n")
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(Path(__file__).parent)!r}]\n"
        "import numpy as np\n"
        "from lldif_edge.app import Recognizer, HaarDetector\n"
        "from fake_predictor import BrightnessPredictor\n"
        "r = Recognizer(BrightnessPredictor(), HaarDetector())\n"
        "assert r.process(np.zeros((240, 320, 3), np.uint8)) == []\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# After loading the shipped package and classifying one frame's face, none of the tooling may be loaded: not
# the benchmark, the exporter, calibration or the model code, and not torch.
RUNTIME_PATH = (
    "import sys, numpy as np\n"
    "from lldif_edge.app import Recognizer\n"
    "from lldif_edge.app.detect import Detection\n"
    "class OneBox:\n"
    "    def detect(self, frame):\n"
    "        return [Detection(100, 60, 96, 96, 0.9)]\n"
    "r = Recognizer.load(detector=OneBox())\n"
    "faces = r.process(np.full((240, 320, 3), 90, np.uint8))\n"
    "assert len(faces) == 1 and abs(sum(faces[0].probabilities.values()) - 1) < 1e-3, faces\n"
    "tooling = ('lldif_edge.bench', 'lldif_edge.export', 'lldif_edge.calibration', 'lldif_edge.lldif', 'torch')\n"
    "bad = sorted(m for m in sys.modules if m.startswith(tooling))\n"
    "assert not bad, bad\n"
    "assert 'lldif_edge.runtimes.pipeline' in sys.modules\n"
)


def test_the_runtime_path_loads_no_tooling():
    r = subprocess.run([sys.executable, "-c", RUNTIME_PATH], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
