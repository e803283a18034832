# lldif-edge developer entry points: `make demo`, `make test`, `make robot-check`.
# The first Python >= 3.10 on PATH, newest first; `make PYTHON=/path/to/python3` chooses another.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3.10 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo
ROBOT := build/robot

.PHONY: venv test lint demo wheel robot-check clean

venv: $(STAMP)

# torch first and pinned: the local CPU wheel satisfies it, so the [train] extra never pulls another build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "make: no Python >= 3.10 found (tried python3.13," \
		"python3.12, python3.11, python3.10, python3): install one, or run make PYTHON=/path/to/python3" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[train,openvino,dev]'
	touch $@

lint: venv
	$(BIN)/ruff check .

# Python 3.10 (JetPack 6, ROS 2 Humble): ruff's py310 target rejects newer syntax, vermin newer library calls.
test: venv
	$(BIN)/ruff check .
	$(BIN)/vermin --target=3.10- --violations --no-tips lldif_edge scripts tests examples
	$(BIN)/pytest

# The main job on the embedded default model: INT8 export (data-free calibration: no images needed),
# a benchmark of the result beside FP32 and the torch teacher, then the live loop on camera 0 when one opens.
demo: venv
	$(BIN)/lldif-edge export --int8 --out $(DEMO)/int8 --force
	$(BIN)/lldif-edge bench --package lldif_edge/weights/default_fp32 --package $(DEMO)/int8 --runs 100 \
		--chart $(DEMO)/bench.png
	@if $(BIN)/python -c "import cv2,sys; c=cv2.VideoCapture(0); sys.exit(0 if c.isOpened() else 1)" 2>/dev/null; then \
		$(BIN)/lldif-edge run --camera 0 --package $(DEMO)/int8; \
	else \
		echo "no camera opened here: try  $(BIN)/lldif-edge run --video FILE.mp4 --package $(DEMO)/int8 --json"; \
	fi

# The robot install: an sdist and a wheel carrying the default weights (dist/); the wheel goes into a fresh venv
# with no extras, and scripts/robot_smoke.py checks it from outside the repository (info, bench, run, the API, no
# torch). The last line compares that venv's size with the development venv's.
wheel: venv
	rm -rf dist build/lib build/bdist.*
	$(BIN)/python -m build --outdir dist .

robot-check: wheel
	rm -rf $(ROBOT) && $(PYTHON) -m venv $(ROBOT)
	$(ROBOT)/bin/python -m pip install --quiet dist/lldif_edge-*.whl
	cd "$$(mktemp -d)" && $(CURDIR)/$(ROBOT)/bin/python $(CURDIR)/scripts/robot_smoke.py
	du -sh $(ROBOT) $(VENV)

clean:
	rm -rf build dist .pytest_cache .ruff_cache
