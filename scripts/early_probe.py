"""How fast a recipe leaves the majority class: N training steps of the --no-prior LLformer on FER2013 train at a
constant learning rate (no warm-up), printing the training accuracy of every 50 steps. A diagnostic for the model
card, not a training command.

    python scripts/early_probe.py VARIANT [--steps 200] [--preset small] [--data ../shared/data/fer2013/train]

VARIANT is words joined by '_', each changing one thing from the recipe's batch (AdamW 5e-4, weight decay 0.05,
label smoothing 0.1, flip + shift/scale/rotation, nothing darkened): `dark` darkens 80 % of images as in
training, `noaug` keeps the flip only, `lr1e-3` doubles the learning rate, `sgd` uses SGD (lr 0.05, Nesterov
momentum 0.9, weight decay 5e-4); other words only name the run. Example: `python scripts/early_probe.py
recipe_dark`.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lldif_edge.data import FER_CLASSES, load_folder
from lldif_edge.lldif.augment import augment_pair, to_model_input
from lldif_edge.lldif.config import preset_config
from lldif_edge.lldif.model import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data", default="../shared/data/fer2013/train")
    args = ap.parse_args()
    words = set(args.variant.split("_"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = load_folder(args.data, list(FER_CLASSES), 48, 1)
    images, labels = torch.from_numpy(ds.images), torch.from_numpy(ds.labels)
    model = build_model(preset_config(args.preset, prior=False)).llformer.to(memory_format=torch.channels_last)
    if "sgd" in words:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3 if "lr1e-3" in words else 5e-4, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    hits, t0 = [], time.time()
    for step in range(args.steps):
        idx = order[(step * 128) % len(images):][:128]
        if "noaug" in words:
            x = to_model_input(images[idx], 3)
            x = torch.where((torch.rand(len(idx), generator=gen) < 0.5)[:, None, None, None], x.flip(-1), x)
        else:
            x, _ = augment_pair(images[idx], 3, gen, 0.8 if "dark" in words else 0.0)
        logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, labels[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        hits.append((logits.argmax(-1) == labels[idx]).float().mean().item())
        if (step + 1) % 50 == 0:
            print(f"{args.variant} step {step + 1}: train acc (last 50 steps) {sum(hits[-50:]) / 50:.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
