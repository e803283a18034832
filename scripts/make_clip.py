"""Test clips for `lldif-edge run`: the labelled photos of a faces folder rendered into 640x480 videos.

    python scripts/make_clip.py ../shared/data/faces --out build/clips [--frames 10] [--seed 0]

Writes four clips and, beside each, its truth (`CLIP.truth.json`, read by `scripts/score_clip.py`):

* `one_dark.mp4`, `one_normal.mp4`: one photo a frame, every photo of `labels.csv` for `--frames` frames in turn,
  scaled to 60 % of the frame height on a smooth background, drifting a few pixels (so tracking has work);
* `six_dark.mp4`, `six_normal.mp4`: six photos a frame in a 3x2 grid; every `--frames` frames the grid moves on
  by one photo, so each photo is seen in six places.

`dark` frames are darkened one by one with `lldif_edge.lowlight.darken` (the training synthesis, a fresh draw
per frame: gamma 1.5-5, gain 0.5-1, shot and read noise); `normal` frames are the photos as they are.
The truth names, per frame, each photo's label and the rectangle it was pasted into.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from detection_study import background  # scripts/detection_study.py, beside this script

from lldif_edge.lowlight import darken

SIZE = (640, 480)
LAYOUTS = ("one", "six")
LIGHTS = ("dark", "normal")


def read_labels(folder: Path) -> list[tuple[str, str, np.ndarray]]:
    """(file, expression, BGR image) for every row of `folder/labels.csv`, in its order."""
    rows = []
    with open(folder / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            img = cv2.imread(str(folder / row["file"]), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"cannot read {folder / row['file']}")
            rows.append((row["file"], row["expression"], img))
    if not rows:
        raise SystemExit(f"no rows in {folder / 'labels.csv'}")
    return rows


def paste(canvas: np.ndarray, img: np.ndarray, cell: tuple[int, int, int, int], height_frac: float,
          offset: tuple[int, int]) -> tuple[int, int, int, int]:
    """Paste `img` scaled to `height_frac` of the cell (x, y, w, h), centred + offset; returns where (x,y,w,h)."""
    cx, cy, cw, ch = cell
    h = int(ch * height_frac)
    w = min(cw, round(img.shape[1] * h / img.shape[0]))
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    x0 = cx + min(max(0, (cw - w) // 2 + offset[0]), cw - w)
    y0 = cy + min(max(0, (ch - h) // 2 + offset[1]), ch - h)
    canvas[y0:y0 + h, x0:x0 + w] = small
    return x0, y0, w, h


def drift(frame: int) -> tuple[int, int]:
    """A slow sway of a few pixels: the face moves like a person standing in front of the robot."""
    return round(6 * np.sin(frame / 4.0)), round(3 * np.cos(frame / 5.0))


def render(rows, layout: str, light: str, frames_each: int, seed: int):
    """Yield (frame BGR, truth [{photo, label, rect}]) for the whole clip."""
    W, H = SIZE
    n = len(rows)
    for k in range(n * frames_each):
        group = k // frames_each
        if layout == "one":
            name, label, img = rows[group]
            canvas = background(img, SIZE)
            rects = [(name, label, paste(canvas, img, (0, 0, W, H), 0.6, drift(k)))]
        else:
            cw, ch = W // 3, H // 2
            canvas = background(rows[0][2], SIZE)
            rects = []
            for c in range(6):
                name, label, img = rows[(group + c) % n]
                cell = ((c % 3) * cw, (c // 3) * ch, cw, ch)
                dx, dy = drift(k + 7 * c)
                rects.append((name, label, paste(canvas, img, cell, 0.9, (dx // 2, dy // 2))))
        if light == "dark":
            canvas = darken(canvas, np.random.default_rng([seed, k]))
        yield canvas, [{"photo": p, "label": lab, "rect": list(r)} for p, lab, r in rects]


def write_clip(path: Path, rows, layout: str, light: str, frames_each: int, seed: int, fps: float = 30.0) -> None:
    """The clip as mp4 (mp4v) and its truth as JSON, each written to a temp name and renamed."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path} (mp4v codec)")
    truth = []
    try:
        for frame, faces in render(rows, layout, light, frames_each, seed):
            writer.write(frame)
            truth.append(faces)
    finally:
        writer.release()
    os.replace(tmp, path)
    meta = {"layout": layout, "light": light, "frames_per_photo": frames_each, "seed": seed,
            "photos": [r[0] for r in rows], "frames": truth}
    truth_path = path.with_suffix(".truth.json")
    tmp_json = truth_path.with_name(f".{truth_path.name}.partial")
    tmp_json.write_text(json.dumps(meta))
    os.replace(tmp_json, truth_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("faces", type=Path, help="folder with labels.csv (file,expression,...) and the photos")
    ap.add_argument("--out", type=Path, default=Path("build/clips"))
    ap.add_argument("--frames", type=int, default=10, help="frames per photo (one) or per grid (six)")
    ap.add_argument("--seed", type=int, default=0, help="darkening seed")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--lights", default=",".join(LIGHTS))
    args = ap.parse_args(argv)
    rows = read_labels(args.faces)
    args.out.mkdir(parents=True, exist_ok=True)
    for layout in args.layouts.split(","):
        for light in args.lights.split(","):
            if layout not in LAYOUTS or light not in LIGHTS:
                raise SystemExit(f"unknown clip {layout}_{light}: layouts {LAYOUTS}, lights {LIGHTS}")
            path = args.out / f"{layout}_{light}.mp4"
            write_clip(path, rows, layout, light, args.frames, args.seed)
            print(f"{path}: {len(rows) * args.frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
