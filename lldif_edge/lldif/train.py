"""Two-stage LLDif training (docs/design.md, section 1), resumable, seeded, and DDP-ready under torchrun.

Phases: s1 (LA-CLIP + PNET + LLformer with labels), then for the prior model dm (condition encoder +
denoiser recover the frozen teacher EPD, L1 after the full unrolled chain) and joint (CE + L1 + KL to the
stage-1 model). The --no-prior ablation has nothing for a stage 2 to train: with --stage all it runs one s1
phase of both stages' epochs (the same budget); --stage 2 alone continues with plain CE (s2).
One learning-rate schedule spans the whole plan; for the prior model, --stage 2 --init STAGE1 is the rest of that
plan (the schedule and seeds after --epochs stage-1 epochs), so stage 2 can be re-run from one stage-1 checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lldif_edge.data import FolderData, drop_duplicates, load_folder
from lldif_edge.errors import LldifError
from lldif_edge.lldif.augment import augment_pair, to_model_input
from lldif_edge.lldif.checkpoint import (
    RESUME_FILE,
    load_checkpoint,
    load_resume_state,
    restore_run_files,
    save_checkpoint,
    save_resume_state,
)
from lldif_edge.lldif.config import preset_config
from lldif_edge.lldif.model import LLDif, build_model, count_macs, eval_mode, inference_parameters
from lldif_edge.lowlight import darken_many

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None
    preset: str = "base"
    stage: str = "all"  # "1", "2" or "all"
    epochs: int = 30  # stage-1 epochs
    stage2_epochs: int | None = None  # default: half of `epochs`
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    darken_p: float = 0.9
    # Epochs over which the darkened share ramps up from 0 to darken_p (0: none). Dark batches slow the start
    # (scripts/early_probe.py); a 2-epoch ramp gave the small ablation +0.8 points over two seeds (model card).
    darken_warmup: int = 0
    # 1.0: the stage-1 EPD never sees the true label (LA-CLIP's own guess stands in), so the LLformer cannot
    # read the answer off it; it carries what LA-CLIP makes of the face instead.
    label_dropout: float = 1.0
    # Which face the EPD is made from: "view", the training view the LLformer sees (mostly darkened), as in the
    # paper; or "clean", its normal-light twin, a privileged view the sampler cannot recover from a dark face
    # (fed the EPD a dark face allows, such an LLformer scored 41 % after stage 1 against the ablation's 50 %).
    epd_from: str = "view"
    clip_weight: float = 0.5
    l1_weight: float = 1.0
    kl_weight: float = 1.0
    # Share of stage-2 epochs that train only the condition encoder + denoiser, at least one; 0: none, the joint
    # phase trains the sampler and the LLformer together from the start (the LLformer is frozen in a dm epoch).
    dm_fraction: float = 0.1
    prior: bool = True
    equalize: bool = False
    seed: int = 0
    # The seed of the fresh weights (the prior and adapters of an --image-branch run, a whole new model); None:
    # `seed`. Runs that share it and differ in `seed` (data order, augmentation) start from the same point, so
    # their weights can be averaged (scripts/average_checkpoints.py).
    init_seed: int | None = None
    val_seed: int = 0
    bf16: bool | None = None  # None: only where the CPU has native bf16 (AVX-512 BF16 or AMX)
    resume: bool = False
    init: str | None = None  # a stage-1 checkpoint to start stage 2 from
    # A checkpoint whose image branch (stem, patch embedding, head) this run starts from; the adapters and the
    # prior start fresh (adapters at zero, so the run starts computing exactly what that checkpoint computes).
    image_branch: str | None = None
    # The optimiser moments in the resume file: bf16 keeps it small enough to commit; fp32 makes a resumed run
    # repeat the uninterrupted one exactly.
    resume_moments: str = "bf16"

    @property
    def fresh_weights_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    def check(self) -> None:
        """A bad setting is an error naming its `lldif-edge train` option, before anything is written."""
        if self.stage not in ("1", "2", "all"):
            raise LldifError(f"--stage must be 1, 2 or all, not '{self.stage}'")
        if self.darken_warmup < 0:
            raise LldifError(f"--darken-warmup must be >= 0 epochs, not {self.darken_warmup}")
        if not 0 <= self.label_dropout <= 1:
            raise LldifError(f"--label-dropout must be in [0, 1], not {self.label_dropout}")
        if self.kl_weight < 0:
            raise LldifError(f"--kl-weight must be >= 0, not {self.kl_weight}")
        if not 0 <= self.dm_fraction < 1:
            raise LldifError(f"--dm-fraction must be in [0, 1), not {self.dm_fraction}")
        if self.epd_from not in ("view", "clean"):
            raise LldifError(f"--epd-from must be view or clean, not '{self.epd_from}'")


class Reporter:
    """Progress callbacks; the CLI renders them with rich. Library code stays quiet."""

    def start_epoch(self, phase: str, epoch: int, total_epochs: int, steps: int) -> None: ...
    def step(self, loss: float, acc: float) -> None: ...
    def end_epoch(self, record: dict) -> None:
        log.info("%s", json.dumps(record))


def plan_phases(tc: TrainConfig) -> list[tuple[str, int]]:
    e2 = tc.stage2_epochs if tc.stage2_epochs is not None else max(1, tc.epochs // 2)
    if not tc.prior and tc.stage == "all":
        return [("s1", tc.epochs + e2)]
    phases = [("s1", tc.epochs)] if tc.stage in ("1", "all") else []
    if tc.stage in ("2", "all"):
        if tc.prior:
            dm = max(1, round(e2 * tc.dm_fraction)) if tc.dm_fraction > 0 else 0
            phases += [("dm", dm), ("joint", max(0, e2 - dm))]
        else:
            phases += [("s2", e2)]
    return [(p, n) for p, n in phases if n > 0]


def one_cycle_factor(step: int, total: int, warmup_share: float = 0.1, start: float = 1 / 25,
                     end: float = 1e-5) -> float:
    """The LR multiplier of one one-cycle over the whole plan (OneCycleLR's cosine shape): a warm-up from
    `start` to 1, then a cosine decay to `end`. Across phases, not one per phase: a fresh one-cycle for stage 2
    cost the plain CNN about two points (55.3 vs 57.3 %)."""
    warm = max(1, round(total * warmup_share))
    if step < warm:
        return start + (1 - start) * (1 - math.cos(math.pi * step / warm)) / 2
    t = min(1.0, (step - warm) / max(1, total - warm))
    return end + (1 - end) * (1 + math.cos(math.pi * t)) / 2


def darken_share(tc: TrainConfig, global_epoch: int) -> float:
    """The share of training images darkened in this epoch: a linear ramp from 0 over --darken-warmup epochs."""
    if tc.darken_warmup <= 0:
        return tc.darken_p
    return tc.darken_p * min(1.0, global_epoch / tc.darken_warmup)


class Objective(nn.Module):
    """All losses in one forward, so DistributedDataParallel sees one module."""

    def __init__(self, model: LLDif, teacher: nn.Module | None, tc: TrainConfig):
        super().__init__()
        self.model, self.teacher, self.tc = model, teacher, tc
        self.phase = "s1"

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`x` the (mostly darkened) training view, `clean` the same view in normal light: the teacher EPD
        comes from `x` or `clean` (`epd_from`), everything the deployed model computes from `x`."""
        m, tc = self.model, self.tc
        epd_source = clean if tc.epd_from == "clean" else x
        zero = x.new_zeros(())
        if self.phase in ("s1", "s2"):
            if not m.cfg.prior:
                logits = m.llformer(x)
                return F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing), logits, zero
            epd, clip_logits = m.teacher_epd(epd_source, y, tc.label_dropout)
            logits = m.llformer(x, epd)
            loss = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
            return loss + tc.clip_weight * F.cross_entropy(clip_logits, y), logits, zero
        with torch.no_grad():
            target, _ = m.teacher_epd(epd_source, y if tc.label_dropout < 1 else None)
        epd = m.sample_epd(x)
        l1 = (epd.float() - target.float()).abs().mean()
        if self.phase == "dm":
            with torch.no_grad():
                logits = m.llformer(x, epd)
            return l1, logits, l1
        logits = m.llformer(x, epd)
        with torch.no_grad():
            teacher_logits = self.teacher(x, target)
        kl = F.kl_div(logits.float().log_softmax(-1), teacher_logits.float().softmax(-1), reduction="batchmean")
        ce = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
        return ce + tc.l1_weight * l1 + tc.kl_weight * kl, logits, l1


