#!/usr/bin/env bash
# Download the small wheels that tests/test_tensorrt_api.py checks the TensorRT backend against: the Python
# bindings of TensorRT 10.3 (JetPack 6) and of the current 11.x, and cuda-python, about 10 MB for the Python
# that runs the tests. Not TensorRT's multi-GB libraries: the test supplies stand-ins for the few C entry
# points the bindings need to import.
#   scripts/fetch_trt_api_wheels.sh [PYTHON]      (default: .venv/bin/python)
# Destination: $LLDIF_EDGE_TRT_WHEELS, else ~/.cache/lldif-edge/trt-wheels.
set -euo pipefail
PY=${1:-.venv/bin/python}
DEST=${LLDIF_EDGE_TRT_WHEELS:-$HOME/.cache/lldif-edge/trt-wheels}
mkdir -p "$DEST"
for spec in "tensorrt-cu12-bindings==10.3.0" "tensorrt-cu12-bindings==11.4.0.106" "cuda-bindings>=12.6,<13" \
            "cuda-pathfinder"; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" "$spec"
done
ls -1 "$DEST"
