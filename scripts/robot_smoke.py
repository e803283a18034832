"""The robot install, checked as a robot uses it: run with the Python of a venv where only the lldif-edge wheel
(no extras) is installed, from a folder outside the repository (`make robot-check` does both).

Checks: torch is not installed; `lldif-edge info`, `bench --runs 20` and `run --video` on a short generated clip
exit 0; `Recognizer.load().process(frame)` returns faces with every field; nothing imported torch.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np


def cli(*args: str) -> str:
    exe = shutil.which("lldif-edge", path=str(Path(sys.executable).parent))
    assert exe, "the wheel installed no lldif-edge command"
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"lldif-edge {' '.join(args)} failed:\n{proc.stderr}"
    print(f"ok: lldif-edge {' '.join(args)}", flush=True)
    return proc.stdout


def clip(path: Path, frames: int = 15) -> np.ndarray:
    """A 320x240 mp4 of a dim frame with a bright oval "face" in it; returns its first frame."""
    frame = np.full((240, 320, 3), 25, np.uint8)
    cv2.ellipse(frame, (160, 120), (55, 70), 0, 0, 360, (120, 120, 120), -1)
    for eye in (140, 180):
        cv2.circle(frame, (eye, 105), 6, (40, 40, 40), -1)
    cv2.ellipse(frame, (160, 150), (20, 8), 0, 0, 180, (50, 50, 50), 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    assert path.stat().st_size > 0, "OpenCV wrote no video"
    return frame


def main() -> None:
    import lldif_edge

    here = Path.cwd().resolve()
    assert not (here / "lldif_edge").is_dir(), "run this outside the repository"
    assert importlib.util.find_spec("torch") is None, "torch is installed in the robot venv"
    print(f"lldif-edge {lldif_edge.__version__} from {Path(lldif_edge.__file__).parent}")

    facts = json.loads(cli("info", "--json"))
    assert not facts["torch_installed"]
    assert any(b["backend"] == "onnxruntime" and b["available"] for b in facts["backends"])
    assert "onnxruntime int8" in cli("bench", "--runs", "20", "--rounds", "2", "--batch", "8")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.mp4"
        first = clip(video)
        lines = [json.loads(line) for line in cli("run", "--video", str(video), "--json", "--no-show").splitlines()]
        assert [ln["frame"] for ln in lines[:-1]] == list(range(15)) and lines[-1]["summary"]["frames"] == 15

    from lldif_edge.app import Recognizer

    rec = Recognizer.load()
    faces = rec.process(first)
    probs = rec.predict([cv2.cvtColor(first[50:190, 90:230], cv2.COLOR_BGR2GRAY)])
    assert probs.shape == (1, len(rec.classes)) and abs(float(probs.sum()) - 1) < 1e-3
    for f in faces:
        assert (f.label is None or f.label in rec.classes) and 0 <= f.confidence <= 1 and len(f.box) == 4
    print(f"ok: Recognizer.load().process: {len(faces)} face(s); predict: {rec.classes[int(probs.argmax())]}")
    assert "torch" not in sys.modules, "the runtime imported torch"
    print("robot install: ok, torch never imported")


if __name__ == "__main__":
    main()
