"""Compare checkpoints on the same faces, with a paired bootstrap confidence interval for each difference.

Every model is scored on the de-duplicated val faces in normal light and under the model card's four low-light
draws: `darken_many` with seeds 0, 1, 2 (what `lldif-edge eval --darken --seed N` does) and the per-file
darkening of `lldif-edge darken` (seed 0, each file's noise seeded from its path). The difference between two
models is paired: both see the same faces under the same darkening, and the interval resamples faces (2,000
bootstrap draws; a face carries all four of its low-light draws with it), so it says how much of a gap the choice
of val faces alone could make. It does not cover training-seed noise: a second seed does that.

    python scripts/compare_models.py --model lldif=runs/v3/lldif --model ablation=runs/v3/ablation \
        --model cnn=runs/v3/cnn [--data ../shared/data/fer2013] [--threads 2] [--json build/compare.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

from lldif_edge.data import drop_duplicates, load_folder, to_model_pixels
from lldif_edge.lldif.checkpoint import load_checkpoint
from lldif_edge.lldif.train import predict_logits
from lldif_edge.lowlight import darken, darken_many

DRAWS = ("draw 0", "draw 1", "draw 2", "per-file")


def per_file_darkened(paths: list[str], root: Path, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """The faces as `lldif-edge darken ROOT DST --seed SEED` writes them, read back as the model sees them."""
    out = []
    for p in paths:
        img = cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED)
        rel = Path(p).relative_to(root)
        rng = np.random.default_rng([seed, zlib.crc32(rel.as_posix().encode())])
        dark = darken(img if img.dtype == np.uint8 else (img / 256).astype(np.uint8), rng)
        out.append(to_model_pixels(dark, size, channels))
    return np.stack(out)


def paired_interval(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """95 % bootstrap interval of mean(a - b) over faces; a and b are (draws, faces) arrays of 0/1."""
    per_face = (a.astype(np.float64) - b).mean(axis=0)
    idx = rng.integers(0, len(per_face), size=(n, len(per_face)))
    means = per_face[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (a run folder or file)")
    ap.add_argument("--data", default="../shared/data/fer2013", help="Folder with train/ and val/")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, help="Write the numbers here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = dict(m.split("=", 1) for m in args.model)

    first, _ = load_checkpoint(next(iter(models.values())))
    cfg = first.cfg
    channels = 1 if cfg.grayscale else 3
    root = Path(args.data) / "val"
    val, dropped = drop_duplicates(load_folder(root, cfg.classes, cfg.input_size, channels),
                                   load_folder(Path(args.data) / "train", cfg.classes, cfg.input_size, channels))
    sets = {"normal": val.images, **{f"draw {s}": darken_many(val.images, s) for s in range(3)},
            "per-file": per_file_darkened(val.paths, root, cfg.input_size, channels)}

    correct: dict[str, dict[str, np.ndarray]] = {}
    for name, ckpt in models.items():
        model, _ = load_checkpoint(ckpt)
        correct[name] = {k: predict_logits(model, x).argmax(-1) == val.labels for k, x in sets.items()}

    rng = np.random.default_rng(0)
    report = {"faces": len(val.labels), "duplicates_dropped": dropped, "models": models, "accuracy": {},
              "differences": {}}
    for name, c in correct.items():
        acc = {k: round(100 * float(v.mean()), 2) for k, v in c.items()}
        acc["low-light mean"] = round(100 * float(np.mean([c[d].mean() for d in DRAWS])), 2)
        report["accuracy"][name] = acc
    for a, b in itertools.combinations(correct, 2):
        dark_a = np.stack([correct[a][d] for d in DRAWS])
        dark_b = np.stack([correct[b][d] for d in DRAWS])
        lo, hi = paired_interval(dark_a, dark_b, rng)
        nlo, nhi = paired_interval(correct[a]["normal"][None], correct[b]["normal"][None], rng)
        report["differences"][f"{a} - {b}"] = {
            "low-light mean": round(100 * float(dark_a.mean() - dark_b.mean()), 2),
            "low-light 95% CI": [round(100 * lo, 2), round(100 * hi, 2)],
            "normal": round(100 * float(correct[a]["normal"].mean() - correct[b]["normal"].mean()), 2),
            "normal 95% CI": [round(100 * nlo, 2), round(100 * nhi, 2)],
        }

    cols = [*DRAWS, "low-light mean", "normal"]
    print("| model | " + " | ".join(cols) + " |")
    print("| --- " * (len(cols) + 1) + "|")
    for name, acc in report["accuracy"].items():
        print(f"| {name} | " + " | ".join(f"{acc[c]:.2f}" for c in cols) + " |")
    print()
    for pair, d in report["differences"].items():
        print(f"{pair}: low light {d['low-light mean']:+.2f} points (95 % CI {d['low-light 95% CI'][0]:+.2f} .. "
              f"{d['low-light 95% CI'][1]:+.2f}), normal light {d['normal']:+.2f} "
              f"({d['normal 95% CI'][0]:+.2f} .. {d['normal 95% CI'][1]:+.2f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
