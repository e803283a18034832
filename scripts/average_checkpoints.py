"""Average the weights of runs that started from the same weights: one model of the same size and cost.

Runs that differ only in `lldif-edge train --seed` (data order, augmentation) and share their starting weights
(step 1's CNN as --image-branch and, for LLDif, its fresh prior and adapters through --init-seed) stay close
enough that the mean of their weights is a good model in its own right (a "model soup", Wortsman et al. 2022).
The script refuses runs that did not start alike: their mean is not a model. BatchNorm statistics are averaged
too (recomputing them on training faces scored no better: MODEL_CARD.md).

    python scripts/average_checkpoints.py runs/v3/ablation runs/v3s1/ablation --out runs/v3/ablation_avg \
        [--val ../shared/data/fer2013/val --exclude ../shared/data/fer2013/train]

With --val the output's JSON gets the metrics a training run's best checkpoint has (de-duplicated val faces,
darkened with seed 0, and in normal light).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lldif_edge.data import drop_duplicates, load_folder
from lldif_edge.errors import LldifError
from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from lldif_edge.lldif.model import count_macs, inference_parameters
from lldif_edge.lldif.train import finalize_metrics
from lldif_edge.lowlight import darken_many


def start_of(meta: dict, path: Path) -> tuple:
    """What a run's starting weights depend on: the checkpoint it started from and the seed of its fresh weights."""
    tc = meta.get("train_config")
    if not tc:
        raise LldifError(f"{path}: not a training run's checkpoint (no train_config in its JSON)")
    fresh_seed = tc.get("init_seed")
    fresh_seed = tc["seed"] if fresh_seed is None else fresh_seed
    return tc.get("image_branch") or tc.get("init"), fresh_seed if tc.get("prior", True) else None


def average(paths: list[Path]) -> tuple[torch.nn.Module, list[dict]]:
    """The mean of the checkpoints' weights, and what each checkpoint was (for the output's JSON)."""
    models, sources, first = [], [], None
    for path in paths:
        path = resolve_checkpoint(path)
        model, meta = load_checkpoint(path)
        identity = (model.cfg.to_dict(), start_of(meta, path))
        if first is None:
            first = (path, *identity)
        elif identity[0] != first[1]:
            raise LldifError(f"{path}: another architecture than {first[0]}")
        elif identity[1] != first[2]:
            raise LldifError(f"{path} did not start from the weights {first[0]} started from ({identity[1]} against "
                             f"{first[2]}: image branch, seed of the fresh weights): their mean is not a model")
        models.append(model)
        sources.append({"checkpoint": str(path), "command": meta.get("command"),
                        "train_config": meta.get("train_config")})
    states = [m.state_dict() for m in models]
    mean = {k: (sum(st[k].double() for st in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    models[0].load_state_dict(mean)
    return models[0], sources


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="Run folders or checkpoint files (at least two)")
    ap.add_argument("--out", type=Path, required=True, help="Output checkpoint (.safetensors + .json)")
    ap.add_argument("--val", type=Path, help="Labelled folder to score the average on")
    ap.add_argument("--exclude", type=Path, help="Training folder: its copies are dropped from --val")
    args = ap.parse_args()
    try:
        if len(args.checkpoints) < 2:
            raise LldifError("average_checkpoints.py needs at least two checkpoints")
        model, sources = average(args.checkpoints)
        meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "averaged_from": sources,
                "parameters_inference": inference_parameters(model), "macs_per_face": count_macs(model)}
        out = save_checkpoint(model, args.out, meta)
        if args.val:
            cfg, channels = model.cfg, 1 if model.cfg.grayscale else 3
            val = load_folder(args.val, cfg.classes, cfg.input_size, channels)
            if args.exclude:
                val, _ = drop_duplicates(val, load_folder(args.exclude, cfg.classes, cfg.input_size, channels))
            finalize_metrics(out, {"labels": val.labels, "normal": val.images, "lowlight": darken_many(val.images, 0)})
    except LldifError as e:
        print(f"average_checkpoints.py: {e}", file=sys.stderr)
        return 2
    print(f"averaged {len(sources)} checkpoints: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
