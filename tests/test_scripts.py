"""The diagnostic scripts under scripts/ that the model card quotes."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lldif_edge.data import load_folder  # noqa: E402
from lldif_edge.lldif.checkpoint import save_checkpoint  # noqa: E402
from lldif_edge.lldif.config import preset_config  # noqa: E402
from lldif_edge.lldif.model import build_model, eval_mode  # noqa: E402
from lldif_edge.lldif.train import predict_logits  # noqa: E402
from lldif_edge.lowlight import darken_many  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "scripts" / "epd_probe.py"


def load_probe():
    spec = importlib.util.spec_from_file_location("epd_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fer_root(tmp_path: Path, train: Path, val: Path) -> Path:
    root = tmp_path / "fer"
    root.mkdir()
    (root / "train").symlink_to(train)
    (root / "val").symlink_to(val)
    return root


def test_epd_probe_sampled_epd_gives_the_inference_logits_and_others_change_them(faces_val):
    probe = load_probe()
    torch.manual_seed(0)
    model = build_model(preset_config("tiny"))
    with torch.no_grad():  # the EPD's input layers start at zero: an untrained model ignores any EPD
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    images = darken_many(load_folder(faces_val, model.cfg.classes, model.cfg.input_size, 1).images, 0)
    with eval_mode(model):
        sampled = probe.epds(model, images, stage1=False)
        logits = probe.llformer_logits(model, images, sampled)
        np.testing.assert_allclose(logits, predict_logits(model, images), rtol=1e-5, atol=1e-5)
        shuffled = probe.llformer_logits(model, images, sampled[torch.randperm(len(images))])
        stage1 = probe.llformer_logits(model, images, probe.epds(model, images, stage1=True))
    assert not np.allclose(logits, shuffled) and not np.allclose(logits, stage1)


def test_epd_probe_writes_every_variant_and_refuses_a_model_without_the_prior(tmp_path, faces_train, faces_val):
    root = fer_root(tmp_path, faces_train, faces_val)
    prior = save_checkpoint(build_model(preset_config("tiny")), tmp_path / "prior")
    out = tmp_path / "probe.json"
    subprocess.run([sys.executable, str(PROBE), "--model", str(prior), "--data", str(root), "--threads", "1",
                    "--json", str(out)], check=True, capture_output=True, cwd=ROOT)
    acc = json.loads(out.read_text())["accuracy"]
    assert set(acc["dark"]) == {"sampled", "sampled_from_normal", "stage1", "shuffled", "mean"}
    assert set(acc["normal"]) == {"sampled", "stage1", "shuffled", "mean"}
    ablation = save_checkpoint(build_model(preset_config("tiny", prior=False)), tmp_path / "ablation")
    run = subprocess.run([sys.executable, str(PROBE), "--model", str(ablation), "--data", str(root)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0 and "no EPD to probe" in run.stderr


AVERAGE = ROOT / "scripts" / "average_checkpoints.py"


def run_average(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AVERAGE), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_average_checkpoints_means_the_weights_of_runs_that_started_alike(tmp_path, faces_train, faces_val):
    """Two runs from the same image branch and fresh-weight seed average tensor by tensor (BatchNorm statistics
    too); the mean is scored on --val like a run's best checkpoint; runs that started apart are refused."""
    cfg = preset_config("tiny")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model(cfg)
        train_config = {"seed": seed, "init_seed": 0, "prior": True, "image_branch": "runs/cnn/best.safetensors"}
        paths.append(save_checkpoint(model, tmp_path / f"run{seed}", {"train_config": train_config}))
    from lldif_edge.lldif.checkpoint import load_checkpoint

    a, b = (load_checkpoint(p)[0].state_dict() for p in paths)
    run = run_average(*paths, "--out", tmp_path / "avg", "--val", faces_val, "--exclude", faces_train)
    assert run.returncode == 0, run.stderr
    avg, meta = load_checkpoint(tmp_path / "avg.safetensors")
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2)
    assert [s["checkpoint"] for s in meta["averaged_from"]] == [str(p) for p in paths]
    assert {"val_lowlight_acc", "val_normal_acc"} <= set(meta["metrics"])

    other = save_checkpoint(build_model(cfg), tmp_path / "other", {"train_config": {"seed": 3, "prior": True}})
    run = run_average(paths[0], other, "--out", tmp_path / "bad")
    assert run.returncode == 2 and "did not start from the weights" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.safetensors").exists()
    wider = build_model(preset_config("tiny", stem_channels=(8, 16, 32)))
    wider_path = save_checkpoint(wider, tmp_path / "wider", {"train_config": {"seed": 0, "prior": True}})
    run = run_average(paths[0], wider_path, "--out", tmp_path / "bad")
    assert run.returncode == 2 and "another architecture" in run.stderr
