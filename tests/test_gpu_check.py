"""scripts/gpu_check.sh: on a machine without a GPU, one JSON report with every GPU item "not available", exit 0;
its runner and agreement code on ONNX Runtime's CPU provider (the GPU runners share that code)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_ITEMS = ("torch_cuda", "ort_cuda", "ort_tensorrt", "tensorrt_fp32", "tensorrt_fp32_cached", "int8_export",
             "tensorrt_int8", "tensorrt_int8_cached", "bench_all", "agreement")


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi"):
        return True
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: the items would run")
def test_without_a_gpu_every_gpu_item_is_not_available(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path), "--faces", "8"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert json.loads(proc.stdout) == report  # the same report is printed
    items = report["items"]
    assert items["info"]["status"] == "ok" and "onnxruntime" in items["info"]["backends"]
    assert report["gpu"] == "not available"
    for name in GPU_ITEMS:
        assert items[name]["status"] == "not available", (name, items[name])
        assert items[name]["why"] and "\n" not in items[name]["why"]
    assert "tensorrt" in items["tensorrt_fp32"]["why"] or "CUDA" in items["tensorrt_fp32"]["why"]


def test_runner_and_agreement_on_the_cpu(tmp_path):
    """The code every GPU runner goes through, run on ONNX Runtime's CPU provider in its own process."""
    gc = _load()
    args = types.SimpleNamespace(faces=6, data=None)
    result = gc.run_item("ort_cpu", tmp_path, args, timeout=240)
    assert result["status"] == "ok", result
    assert result["faces"] == 6 and "onnxruntime" in result["backend"]
    logits = np.load(tmp_path / "logits-ort_cpu.npy")
    assert logits.shape == (6, 7)
    assert gc.agreement(tmp_path)["status"] == "not available"  # no GPU runner yet

    other = logits.copy()
    other[0] = -other[0]  # one face disagrees
    np.save(tmp_path / "logits-ort_cuda.npy", other)
    a = gc.agreement(tmp_path)
    assert a["status"] == "ok" and list(a["runners"]) == ["ort_cuda"]
    assert a["runners"]["ort_cuda"]["top1_agreement"] == round(5 / 6, 4)


def test_a_crashing_item_is_reported_not_raised(tmp_path):
    gc = _load()
    result = gc.run_item("no_such_item", tmp_path, types.SimpleNamespace(faces=1, data=None), timeout=60)
    assert result["status"] == "failed" and "KeyError" in result["why"]
