#!/usr/bin/env bash
# After scripts/train_default.sh: distil the default model's sampler, ship it as the embedded default
# (checkpoint + FP32 and INT8 packages) and measure everything the model card quotes.
# Results (JSON, PNG) go to build/default/; the shipped files to lldif_edge/weights/.
set -euo pipefail
DATA=${DATA:-../shared/data/fer2013}
RUNS=${RUNS:-runs}
OUT=${OUT:-build/default}
K=${K:-1}    # the step count that ships
KS=${KS:-1 2}  # the step counts distilled (K must be one of them)
SPEED=${SPEED:-1}  # 0: skip section 4 (benchmarks of another machine stay valid for the same architecture)
W=lldif_edge/weights
mkdir -p "$OUT" "$W"
ev() { lldif-edge eval --data "$DATA/val" --exclude "$DATA/train" --json "$@"; }

# the runs of train_default.sh that are here (ONLY= may have trained a subset); LLDif is needed
[ -e "$RUNS/lldif/best.safetensors" ] || { echo "make_default.sh: no $RUNS/lldif/best.safetensors: run scripts/train_default.sh first" >&2; exit 1; }
case " $KS " in *" $K "*) ;; *) echo "make_default.sh: K=$K is not among the distilled step counts KS=\"$KS\"" >&2; exit 1;; esac
runs=$(for run in lldif noprior cnn; do if [ -e "$RUNS/$run/best.safetensors" ]; then echo "$run"; fi; done)
echo "runs: $runs"
# 1. the two-stage model and the baselines, low light (val darkened with seed 0, duplicates of train dropped),
# normal light, and two more darkening draws of the same faces (draw 0 picked the best epochs)
for run in $runs; do
  ev --model "$RUNS/$run" --darken --confusion "$OUT/confusion_${run}_lowlight.png" > "$OUT/eval_${run}_lowlight.json"
  ev --model "$RUNS/$run" > "$OUT/eval_${run}_normal.json"
  for seed in 1 2; do ev --model "$RUNS/$run" --darken --seed "$seed" > "$OUT/eval_${run}_lowlight_seed$seed.json"; done
done

# 2. sampler distillation, one epoch per step count in KS (side by side, one thread each; alone, two threads)
threads=$(( $(wc -w <<< "$KS") > 1 ? 1 : 2 ))
for k in $KS; do
  lldif-edge distill --model "$RUNS/lldif" --steps "$k" --data "$DATA/train" --val "$DATA/val" --epochs 1 \
    --threads "$threads" --out "$RUNS/student_k$k" > "$OUT/distill_k$k.log" 2>&1 &
done
wait
cp "$RUNS/student_k$K.safetensors" "$W/default.safetensors"
cp "$RUNS/student_k$K.json" "$W/default.json"
ev --darken --confusion "$OUT/confusion_default_lowlight.png" > "$OUT/eval_default_lowlight.json"
ev > "$OUT/eval_default_normal.json"
# what a user checks: a darkened, de-duplicated copy of val on disk, evaluated with no model argument
rm -rf "$OUT/val_dark" && lldif-edge darken "$DATA/val" "$OUT/val_dark" --exclude "$DATA/train"
lldif-edge eval --data "$OUT/val_dark" --json > "$OUT/eval_default_val_dark.json"
for seed in 1 2; do ev --darken --seed "$seed" > "$OUT/eval_default_lowlight_seed$seed.json"; done
for run in $runs; do  # the fourth draw: the per-file darkening of `lldif-edge darken`
  lldif-edge eval --data "$OUT/val_dark" --model "$RUNS/$run" --json > "$OUT/eval_${run}_val_dark.json"
done
cp "$OUT/confusion_default_lowlight.png" docs/confusion_default_lowlight.png

# 3. the shipped packages: FP32, and INT8 with data-free calibration (what `export --int8` does by default);
# both with their confidence calibrated on the de-duplicated val faces (darkened and normal light)
CONF=(--confidence-data "$DATA/val" --confidence-exclude "$DATA/train")
lldif-edge export --out "$W/default_fp32" --force --verify-data "$DATA/val" "${CONF[@]}"
lldif-edge eval --package "$W/default_fp32" --data "$DATA/val" --exclude "$DATA/train" --darken --compare --json \
  > "$OUT/eval_fp32_package.json"
lldif-edge export --int8 --out "$W/default_int8" --force --eval "$DATA/val" "${CONF[@]}" > "$OUT/int8_datafree.log" 2>&1
# (the confidence was fitted on these faces, darkening seed 0: the manifest's cross_fitted ECE is the honest one)
lldif-edge eval --package "$W/default_int8" --data "$DATA/val" --exclude "$DATA/train" --darken --json \
  --calibration-plot "$OUT/reliability_int8_lowlight.png" --coverage-plot "$OUT/coverage_int8_lowlight.png" \
  > "$OUT/eval_int8_package.json"
lldif-edge eval --package "$W/default_int8" --data "$OUT/val_dark" --json > "$OUT/eval_int8_val_dark.json"
# INT8 with real calibration (256 darkened training faces), for the model card's comparison; not shipped
lldif-edge export --int8 --calib "$DATA/train" --darken --out "$OUT/int8_real" --force --eval "$DATA/val" \
  > "$OUT/int8_real.log" 2>&1
lldif-edge eval --package "$OUT/int8_real" --data "$DATA/val" --exclude "$DATA/train" --darken --json \
  > "$OUT/eval_int8_real_package.json"
lldif-edge eval --package "$OUT/int8_real" --data "$OUT/val_dark" --json > "$OUT/eval_int8_real_val_dark.json"

[ "$SPEED" = 1 ] || exit 0
# 4. speed: every backend, FP32 and INT8 side by side, with the torch S-step teacher; then the live loop
lldif-edge bench --package "$W/default_fp32" --package "$W/default_int8" --backend all --runs 1000 --rounds 10 --chart "$OUT/bench.png" \
  --json > "$OUT/bench.json"
cp "$OUT/bench.png" docs/bench_default.png
lldif-edge bench --package "$W/default_fp32" --package "$W/default_int8" --backend all --profile --no-reference \
  > "$OUT/bench_profile.txt"
python scripts/endurance.py --frames 10000 --photo ../shared/data/faces/fer_justin.jpg > "$OUT/endurance.json"
