#!/usr/bin/env bash
# Reproduces the embedded default model, its --no-prior ablation and the plain-CNN baseline (MODEL_CARD.md),
# all with the same budget: 10 + 9 epochs, the same schedule and augmentation. CPU only, about 75 min on
# 2 Intel Xeon cores with AMX (bf16; the three runs go side by side, one thread each). Resumable: re-run
# with RESUME=--resume.
set -euo pipefail
DATA=${DATA:-../shared/data/fer2013}
OUT=${OUT:-runs}
EPOCHS=${EPOCHS:-10}
STAGE2=${STAGE2:-9}
RESUME=${RESUME:-}
mkdir -p "$OUT"
common=(--data "$DATA/train" --val "$DATA/val" --epochs "$EPOCHS" --stage2-epochs "$STAGE2" --lr 1e-3 --darken-p 0.8
        --threads 1 $RESUME)
lldif-edge train "${common[@]}" --preset base --out "$OUT/lldif" > "$OUT/lldif.log" 2>&1 &
lldif-edge train "${common[@]}" --preset base --no-prior --out "$OUT/noprior" > "$OUT/noprior.log" 2>&1 &
# The plain CNN stuck at the majority class for 4 epochs at lr 1e-3 in an earlier run: it gets 5e-4.
lldif-edge train "${common[@]}" --preset cnn --no-prior --lr 5e-4 --out "$OUT/cnn" > "$OUT/cnn.log" 2>&1 &
wait
