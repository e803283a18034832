"""Checkpoints: safetensors weights + a JSON sidecar (config, classes, metrics, command). Nothing unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lldif_edge.errors import PackageError
from lldif_edge.lldif.config import ModelConfig
from lldif_edge.lldif.model import LLDif, build_model

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "default.safetensors"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(model: LLDif, path: str | Path, meta: dict | None = None) -> Path:
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {"format": "lldif-edge-checkpoint/1", "config": model.cfg.to_dict(), **(meta or {})}
    _atomic_write(path, lambda p: save_file(state, str(p)))
    _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(info, indent=2)))
    return path


def resolve_checkpoint(path: str | Path | None) -> Path:
    """A .safetensors file, its .json sidecar, or a run folder (-> best.safetensors); None -> the default."""
    if path is None:
        path = DEFAULT_MODEL
    p = Path(path)
    if p.is_dir():
        p = p / "best.safetensors"
    p = p.with_suffix(".safetensors")
    if not p.is_file() or not p.with_suffix(".json").is_file():
        raise PackageError(f"checkpoint not found: {p} (needs {p.name} and {p.with_suffix('.json').name})")
    return p


def load_checkpoint(path: str | Path | None = None) -> tuple[LLDif, dict]:
    p = resolve_checkpoint(path)
    try:
        meta = json.loads(p.with_suffix(".json").read_text())
        cfg = ModelConfig.from_dict(meta["config"])
        model = build_model(cfg)
        model.load_state_dict(load_file(str(p)))
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise PackageError(f"cannot load checkpoint {p}: {str(e).splitlines()[0]}") from e
    model.eval()
    return model, meta


RESUME_FORMAT = "lldif-edge-resume/1"
RESUME_FILE = "resume.safetensors"  # one file per run folder, overwritten each epoch
_MOMENTS = ("exp_avg", "exp_avg_sq")


def save_resume_state(path: Path, progress: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler, moments_dtype: torch.dtype = torch.bfloat16,
                      run_files: dict[str, torch.dtype] | None = None) -> None:
    """Everything a stopped run needs to go on, in one safetensors file: the weights in FP32, the optimiser's
    moments in `moments_dtype` (bf16 halves the file; FP32 makes a resumed run repeat the uninterrupted one
    bit for bit), and the progress, optimiser groups and LR schedule as JSON metadata. Nothing unpickled.
    `run_files`: checkpoints of the run folder the rest of the run reads (name -> dtype to keep them in), so that
    this one file is all a run needs to be resumed elsewhere (`restore_run_files`)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    files_meta = {}
    for name, dtype in (run_files or {}).items():
        ckpt = Path(path).with_name(f"{name}.safetensors")
        files_meta[name] = json.loads(ckpt.with_suffix(".json").read_text())
        for k, v in load_file(str(ckpt)).items():
            tensors[f"file.{name}.{k}"] = v.to(dtype) if v.is_floating_point() else v
    opt = optimizer.state_dict()
    for i, st in opt["state"].items():
        tensors[f"optimizer.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
        for name in _MOMENTS:
            tensors[f"optimizer.{i}.{name}"] = st[name].detach().to(moments_dtype).contiguous()
    meta = {"format": RESUME_FORMAT, "progress": progress, "param_groups": opt["param_groups"],
            "scheduler": scheduler.state_dict(), "files": files_meta}
    _atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata={"state": json.dumps(meta)}))


def load_resume_state(path: Path) -> dict:
    """The progress dict of `save_resume_state`, plus "model", "optimizer" and "scheduler" state dicts ready to
    load. Reads the older `last.pt` (a torch.save dict of the same keys) too."""
    path = Path(path)
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != RESUME_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {RESUME_FORMAT}")
    except (KeyError, ValueError, OSError, SafetensorError) as e:
        raise PackageError(f"cannot resume from {path}: {str(e).splitlines()[0]}") from e
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".", 2)
            entry = opt_state.setdefault(int(i), {})
            entry[name] = value.reshape(()) if name == "step" else value.float()
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    files = {name: ({k.removeprefix(f"file.{name}."): v.float() if v.is_floating_point() else v
                     for k, v in tensors.items() if k.startswith(f"file.{name}.")}, info)
             for name, info in meta.get("files", {}).items()}
    return {**meta["progress"],
            "model": {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
            "optimizer": {"state": opt_state, "param_groups": groups}, "scheduler": meta["scheduler"],
            "files": files}


def restore_run_files(folder: Path, resumed: dict) -> list[str]:
    """Write back the run-folder checkpoints a resume file carries, where the folder lacks them (a run resumed
    from the committed resume file alone). Returns the names written."""
    written = []
    for name, (state, info) in resumed.get("files", {}).items():
        target = Path(folder) / f"{name}.safetensors"
        if not target.exists():
            _atomic_write(target, lambda p, st=state: save_file(st, str(p)))
            _atomic_write(target.with_suffix(".json"), lambda p, i=info: p.write_text(json.dumps(i, indent=2)))
            written.append(name)
    return written
