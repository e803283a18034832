# lldif-edge developer entry points: `make demo`, `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: venv test lint demo clean

venv: $(STAMP)

# torch first and pinned: the local CPU wheel satisfies it, so the [train] extra never pulls another build.
$(STAMP): pyproject.toml
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

clean:
	rm -rf build .pytest_cache .ruff_cache
