"""Does aligning faces on YuNet's landmarks help the expression model? Square crop vs aligned crop, same boxes.

    python scripts/alignment_study.py --val ../shared/data/fer2013/val [--per-class 100] [--tilt 0,15,30]
        [--clips build/clips/one_dark.mp4 ...] [--package DIR] [--detector-model M.onnx] [--json]

Val faces: each FER2013 val face (`--per-class` per class) is scaled to 160 px, turned by each `--tilt` angle
(alternately left and right), pasted on a 640x480 frame and darkened (`lowlight.darken`, one draw per face and
angle; `--light normal` skips it). YuNet finds the face; the same detection is classified from the square crop
with margin (`align=False`) and from the aligned crop (`align=True`). Clips (of `scripts/make_clip.py`): every
frame, the photos' faces found by YuNet (box centre in the photo's rectangle), classified both ways.
Reports accuracy over the faces both ways saw, per tilt and per clip.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from detection_study import background  # scripts/detection_study.py, beside this script

from lldif_edge.app import Recognizer, make_detector
from lldif_edge.data import load_folder
from lldif_edge.lowlight import darken

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_clip import match  # noqa: E402

FACE_PX = 160


def render(face: np.ndarray, tilt: float, dark: bool, rng: np.random.Generator) -> np.ndarray:
    """A grey 48x48 face scaled to FACE_PX, turned by `tilt` degrees, on a 640x480 frame (darkened)."""
    big = cv2.cvtColor(cv2.resize(face, (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    if tilt:
        m = cv2.getRotationMatrix2D((FACE_PX / 2, FACE_PX / 2), tilt, 1.0)
        big = cv2.warpAffine(big, m, (FACE_PX, FACE_PX), borderMode=cv2.BORDER_REPLICATE)
    frame = background(big, (640, 480))
    x0, y0 = 240 + int(rng.integers(-100, 100)), 160 + int(rng.integers(-80, 80))
    frame[y0:y0 + FACE_PX, x0:x0 + FACE_PX] = big
    return darken(frame, rng) if dark else frame


def both_ways(recs: dict[str, Recognizer], frame: np.ndarray, dets) -> dict[str, np.ndarray]:
    """Probabilities of each recognizer for the same detections (one batch each)."""
    return {k: r.predict([r.crop(frame, d) for d in dets]) for k, r in recs.items()}


def study_val(recs, detector, val: Path, per_class: int, tilts: list[float], dark: bool, seed: int) -> list[dict]:
    classes = recs["square"].classes
    data = load_folder(val, classes, size=48, channels=1)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(data.labels == c))[:per_class]
                           for c in range(len(classes))])
    rows = []
    for tilt in tilts:
        right = {k: 0 for k in recs}
        seen = 0
        for n, i in enumerate(pick):
            frame = render(data.images[i].reshape(48, 48), tilt * (1 if n % 2 else -1), dark,
                           np.random.default_rng([seed, int(i), int(tilt)]))
            dets = detector.detect(frame)[:1]
            if not dets:
                continue
            seen += 1
            for k, p in both_ways(recs, frame, dets).items():
                right[k] += int(p[0].argmax()) == int(data.labels[i])
        rows.append({"set": f"val tilt {tilt:g}", "faces": len(pick), "found": seen,
                     **{k: round(v / max(seen, 1), 4) for k, v in right.items()}})
    return rows


def study_clip(recs, detector, clip: Path) -> dict:
    truth = json.loads(clip.with_suffix(".truth.json").read_text())
    cap = cv2.VideoCapture(str(clip))
    right = {k: 0 for k in recs}
    seen = total = 0
    classes = recs["square"].classes
    for t_frame in truth["frames"]:
        ok, frame = cap.read()
        if not ok:
            break
        dets = detector.detect(frame)
        matched = match(t_frame, [{"box": d, "det": d} for d in dets])
        pairs = [(t, m["det"]) for t, m in zip(t_frame, matched, strict=True) if m is not None]
        total += len(t_frame)
        if not pairs:
            continue
        seen += len(pairs)
        for k, p in both_ways(recs, frame, [d for _, d in pairs]).items():
            right[k] += sum(classes[int(q.argmax())] == t["label"] for (t, _), q in zip(pairs, p, strict=True))
    cap.release()
    acc = {k: round(v / max(seen, 1), 4) for k, v in right.items()}
    return {"set": clip.name, "faces": total, "found": seen, **acc}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val", type=Path, default=None)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--tilt", default="0,15,30", help="degrees, comma-separated")
    ap.add_argument("--light", choices=("dark", "normal"), default="dark")
    ap.add_argument("--clips", type=Path, nargs="*", default=[])
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--detector-model", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    detector = make_detector("yunet", args.detector_model)
    square = Recognizer.load(args.package, detector=detector, align=False)
    aligned = Recognizer(square.predictor, detector, align=True)
    recs = {"square": square, "aligned": aligned}
    rows = []
    if args.val:
        rows += study_val(recs, detector, args.val, args.per_class, [float(t) for t in args.tilt.split(",")],
                          args.light == "dark", args.seed)
    rows += [study_clip(recs, detector, c) for c in args.clips]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| set | faces | found | square crop | aligned |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['faces']} | {r['found']} | {r['square']:.4f} | {r['aligned']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
