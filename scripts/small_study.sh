#!/usr/bin/env bash
# Recipe questions asked of the `small` preset (half the base widths, a quarter of its MACs), 10 epochs each
# (6 + 4 under one one-cycle LR), so that a 2-core CPU without native bf16 answers them in about 30 min a pair:
# the learning rate; the prior against its --no-prior ablation with the EPD made from the training view or from
# its normal-light twin; without the sampler-only (dm) epoch (lldif_view_nodm, run on its own); in-model
# histogram equalisation (*_eq*); a darkening warm-up (*_warm*). Results: docs/model_history.md.
# Runs go two at a time, one thread each (JOBS=2). ONLY="..." runs a subset; SEED=N repeats them with another
# initialisation and batch order (folders *_seedN); RESUME=--resume continues.
set -euo pipefail
DATA=${DATA:-../shared/data/fer2013}
OUT=${OUT:-runs/exp}
JOBS=${JOBS:-2}
RESUME=${RESUME:-}
SEED=${SEED:-0}
SUFFIX=$([ "$SEED" = 0 ] || echo "_seed$SEED")
ONLY=${ONLY:-noprior_lr5e-4 noprior_lr2e-3 lldif_view lldif_clean}
mkdir -p "$OUT"
common=(--data "$DATA/train" --val "$DATA/val" --preset small --epochs 6 --stage2-epochs 4 --darken-p 0.8
        --threads 1 --seed "$SEED" $RESUME)
declare -A extra=(
  [noprior_lr5e-4]="--no-prior --lr 5e-4"
  [noprior_lr2e-3]="--no-prior --lr 2e-3"
  [lldif_view]="--lr 5e-4 --kl-weight 0.1"
  [lldif_clean]="--lr 5e-4 --kl-weight 0.1 --epd-from clean"
  [lldif_view_nodm]="--lr 5e-4 --kl-weight 0.1 --dm-fraction 0"
  [noprior_eq]="--no-prior --lr 5e-4 --equalize"
  [lldif_eq_nodm]="--lr 5e-4 --kl-weight 0.1 --dm-fraction 0 --equalize"
  [noprior_warm]="--no-prior --lr 5e-4 --darken-warmup 2"
  [noprior_eq_warm]="--no-prior --lr 5e-4 --equalize --darken-warmup 2"
  [lldif_warm_nodm]="--lr 5e-4 --kl-weight 0.1 --dm-fraction 0 --darken-warmup 2"
)
running=0
for run in $ONLY; do
    # shellcheck disable=SC2086  # the extra flags are meant to split
    lldif-edge train "${common[@]}" ${extra[$run]} --out "$OUT/small_$run$SUFFIX" > "$OUT/small_$run$SUFFIX.log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