def frozen_parts(model: LLDif, phase: str) -> list[nn.Module]:
    if not model.cfg.prior or phase == "s1":
        return []
    parts = [model.clip_image, model.pnet]
    return parts + [model.llformer] if phase == "dm" else parts


def set_phase(model: LLDif, phase: str) -> list[nn.Parameter]:
    """Freeze what this phase must not change (eval mode too, so BatchNorm statistics stay put)."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = frozen_parts(model, phase)
    if frozen:
        model.label_embed.requires_grad_(False)
        model.logit_scale.requires_grad_(False)
    for part in frozen:
        part.eval()
        for p in part.parameters():
            p.requires_grad_(False)
    if model.cfg.prior and phase == "s1":  # the sampler is not trained in stage 1
        for p in [*model.cond_encoder.parameters(), *model.denoiser.parameters()]:
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def predict_logits(model: LLDif, images_u8: np.ndarray, batch: int = 512, image_only_stage1: bool = False,
                   tta: bool = False, epd_images_u8: np.ndarray | None = None,
                   steps: int | None = None) -> np.ndarray:
    """Logits for uint8 (N,H,W,C) images, the EPD sampled in `steps` steps (None: the checkpoint's K).
    `image_only_stage1`: EPD from LA-CLIP's own label guess, made from `epd_images_u8` (the same faces in normal
    light, for a model trained with --epd-from clean) or the images."""
    out = []
    with eval_mode(model):  # then back to the caller's modes: a training run goes on training
        for i in range(0, len(images_u8), batch):
            x = to_model_input(torch.from_numpy(images_u8[i:i + batch]), model.cfg.in_chans)
            epd_x = x if epd_images_u8 is None else to_model_input(torch.from_numpy(epd_images_u8[i:i + batch]),
                                                                   model.cfg.in_chans)
            views = [(x, epd_x), (x.flip(-1), epd_x.flip(-1))] if tta else [(x, epd_x)]
            logits = 0
            for v, e in views:
                if image_only_stage1 and model.cfg.prior:
                    logits = logits + model.llformer(v, model.teacher_epd(e, None)[0])
                else:
                    logits = logits + model(v, steps)
            out.append((logits / len(views)).float().numpy())
    return np.concatenate(out)


def run_files_to_keep(out: Path, phase: str, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The checkpoints of the run folder that the rest of the run reads or returns, with the dtype the resume file
    keeps them in: the best so far (the run's product, FP32), and after a stage-1 epoch the best stage-1 weights
    (stage 2 starts from them), after a later one the stage-1 model (the joint phase's teacher)."""
    wanted = {"best": torch.float32, "stage1_best" if phase == "s1" else "stage1": dtype}
    return {name: dt for name, dt in wanted.items() if (out / f"{name}.safetensors").exists()}


