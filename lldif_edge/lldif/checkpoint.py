"""Checkpoints: safetensors weights + a JSON sidecar (config, classes, metrics, command). Nothing unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
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


def load_resume_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
