"""How often do the face detectors find a face in darkened photos? Decides the default brightening mode.

    python scripts/detection_study.py PHOTOS_DIR [--seeds 10] [--detectors haar,yunet]
        [--yunet-model PATH] [--modes none,gamma,clahe,gamma+clahe,auto] [--canvas 640x480] [--json]

Each photo (one face each) is darkened with `lldif_edge.lowlight.darken` under several seeds (the training
synthesis: gamma 1.5-5, gain 0.5-1, shot and read noise). The reference box of a photo is the largest
YuNet box on the undarkened photo (Haar when no YuNet model is given). Per detector x brightening mode:

* found: share of darkened images with at least one box,
* hit:   share with a box of IoU >= 0.3 with the reference box (the right face),
* false/img: mean number of boxes that do not match the reference,
* ms: mean detection time per image (single OpenCV thread).

`--canvas WxH` pastes each photo (scaled to 60% of the canvas height) onto a WxH frame with a smooth background
(the photo's mean colour), before darkening: a face the size a robot camera sees at 1-2 m.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from lldif_edge.app.detect import BRIGHTEN_MODES, HaarDetector, YuNetDetector
from lldif_edge.app.track import iou
from lldif_edge.errors import DataError
from lldif_edge.lowlight import darken

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


def load_photos(folder: str | Path, canvas: tuple[int, int] | None = None) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            continue
        out.append((f.name, paste_on_canvas(img, canvas) if canvas else img))
    if not out:
        raise DataError(f"no readable photos in {folder}")
    return out


def background(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A smooth, face-free (W,H) background: the photo's mean colour in a top-to-bottom gradient."""
    W, H = size
    ramp = np.linspace(0.6, 1.1, H, dtype=np.float32)[:, None, None]
    mean = np.asarray(cv2.mean(img)[:3], np.float32)[None, None, :]
    return np.broadcast_to(np.clip(ramp * mean, 0, 255), (H, W, 3)).astype(np.uint8)


def paste_on_canvas(img: np.ndarray, size: tuple[int, int], height_frac: float = 0.6,
                    offset: tuple[int, int] = (0, 0), canvas: np.ndarray | None = None) -> np.ndarray:
    """The photo scaled to `height_frac` of a `size`=(W,H) canvas (default: `background`), centred + offset."""
    W, H = size
    canvas = background(img, size) if canvas is None else canvas.copy()
    h = int(H * height_frac)
    w = min(W, round(img.shape[1] * h / img.shape[0]))
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != img.shape[1::-1] else img
    x0 = min(max(0, (W - w) // 2 + offset[0]), W - w)
    y0 = min(max(0, (H - h) // 2 + offset[1]), H - h)
    canvas[y0:y0 + h, x0:x0 + w] = small
    return canvas


def measure_detection_rate(detector, photos: list[tuple[str, np.ndarray]], seeds: int | list[int] | None,
                           references: dict[str, tuple] | None = None, iou_min: float = 0.3) -> dict:
    """Detection statistics of `detector` over darkened copies of `photos` (see the module docstring).

    `seeds`: a count or a list of darkening seeds; None measures the undarkened photos.
    `references`: name -> reference box (x,y,w,h) or None; without it only `found` is meaningful.
    """
    seeds = [None] if seeds is None else list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    n = found = hit = false = 0
    seconds = 0.0
    for name, img in photos:
        ref = (references or {}).get(name)
        for seed in seeds:
            dark = img if seed is None else darken(img, np.random.default_rng([seed, zlib.crc32(name.encode())]))
            t = time.perf_counter()
            boxes = detector.detect(dark)
            seconds += time.perf_counter() - t
            n += 1
            found += bool(boxes)
            matched = [b for b in boxes if ref is not None and iou(b[:4], ref) >= iou_min]
            hit += bool(matched)
            false += len(boxes) - min(len(matched), 1)
    return {"images": n, "found": found / n, "hit": hit / n, "false_per_image": false / n,
            "ms": 1000.0 * seconds / n}


def reference_boxes(photos, detector) -> dict[str, tuple | None]:
    refs = {}
    for name, img in photos:
        boxes = detector.detect(img)
        refs[name] = tuple(boxes[0][:4]) if boxes else None
    return refs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--detectors", default="haar,yunet")
    ap.add_argument("--yunet-model", type=Path, default=None)
    ap.add_argument("--modes", default=",".join(BRIGHTEN_MODES))
    ap.add_argument("--canvas", default=None, help="WxH, e.g. 640x480")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    canvas = tuple(int(v) for v in args.canvas.lower().split("x")) if args.canvas else None
    photos = load_photos(args.photos, canvas)
    modes = args.modes.split(",")
    names = args.detectors.split(",")

    def build(name: str, mode: str):
        return HaarDetector(brighten=mode) if name == "haar" else YuNetDetector(args.yunet_model, brighten=mode)

    ref_det = build("yunet" if "yunet" in names else "haar", "none")
    refs = reference_boxes(photos, ref_det)
    rows = []
    for name in names:
        rows.append({"detector": name, "mode": "(undarkened)",
                     **measure_detection_rate(build(name, "none"), photos, None, refs)})
        for mode in modes:
            rows.append({"detector": name, "mode": mode,
                         **measure_detection_rate(build(name, mode), photos, args.seeds, refs)})
    meta = {"photos": len(photos), "seeds": args.seeds, "canvas": args.canvas,
            "reference": ref_det.name, "references_found": sum(v is not None for v in refs.values())}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
        return 0
    print(f"{meta['photos']} photos x {args.seeds} darkening seeds"
          + (f", pasted on a {args.canvas} canvas" if canvas else "")
          + f"; reference boxes from {meta['reference']} on the undarkened photos ({meta['references_found']} found)")
    print(f"| {'detector':8} | {'brighten':12} | {'found':>6} | {'hit':>6} | {'false/img':>9} | {'ms':>6} |")
    print(f"|{'-' * 10}|{'-' * 14}|{'-' * 8}|{'-' * 8}|{'-' * 11}|{'-' * 8}|")
    for r in rows:
        print(f"| {r['detector']:8} | {r['mode']:12} | {r['found']:6.3f} | {r['hit']:6.3f} | "
              f"{r['false_per_image']:9.2f} | {r['ms']:6.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
