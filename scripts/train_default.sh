#!/usr/bin/env bash
# Reproduces the embedded default model and its ablation (MODEL_CARD.md). CPU only, ~45 min on 2 cores:
# the two runs go side by side, one thread each. Resumable: re-run with RESUME=--resume.
set -euo pipefail
DATA=${DATA:-../shared/data/fer2013}
OUT=${OUT:-runs}
EPOCHS=${EPOCHS:-6}
STAGE2=${STAGE2:-4}
RESUME=${RESUME:-}
mkdir -p "$OUT"
lldif-edge train --data "$DATA/train" --val "$DATA/val" --preset base --epochs "$EPOCHS" --stage2-epochs "$STAGE2" --lr 1e-3 --darken-p 0.8 \
  --threads 1 --out "$OUT/lldif" $RESUME > "$OUT/lldif.log" 2>&1 &
lldif-edge train --data "$DATA/train" --val "$DATA/val" --preset base --epochs "$EPOCHS" --stage2-epochs "$STAGE2" --lr 1e-3 --darken-p 0.8 \
  --threads 1 --no-prior --out "$OUT/noprior" $RESUME > "$OUT/noprior.log" 2>&1 &
wait
