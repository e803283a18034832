#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU (a lent GPU machine or a Jetson), in one command and one JSON report:
# lldif-edge info, the torch backend on CUDA, ONNX Runtime's CUDA and TensorRT providers, the tensorrt backend
# (FP32 and INT8 Q/DQ engines, engine cache reuse), bench --backend all, and each GPU runner's agreement with
# ONNX Runtime on the CPU. What is missing is reported "not available"; the run stays under 10 minutes.
#   scripts/gpu_check.sh [--out DIR] [--data FACES_DIR] [--faces N] [--budget SECONDS]
# Report: DIR/report.json (default build/gpu_check/report.json), also printed. Exit 0 once it is written.
# PYTHON picks the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/gpu_check.py "$@"
