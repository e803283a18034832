"""The README's picture: a photo darkened the way the evaluation sets are, with what `lldif-edge run` draws on it.

    python scripts/demo_frame.py PHOTO --out docs/demo_frame.jpg [--seed 3] [--package PKG] [--detector-model M]

Left: the photo in normal light. Right: the same frame darkened (`lldif_edge.lowlight.darken`, the synthesis
training and `eval --darken` use), then detected, classified and drawn by `Recognizer` exactly as `run` does;
nothing is brightened for the picture. The shipped picture: scikit-image's `astronaut.png` (NASA, public domain;
inside the scikit-image wheel as `skimage/data/astronaut.png`), seed 3 (mean brightness 115 -> 17 of 255), with
YuNet (`--detector-model face_detection_yunet_2023mar.onnx`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from lldif_edge.app import Recognizer
from lldif_edge.app.overlay import draw
from lldif_edge.errors import LldifError
from lldif_edge.lowlight import darken
from lldif_edge.paths import check_output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/demo_frame.jpg"))
    ap.add_argument("--seed", type=int, default=3, help="darkening draw")
    ap.add_argument("--package", type=Path, help="model package (default: the shipped INT8 one)")
    ap.add_argument("--detector-model", type=Path, help="YuNet .onnx (default: as `run`: cached YuNet, else Haar)")
    ap.add_argument("--width", type=int, default=480, help="width of each half, pixels")
    args = ap.parse_args()
    try:
        check_output(args.out, "--out")
    except LldifError as e:
        raise SystemExit(f"error: {e}") from None
    photo = cv2.imread(str(args.photo), cv2.IMREAD_COLOR)
    if photo is None:
        raise SystemExit(f"error: cannot read {args.photo}")
    photo = cv2.resize(photo, (args.width, round(photo.shape[0] * args.width / photo.shape[1])),
                       interpolation=cv2.INTER_AREA)
    dark = darken(photo, np.random.default_rng(args.seed))
    faces = Recognizer.load(args.package, detector_model=args.detector_model).process(dark, track=False)
    for f in faces:
        print(f"{f.label or 'not sure'} {f.confidence:.2f} at {f.box}")
    draw(dark, faces)
    picture = np.concatenate([photo, np.full((photo.shape[0], 8, 3), 255, np.uint8), dark], axis=1)
    tmp = args.out.with_name(args.out.stem + ".tmp" + args.out.suffix)  # the suffix picks the format
    if not cv2.imwrite(str(tmp), picture):
        raise SystemExit(f"error: cannot write {args.out}")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