def start_from_image_branch(tc: TrainConfig) -> LLDif:
    """A new model of the checkpoint's architecture, with this run's prior setting, whose image branch is the
    checkpoint's. Everything else (LA-CLIP, PNET, sampler, the zero-initialised adapters) starts fresh."""
    source, _ = load_checkpoint(tc.image_branch)
    cfg = dataclasses.replace(source.cfg, prior=tc.prior)
    torch.manual_seed(tc.fresh_weights_seed)
    model = build_model(cfg)
    missing, unexpected = model.llformer.load_state_dict(source.llformer.state_dict(), strict=False)
    fresh = [k for k in missing if not k.startswith("adapters.")]
    if unexpected or fresh:
        raise LldifError(f"--image-branch {tc.image_branch}: its image branch does not fit this model "
                         f"(unexpected {unexpected[:3]}, missing {fresh[:3]})")
    return model


def warm_start_condition_encoder(model: LLDif) -> None:
    """The condition encoder starts as LA-CLIP's image encoder (the same architecture): the EPD is made from
    that embedding, so the sampler starts from a condition that already carries it instead of from scratch."""
    src, dst = model.clip_image.state_dict(), model.cond_encoder.state_dict()
    if all(k in src and src[k].shape == v.shape for k, v in dst.items()):
        model.cond_encoder.load_state_dict(src)


