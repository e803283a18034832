"""How much the LLformer's accuracy depends on the EPD it is given: a diagnostic for the model card's question
"what does the prior buy", not a training command. On de-duplicated val, dark (`darken_many`, seed 0) and in
normal light, it scores one LLDif checkpoint's LLformer with:

- `sampled`: the sampler's EPD from the same face (what inference does; equals `lldif-edge eval`),
- `sampled_from_normal`: the sampler's EPD from the face's normal-light twin (dark rows only: would a sampler
  that saw through the dark help?),
- `stage1`: LA-CLIP + PNET's EPD from the same face, without the label (what the LLformer trained on in stage 1),
- `shuffled`: the sampled EPD of another face of the set (a fixed permutation): the EPD keeps its
  distribution but carries nothing about this face,
- `mean`: the set's mean sampled EPD for every face.

If `shuffled` and `mean` score like `sampled`, the LLformer does not use what the EPD says about the face.

    python scripts/epd_probe.py --model runs/s11/lldif [--data ../shared/data/fer2013] [--threads 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from lldif_edge.data import drop_duplicates, load_folder
from lldif_edge.errors import LldifError
from lldif_edge.lldif.augment import to_model_input
from lldif_edge.lldif.checkpoint import load_checkpoint
from lldif_edge.lldif.model import eval_mode
from lldif_edge.lowlight import darken_many
from lldif_edge.metrics import classification_report
from lldif_edge.paths import check_output


@torch.no_grad()
def in_batches(model, images_u8: np.ndarray, fn, batch: int = 512) -> torch.Tensor:
    """fn(model input, slice) over uint8 (N,H,W,C) images, batch by batch, concatenated."""
    out = []
    for i in range(0, len(images_u8), batch):
        x = to_model_input(torch.from_numpy(images_u8[i:i + batch]), model.cfg.in_chans)
        out.append(fn(x, slice(i, i + batch)))
    return torch.cat(out)


def epds(model, images_u8: np.ndarray, stage1: bool) -> torch.Tensor:
    return in_batches(model, images_u8, lambda x, _: model.teacher_epd(x, None)[0] if stage1 else model.sample_epd(x))


def llformer_logits(model, images_u8: np.ndarray, epd: torch.Tensor) -> np.ndarray:
    return in_batches(model, images_u8, lambda x, rows: model.llformer(x, epd[rows])).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="LLDif checkpoint or run folder (with the prior)")
    ap.add_argument("--data", default="../shared/data/fer2013", help="FER2013 root with train/ and val/")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="Also write the results here")
    args = ap.parse_args()
    if args.json:
        try:
            check_output(args.json, "--json")  # before the work, not after it
        except LldifError as e:
            raise SystemExit(f"error: {e}") from None
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model)
    if not model.cfg.prior:
        raise SystemExit(f"{args.model}: a --no-prior model has no EPD to probe")
    cfg = model.cfg
    channels = 1 if cfg.grayscale else 3
    data = Path(args.data)
    val, _ = drop_duplicates(load_folder(data / "val", cfg.classes, cfg.input_size, channels),
                             load_folder(data / "train", cfg.classes, cfg.input_size, channels))
    normal, dark = val.images, darken_many(val.images, 0)
    perm = np.random.default_rng(0).permutation(len(normal))
    results: dict[str, dict[str, float]] = {}
    with eval_mode(model):
        sampled_normal = epds(model, normal, stage1=False)
        for light, images in (("dark", dark), ("normal", normal)):
            sampled = sampled_normal if light == "normal" else epds(model, images, stage1=False)
            variants = {"sampled": sampled, "stage1": epds(model, images, stage1=True),
                        "shuffled": sampled[perm], "mean": sampled.mean(0, keepdim=True).expand_as(sampled)}
            if light == "dark":
                variants["sampled_from_normal"] = sampled_normal
            results[light] = {}
            for name, epd in variants.items():
                preds = llformer_logits(model, images, epd).argmax(-1)
                results[light][name] = round(100 * classification_report(val.labels, preds, cfg.classes)["accuracy"], 2)
            print(light, results[light], flush=True)
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")  # a failed write leaves an earlier result whole
        tmp.write_text(json.dumps({"model": str(args.model), "faces": len(normal), "accuracy": results}))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
