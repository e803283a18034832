"""Step distillation of the LLDif sampler (docs/design.md, section 1): direct distillation.

The student is a copy of the teacher whose sampler runs K steps instead of S. Its K-step chain starts
from the same fixed start noise and is trained to land where the teacher's S-step chain lands (L1 on the
EPD) and to give the same class distribution through the shared, frozen LLformer (KL). Only the condition
encoder and the denoiser learn: the LLformer must stay the one the teacher's EPD was made for, and K ends
up in the exported graph, so the runtime never runs a sampler loop of unknown length.

With cond_channels (or cond_convs) the student's condition encoder is a new, smaller one, trained from scratch
against the teacher's EPD: it runs on every face, so its size is inference cost that the LA-CLIP encoder it was
warm-started from does not need.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lldif_edge.data import drop_duplicates, load_folder
from lldif_edge.errors import LldifError
from lldif_edge.lldif.augment import augment, to_model_input
from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from lldif_edge.lldif.model import LLDif, condition_encoder, count_macs, inference_parameters
from lldif_edge.lldif.train import Reporter
from lldif_edge.lowlight import darken_many

CHECK_FROM_TRAIN = 1000  # training images in the check set when there is no validation folder
LR_BACKOFF = 0.1  # learning-rate factor after an epoch that did not improve the check set


def _trainable(model: LLDif) -> list[torch.nn.Parameter]:
    """Only the sampler (condition encoder + denoiser) learns. The whole model stays in eval mode, the
    condition encoder's BatchNorm included: the student sees the teacher's input distribution, so the
    teacher's running statistics are already right, and batch statistics would add noise of about the size
    of the EPD error we are trying to remove (and make training differ from inference)."""
    model.eval().requires_grad_(False)
    for part in (model.cond_encoder, model.denoiser):
        part.requires_grad_(True)
    return [*model.cond_encoder.parameters(), *model.denoiser.parameters()]


@torch.no_grad()
def _epd_and_logits(model: LLDif, images_u8: np.ndarray, steps: int, batch: int = 256
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    epds, logits = [], []
    for i in range(0, len(images_u8), batch):
        x = to_model_input(torch.from_numpy(images_u8[i:i + batch]), model.cfg.in_chans)
        epd = model.sample_epd(x, steps)
        epds.append(epd)
        logits.append(model.llformer(x, epd))
    return torch.cat(epds), torch.cat(logits)


def _compare(epd: torch.Tensor, logits: torch.Tensor, ref_epd: torch.Tensor, ref_logits: torch.Tensor,
             labels: np.ndarray) -> dict:
    pred = logits.argmax(-1)
    return {
        "accuracy": float((pred.numpy() == labels).mean()),
        "agreement": float((pred == ref_logits.argmax(-1)).float().mean()),
        "epd_l1": float((epd - ref_epd).abs().mean()),
    }


@torch.no_grad()
def time_per_face(model: LLDif, images_u8: np.ndarray, steps: int, faces: int = 50, warmup: int = 5) -> float:
    """Median milliseconds of one full inference (batch 1). The median, because this CPU is shared."""
    model.eval()
    xs = [to_model_input(torch.from_numpy(images_u8[i % len(images_u8)][None]), model.cfg.in_chans)
          for i in range(warmup + faces)]
    times = []
    for i, x in enumerate(xs):
        t0 = time.perf_counter()
        model(x, steps)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def distill(
    teacher_ckpt: str | Path | None,
    steps_k: int,
    teacher_steps_s: int | None,
    data_dir: str | Path,
    out_ckpt: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    val_dir: str | Path | None = None,
    val_seed: int = 0,
    darken_p: float = 0.9,
    seed: int = 0,
    threads: int | None = None,
    reporter: Reporter | None = None,
    kl_weight: float = 1.0,
    timing_faces: int = 50,
    cond_channels: tuple[int, ...] | None = None,
    cond_convs: int | None = None,
) -> dict:
    """Distil the teacher's S-step sampler (None: the teacher's own sample_steps) into a K-step student.

    Returns the final metrics (also stored under "distillation" in the student checkpoint's JSON).
    """
    reporter = reporter or Reporter()
    teacher_path = resolve_checkpoint(teacher_ckpt)
    teacher, teacher_meta = load_checkpoint(teacher_path)
    cfg = teacher.cfg
    if not cfg.prior:
        raise LldifError(f"{teacher_path} is the --no-prior ablation: it has no sampler to distil")
    s = cfg.sample_steps if teacher_steps_s is None else teacher_steps_s
    if steps_k < 1 or s < 1:
        raise LldifError(f"sampler steps must be >= 1 (student K={steps_k}, teacher S={s})")
    if epochs < 1 or batch_size < 1:
        raise LldifError("--epochs and --batch-size must be >= 1")
    if cond_channels is not None and (not cond_channels or min(cond_channels) < 1):
        raise LldifError(f"--cond-channels must be positive widths, one per stage (got {cond_channels})")
    if cond_convs is not None and cond_convs not in (1, 2):
        raise LldifError(f"--cond-convs must be 1 or 2 convolutions per stage, not {cond_convs}")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _distill(teacher, teacher_path, teacher_meta, steps_k, s, data_dir, out_ckpt, epochs, batch_size, lr,
                        val_dir, val_seed, darken_p, seed, reporter, kl_weight, timing_faces, cond_channels,
                        cond_convs)
    finally:
        torch.set_num_threads(old_threads)


def _distill(teacher, teacher_path, teacher_meta, k, s, data_dir, out_ckpt, epochs, batch_size, lr, val_dir, val_seed,
             darken_p, seed, reporter, kl_weight, timing_faces, cond_channels, cond_convs) -> dict:
    cfg = teacher.cfg
    teacher.eval().requires_grad_(False)
    # Deep copy: the teacher's cfg keeps its own sample_steps; the student's records its K, which its checkpoint
    # carries (the training here passes k itself). The student stays in eval mode, on purpose: a short
    # fine-tune of the sampler with BatchNorm fixed at the teacher's statistics, as the exported graphs use them.
    student = copy.deepcopy(teacher)
    student.cfg.sample_steps = k
    # A new condition encoder learns from scratch, so its BatchNorm learns its statistics (train mode);
    # the teacher's own encoder keeps the teacher's (see _trainable).
    new_encoder = ((cond_channels is not None and tuple(cond_channels) != cfg.cond_widths)
                   or (cond_convs is not None and cond_convs != cfg.cond_convs))
    if new_encoder:
        student.cfg.cond_channels = tuple(cond_channels or cfg.cond_widths)
        student.cfg.cond_convs = cond_convs or cfg.cond_convs
        student.cond_encoder = condition_encoder(student.cfg)
    params = _trainable(student)

    channels = 1 if cfg.grayscale else 3
    train_set = load_folder(data_dir, cfg.classes, cfg.input_size, channels)
    train_x, train_y = torch.from_numpy(train_set.images), torch.from_numpy(train_set.labels)
    # The check set picks the best epoch: low-light validation images, or without --val a fixed darkened
    # sample of the training images. A fixed set, not the running training loss: at K=2 the student's
    # error can be 1e-4, far below the noise of a loss averaged over augmented batches and moving weights.
    dups = None
    if val_dir:
        check, dups = drop_duplicates(load_folder(val_dir, cfg.classes, cfg.input_size, channels), train_set)
        if not len(check):
            raise LldifError(f"validation folder {val_dir} has no images left after dropping training copies")
    else:
        pick = np.random.default_rng(val_seed).permutation(len(train_set))[:CHECK_FROM_TRAIN]
        check = train_set.subset(np.sort(pick))
    check_images, check_labels = darken_many(check.images, val_seed), check.labels
    t_epd, t_logits = _epd_and_logits(teacher, check_images, s)  # the teacher's answers never change

    def score(model: LLDif = student) -> tuple[tuple, dict]:
        m = _compare(*_epd_and_logits(model, check_images, k), t_epd, t_logits, check_labels)
        return (m["agreement"], -m["epd_l1"]), m

    # The baseline is the teacher's own chain cut to K steps. Epoch 0 (the student before training) is a
    # candidate, so with the teacher's encoder (then the student is the baseline) the result is never worse.
    best_key, undistilled = score(teacher)
    if new_encoder:
        best_key, _ = score()
    best_state, best_epoch, history = copy.deepcopy(student.state_dict()), 0, []

    batch = min(batch_size, len(train_x))  # a folder smaller than one batch still trains
    steps_per_epoch = len(train_x) // batch
    gen = torch.Generator().manual_seed(seed)  # all randomness: order, augmentation, darkening
    # No weight decay: the student starts from, and should stay near, the teacher.
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for epoch in range(1, epochs + 1):
        reporter.start_epoch("distill", epoch, epochs, steps_per_epoch)
        student.cond_encoder.train(new_encoder)
        perm = torch.randperm(len(train_x), generator=gen)
        t0, seen, correct, agree, loss_sum, l1_sum = time.time(), 0, 0, 0, 0.0, 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            x, y = augment(train_x[idx], cfg.in_chans, gen, darken_p), train_y[idx]
            with torch.no_grad():
                target = teacher.sample_epd(x, s)
                t_batch_logits = teacher.llformer(x, target)
            epd = student.sample_epd(x, k)
            logits = student.llformer(x, epd)  # frozen, but the KL gradient flows through it into the EPD
            l1 = (epd - target).abs().mean()
            kl = F.kl_div(logits.log_softmax(-1), t_batch_logits.softmax(-1), reduction="batchmean")
            loss = l1 + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            pred = logits.detach().argmax(-1)
            seen += len(y)
            correct += (pred == y).sum().item()
            agree += (pred == t_batch_logits.argmax(-1)).sum().item()
            loss_sum += loss.item() * len(y)
            l1_sum += l1.item() * len(y)
            reporter.step(loss_sum / seen, correct / seen)
        key, m = score()
        improved = key > best_key
        # Keys shared with train.py's records, so the CLI's reporter prints both the same way.
        record = {"phase": "distill", "epoch": epoch, "train_loss": loss_sum / seen,
                  "train_acc": correct / seen, "train_agreement": agree / seen, "epd_l1": l1_sum / seen,
                  "seconds": round(time.time() - t0, 1), "lr": opt.param_groups[0]["lr"],
                  "check_agreement": m["agreement"], "check_epd_l1": m["epd_l1"], "improved": improved}
        if val_dir:
            record["val_lowlight_acc"] = m["accuracy"]
        history.append(record)
        if improved:
            best_key, best_state, best_epoch = key, copy.deepcopy(student.state_dict()), epoch
        else:
            # Adam moves every weight by about lr per step however small the error is. Once an epoch makes
            # things worse, the steps are too big for the error left: go back to the best weights and take
            # smaller steps. This lets one default lr serve K=1 (error ~1e-2) and K=2 (error ~1e-4).
            student.load_state_dict(best_state)
            opt = torch.optim.AdamW(params, lr=opt.param_groups[0]["lr"] * LR_BACKOFF, weight_decay=0.0)
        reporter.end_epoch(record)

    student.load_state_dict(best_state)
    student.eval()
    _, final = score()
    metrics = {
        "steps_k": k, "teacher_steps_s": s, "check_set": "val" if val_dir else "train",
        "check_images": int(len(check_labels)), "best_epoch": best_epoch,
        "teacher_acc": float((t_logits.argmax(-1).numpy() == check_labels).mean()),
        "student_acc": final["accuracy"], "agreement": final["agreement"], "epd_l1": final["epd_l1"],
        "undistilled_acc": undistilled["accuracy"], "undistilled_agreement": undistilled["agreement"],
        "undistilled_epd_l1": undistilled["epd_l1"],
    }
    metrics["teacher_ms_per_face"] = time_per_face(teacher, check_images, s, timing_faces)
    metrics["student_ms_per_face"] = time_per_face(student, check_images, k, timing_faces)
    metrics["threads"] = torch.get_num_threads()

    info = {
        "teacher": str(teacher_path),
        # How the teacher was trained, so a shipped student names its whole recipe, not only this last step.
        "teacher_command": teacher_meta.get("command"), "teacher_train_config": teacher_meta.get("train_config"),
        "teacher_averaged_from": teacher_meta.get("averaged_from"),  # a teacher made by scripts/average_checkpoints.py
        "steps_k": k, "teacher_steps_s": s, "epochs": epochs, "cond_channels": student.cfg.cond_channels,
        "cond_convs": student.cfg.cond_convs,
        "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight, "darken_p": darken_p, "seed": seed,
        "data": str(data_dir), "val": str(val_dir) if val_dir else None, "val_seed": val_seed,
        "val_duplicates_dropped": dups, "command": list(sys.argv), "metrics": metrics, "history": history,
    }
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "parameters_inference": inference_parameters(student),
        "macs_per_face": count_macs(student),
        "train_images": len(train_set),
        "distillation": info,
    }
    if val_dir:  # the headline number, under the key train.py's checkpoints use
        meta["metrics"] = {"val_lowlight_acc": metrics["student_acc"], "val_images": metrics["check_images"]}
    path = save_checkpoint(student, out_ckpt, meta)
    return metrics | {"checkpoint": str(path)}
