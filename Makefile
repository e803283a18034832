# lldif-edge developer entry points: `make demo`, `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo
DEFAULT_WEIGHTS := lldif_edge/weights/default.safetensors

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

test: venv
	$(BIN)/ruff check .
	$(BIN)/pytest

# With the embedded default model: evaluate it on darkened FER2013 faces (from ../shared when present).
# Without it: train the tiny preset on synthetic faces for a few seconds and evaluate that in low light.
demo: venv
	$(BIN)/python scripts/make_demo_data.py --out $(DEMO)
	@if [ -f $(DEFAULT_WEIGHTS) ] && [ -d $(DEMO)/fer2013 ]; then \
		echo "== default model on darkened FER2013 faces"; \
		$(BIN)/lldif-edge eval --data $(DEMO)/fer2013 --darken --seed 0 --confusion $(DEMO)/confusion.png; \
	else \
		echo "== tiny preset trained on synthetic faces, evaluated on their darkened copies"; \
		$(BIN)/lldif-edge train --data $(DEMO)/synthetic/train --val $(DEMO)/synthetic/val --preset tiny \
			--epochs 6 --stage2-epochs 6 --batch-size 16 --lr 3e-3 --darken-p 0.5 --threads 1 \
			--out $(DEMO)/run-tiny && \
		$(BIN)/lldif-edge darken $(DEMO)/synthetic/val $(DEMO)/synthetic/val-dark --seed 0 && \
		$(BIN)/lldif-edge eval --data $(DEMO)/synthetic/val-dark --model $(DEMO)/run-tiny \
			--confusion $(DEMO)/confusion.png; \
	fi
	@echo "confusion matrix: $(DEMO)/confusion.png"

clean:
	rm -rf build .pytest_cache .ruff_cache
