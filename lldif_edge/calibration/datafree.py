"""Data-free calibration inputs (ZeroQ-style), and the naive control they must beat.

`synthesize_faces` optimises random images until the BatchNorm statistics they produce (batch mean and
standard deviation of each BN input) match the running statistics stored in the model, over the BN layers of
the LLformer conv stem and of the condition encoder; an optional class term (cross-entropy of the full model
to a target class, cycling through the classes) makes every class appear. `noise_faces` is the control:
uniform noise over the valid pixel range. Needs torch; the model stays frozen.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lldif_edge.lldif.diffusion import ddim_sample
from lldif_edge.lldif.model import LLDif

log = logging.getLogger(__name__)


def bn_layers(model: LLDif) -> list[nn.BatchNorm2d]:
    parts = [model.llformer.stem] + ([model.cond_encoder] if model.cfg.prior else [])
    return [m for part in parts for m in part.modules() if isinstance(m, nn.BatchNorm2d)]


def _bn_loss(records: list[tuple[nn.BatchNorm2d, torch.Tensor]]) -> torch.Tensor:
    """ZeroQ's statistic loss: mean over layers of ||mu - running_mean|| + ||sigma - running_std||."""
    total = 0.0
    for bn, x in records:
        mean = x.mean(dim=(0, 2, 3))
        std = (x.var(dim=(0, 2, 3), unbiased=False) + bn.eps).sqrt()
        total = total + torch.linalg.vector_norm(mean - bn.running_mean) \
            + torch.linalg.vector_norm(std - (bn.running_var + bn.eps).sqrt())
    return total / max(1, len(records))


class _BNRecorder:
    def __init__(self, layers: list[nn.BatchNorm2d]):
        self.records: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []
        self.hooks = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module, inputs, output):
        self.records.append((module, inputs[0]))

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def _forward(model: LLDif, x: torch.Tensor, with_logits: bool, k: int | None = None) -> torch.Tensor | None:
    """Run the BN layers we match (hooks record them) and, for the class term, the logits. The EPD the
    LLformer is given is computed without gradient: backpropagating through the K unrolled sampler steps
    would triple the cost of a step for little change in the images."""
    feats = model.cond_encoder.features(x) if model.cfg.prior else None
    if not with_logits:
        model.llformer.stem(x)
        return None
    if feats is None:
        return model.llformer(x)
    with torch.no_grad():
        cond = model.cond_encoder.proj(feats.mean(dim=(2, 3)))
        epd = ddim_sample(model.denoiser, cond, model.start_noise, model.sampler_timesteps(k), model.alphas_cumprod)
    return model.llformer(x, epd)


def bn_statistic_loss(model: LLDif, faces: np.ndarray) -> float:
    """The ZeroQ loss of a stack of uint8 faces (N,H,W,C): how far their BN statistics are from the stored ones."""
    rec = _BNRecorder(bn_layers(model))
    try:
        with torch.no_grad():
            x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
            _forward(model, x.expand(-1, model.cfg.in_chans, -1, -1), False)
            return float(_bn_loss(rec.records))
    finally:
        rec.close()


def synthesize_faces(model: LLDif, count: int = 64, steps: int = 50, lr: float = 0.1,
                     class_weight: float = 0.1, seed: int = 0, k: int | None = None) -> tuple[np.ndarray, dict]:
    """`count` uint8 faces (N,S,S,C) whose BN statistics match the model's; and what the optimisation did
    (`steps` of it). `k`: the sampler step count of the class term (default: the checkpoint's)."""
    cfg = model.cfg
    layers = bn_layers(model)
    if not layers:
        raise ValueError("the model has no BatchNorm layers to match")
    model.eval()
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    channels = 1 if cfg.grayscale else cfg.in_chans
    z = torch.randn(count, channels, cfg.input_size, cfg.input_size, generator=gen).requires_grad_(True)
    targets = torch.arange(count) % len(cfg.classes)
    opt = torch.optim.Adam([z], lr=lr)
    rec = _BNRecorder(layers)
    t0 = time.perf_counter()
    history = []
    try:
        with torch.enable_grad():
            for step in range(steps):
                rec.records.clear()
                x = torch.sigmoid(z).expand(-1, cfg.in_chans, -1, -1)
                logits = _forward(model, x, class_weight > 0, k)
                bn = _bn_loss(rec.records)
                loss = bn + (class_weight * F.cross_entropy(logits, targets) if logits is not None else 0.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step == 0 or step == steps - 1:
                    history.append(float(bn.detach()))
    finally:
        rec.close()
        for p, g in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(g)
    with torch.no_grad():
        x = torch.sigmoid(z)
        faces = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        info = {"method": "zeroq-bn-statistics", "count": count, "steps": steps, "lr": lr,
                "class_weight": class_weight, "bn_layers": len(layers), "bn_loss_start": history[0],
                "bn_loss_end": bn_statistic_loss(model, faces), "seconds": round(time.perf_counter() - t0, 2)}
        if class_weight > 0:
            xx = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255).expand(-1, cfg.in_chans, -1, -1)
            info["class_hit_rate"] = float((model(xx, k).argmax(-1) == targets).float().mean())
    log.info("data-free: %d faces in %.1f s, BN statistic loss %.3f -> %.3f", count, info["seconds"],
             info["bn_loss_start"], info["bn_loss_end"])
    return np.ascontiguousarray(faces), info


def noise_faces(count: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """The naive control: uniform noise over the whole valid pixel range [0, 1] (0..255 as uint8)."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, channels), dtype=np.uint8)