def cpu_has_native_bf16() -> bool:
    """Emulated bf16 (AVX2 only) was measured 10x slower than FP32 on one machine; native bf16 (AMX) 2x faster."""
    from lldif_edge.hardware import has_cpu_feature

    return has_cpu_feature("avx512_bf16", "amx_bf16")


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _val_sets(tc: TrainConfig, classes: list[str], size: int, channels: int, train: FolderData) -> dict:
    if not tc.val:
        return {}
    val, dups = drop_duplicates(load_folder(tc.val, classes, size, channels), train)
    if not len(val):
        raise LldifError(f"validation folder {tc.val} has no images left after dropping training duplicates")
    return {"labels": val.labels, "normal": val.images, "lowlight": darken_many(val.images, tc.val_seed),
            "duplicates_dropped": dups}


def train(tc: TrainConfig, reporter: Reporter | None = None, threads: int | None = None) -> Path:
    """Run the plan; returns the path of the best checkpoint. `threads`: torch CPU threads of this process."""
    tc.check()
    if threads:
        torch.set_num_threads(threads)
    reporter = reporter or Reporter()
    rank, world = _dist_info()
    out = Path(tc.out)
    resume_path = out / RESUME_FILE
    if tc.resume and not resume_path.exists() and (out / "last.pt").exists():
        resume_path = out / "last.pt"  # the resume file of older versions
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if tc.stage == "2" and not tc.init and not (tc.resume and resume_path.exists()):
        stage1 = out / "stage1.safetensors"
        if not stage1.exists():
            raise LldifError(f"--stage 2 needs a stage-1 checkpoint: --init CKPT or {stage1}")
        tc.init = str(stage1)
    if tc.init and tc.image_branch:
        raise LldifError("--init (a stage-1 checkpoint) and --image-branch exclude each other")
    if tc.init:
        model, _ = load_checkpoint(tc.init)
        cfg = model.cfg
    elif tc.image_branch:
        model = start_from_image_branch(tc)
        cfg = model.cfg
    else:
        cfg = preset_config(tc.preset, prior=tc.prior, equalize=tc.equalize)
        torch.manual_seed(tc.fresh_weights_seed)
        model = build_model(cfg)
    if cfg.prior and cfg.depth == 0 and not cfg.stage_adapters:
        raise LldifError(f"preset '{tc.preset}' has no transformer blocks or adapters for the EPD to condition: "
                         "add --no-prior")
    if cfg.prior != tc.prior:
        raise LldifError(f"--init {tc.init} has prior={cfg.prior}, but this run asks prior={tc.prior}")
    if tc.resume_moments not in ("bf16", "fp32"):
        raise LldifError(f"resume_moments must be bf16 or fp32, not '{tc.resume_moments}'")
    if tc.equalize and not cfg.equalize:  # a checkpoint that equalises needs no flag to go on doing so
        raise LldifError(f"--init {tc.init} was trained without --equalize; it cannot start equalising now")
    channels = 1 if cfg.grayscale else 3
    train_set = load_folder(tc.data, cfg.classes, cfg.input_size, channels)
    val = _val_sets(tc, cfg.classes, cfg.input_size, channels, train_set)
    train_x = torch.from_numpy(train_set.images)
    train_y = torch.from_numpy(train_set.labels)
    model = model.to(memory_format=torch.channels_last)
    use_bf16 = cpu_has_native_bf16() if tc.bf16 is None else tc.bf16

    phases = plan_phases(tc)
    state = {"phase_index": 0, "epoch_in_phase": 0, "best_acc": -1.0, "best_s1": -1.0, "history": []}
    if tc.stage == "2" and tc.prior:
        # Stage 2 alone is the rest of the full plan, as if its --epochs stage-1 epochs (the --init weights) had just
        # run: the same one LR schedule and per-epoch seeds, so it repeats `--stage all` from there.
        phases = [("s1", tc.epochs), *phases]
        state["phase_index"] = 1
    resumed = None
    if tc.resume and resume_path.exists():
        resumed = load_resume_state(resume_path)
        model.load_state_dict(resumed["model"])
        state.update({k: resumed[k] for k in state})
        if rank == 0:
            restore_run_files(out, resumed)
        stage1, best_s1 = out / "stage1.safetensors", out / "stage1_best.safetensors"
        if (cfg.prior and not stage1.exists() and best_s1.exists() and state["epoch_in_phase"] == 0
                and 0 < state["phase_index"] < len(phases) and phases[state["phase_index"] - 1][0] == "s1"):
            # stopped between the stages: do what the end of stage 1 does (the phase loop below starts after it)
            model.load_state_dict(load_checkpoint(best_s1)[0].state_dict())
            if rank == 0:
                save_checkpoint(model, out / "stage1", {"stage": 1})
    teacher = None
    meta_common = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "train_config": asdict(tc),
        "parameters_inference": inference_parameters(model),
        "macs_per_face": count_macs(model),
        "train_images": len(train_set),
        "val_duplicates_dropped": val.get("duplicates_dropped"),
    }

    for pi in range(state["phase_index"], len(phases)):
        phase, n_epochs = phases[pi]
        if phase in ("dm", "joint") and teacher is None:
            stage1 = out / "stage1.safetensors"
            teacher = copy.deepcopy(load_checkpoint(stage1)[0].llformer if stage1.exists() else model.llformer)
            teacher.eval().requires_grad_(False)
        params = set_phase(model, phase)
        objective = Objective(model, teacher, tc)
        objective.phase = phase
        runner = objective
        if world > 1:
            runner = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
        opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        steps_per_epoch = max(1, len(train_x) // tc.batch_size)  # a set smaller than a batch still trains
        offset = steps_per_epoch * sum(n for _, n in phases[:pi])
        total = steps_per_epoch * sum(n for _, n in phases)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, o=offset, t=total: one_cycle_factor(o + s, t))
        start_epoch = state["epoch_in_phase"] if pi == state["phase_index"] else 0
        if phase in ("dm", "joint") and phases[pi - 1][0] == "s1" and start_epoch == 0:  # stage 2 begins
            state["best_acc"] = -1.0  # a stage-1 score (image-only EPD) must not outrank the sampler's
            warm_start_condition_encoder(model)
        if resumed is not None and pi == resumed["phase_index"] and start_epoch > 0:
            opt.load_state_dict(resumed["optimizer"])
            sched.load_state_dict(resumed["scheduler"])
        for epoch in range(start_epoch, n_epochs):
            global_epoch = sum(n for _, n in phases[:pi]) + epoch
            gen = torch.Generator().manual_seed(tc.seed * 100003 + global_epoch * 7919 + rank)
            torch.manual_seed(tc.seed * 100003 + global_epoch * 7919 + rank)
            perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(tc.seed + global_epoch))
            per_rank = tc.batch_size // world
            mine = perm[rank::world][: steps_per_epoch * per_rank]
            if rank == 0:
                reporter.start_epoch(phase, epoch + 1, n_epochs, steps_per_epoch)
            t0, seen, correct, loss_sum, l1_sum = time.time(), 0, 0, 0.0, 0.0
            lr = sched.get_last_lr()[0]  # at the epoch's start
            darken_p = darken_share(tc, global_epoch)
            for s in range(steps_per_epoch):
                idx = mine[s * per_rank:(s + 1) * per_rank]
                x, clean = augment_pair(train_x[idx], cfg.in_chans, gen, darken_p)
                x = x.contiguous(memory_format=torch.channels_last)
                clean = clean.contiguous(memory_format=torch.channels_last)
                y = train_y[idx]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                    loss, logits, l1 = runner(x, y, clean)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                sched.step()
                seen += len(y)
                correct += (logits.argmax(-1) == y).sum().item()
                loss_sum += loss.item() * len(y)
                l1_sum += l1.item() * len(y)
                if rank == 0:
                    reporter.step(loss_sum / seen, correct / seen)
            record = {"phase": phase, "epoch": epoch + 1, "global_epoch": global_epoch + 1,
                      "train_loss": loss_sum / seen, "train_acc": correct / seen, "epd_l1": l1_sum / seen,
                      "seconds": round(time.time() - t0, 1), "lr": lr, "darken_p": darken_p}
            if rank == 0:
                if val:
                    # Stage 1 scores the model as it trains: with --epd-from clean the EPD comes from the normal-light
                    # face (LA-CLIP never sees a dark one), so an EPD from the dark face would score a model nobody
                    # trained and pick stage 2's starting weights by it.
                    epd_images = val["normal"] if phase == "s1" and tc.epd_from == "clean" else None
                    logits = predict_logits(model, val["lowlight"], image_only_stage1=(phase == "s1"),
                                            epd_images_u8=epd_images)
                    record["val_lowlight_acc"] = float((logits.argmax(-1) == val["labels"]).mean())
                acc = record.get("val_lowlight_acc", record["train_acc"])
                state["history"].append(record)
                deployable = phase != "s1" or not cfg.prior or tc.stage == "1"
                if phase == "s1" and acc > state["best_s1"]:
                    state["best_s1"] = acc
                    save_checkpoint(model, out / "stage1_best", {**meta_common, "stage": 1, "metrics": record})
                if deployable and acc > state["best_acc"]:
                    state["best_acc"] = acc
                    save_checkpoint(model, out / "best", {**meta_common, "metrics": record})
                reporter.end_epoch(record)
                done_phase = epoch + 1 == n_epochs
                progress = {"phase_index": pi + 1 if done_phase else pi,
                            "epoch_in_phase": 0 if done_phase else epoch + 1, "best_acc": state["best_acc"],
                            "best_s1": state["best_s1"], "history": state["history"]}
                moments = torch.bfloat16 if tc.resume_moments == "bf16" else torch.float32
                save_resume_state(out / RESUME_FILE, progress, model, opt, sched, moments,
                                  run_files_to_keep(out, phase, moments))
            if world > 1:
                dist.barrier()
        state["epoch_in_phase"] = 0
        if phase == "s1":
            # Stage 2 starts from the best stage-1 weights, which also become the frozen KL teacher.
            best_s1 = out / "stage1_best.safetensors"
            if best_s1.exists():
                model.load_state_dict(load_checkpoint(best_s1)[0].state_dict())
            if rank == 0:
                save_checkpoint(model, out / "stage1", {**meta_common, "stage": 1})
            if world > 1:
                dist.barrier()
            teacher = None

    best = out / "best.safetensors"
    if rank == 0 and val and best.exists():
        finalize_metrics(best, val)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return best


def finalize_metrics(best: Path, val: dict) -> None:
    """Add normal-light and test-time-flip accuracy of the best checkpoint to its JSON."""
    model, meta = load_checkpoint(best)
    labels = val["labels"]
    m = meta.setdefault("metrics", {})
    for name in ("lowlight", "normal"):
        m[f"val_{name}_acc"] = float((predict_logits(model, val[name]).argmax(-1) == labels).mean())
        m[f"val_{name}_acc_flip_tta"] = float(
            (predict_logits(model, val[name], tta=True).argmax(-1) == labels).mean())
    m["val_images"] = int(len(labels))
    meta.pop("config", None)
    save_checkpoint(model, best, meta)
