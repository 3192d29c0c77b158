#!/usr/bin/env bash
# RLP beside RPT (`make demo-rlp`): reuses a finished `make demo` run directory ($RUN: base, shards, rpt),
# trains RLP (`rpt-train run --objective rlp`) from the same base on the same shards until it has spent
# the RPT run's training compute (--match-flops), then evaluates base, rpt and rlp on the same held-out
# positions. The RLP run takes every [train] setting of the recipe (its own stopping rule aside: thoughts
# end at </think>), so the recipe's template must think (`make demo`'s does); RLP_ARGS and EVAL_ARGS add
# options to the two commands. Reruns resume the RLP run and reuse the cached evaluation. SEED=N (after
# `SEED=N make demo`) trains rlp-seedN with seed N to the compute of rpt-seedN and evaluates them together.
set -euo pipefail
RUN=${RUN:-runs/demo}
RECIPE=${RECIPE:-pipelines/tiny-cpu.toml}
BIN=${BIN:-.venv/bin}
# RLP trains on the positions RPT trained on: shards-rl/train when the demo built it, else shards/train.
TRAIN_SHARDS=${TRAIN_SHARDS:-$RUN/shards-rl}
[ -s "$TRAIN_SHARDS/manifest.json" ] || TRAIN_SHARDS=$RUN/shards
SEED=${SEED:-0}
SFX=""
[ "$SEED" = 0 ] || SFX="-seed$SEED"
t0=$(date +%s)
step() { printf '\n== [%s] %s  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - t0 ))"; }

for need in base/model.safetensors shards/manifest.json "rpt$SFX/run_config.json" "rpt$SFX/checkpoints/latest"; do
  if [ ! -e "$RUN/$need" ]; then
    echo "error: $RUN/$need is missing: run 'make demo' first (RLP reuses its base, shards and RPT run)" >&2
    exit 1
  fi
done

step 1/2 "rpt-train run --objective rlp: thoughts rewarded by their information gain over an EMA no-think baseline, from $RUN/base, until the compute of $RUN/rpt"
"$BIN/rpt-train" run "$TRAIN_SHARDS" --config "$RECIPE" --model "$RUN/base" --out "$RUN/rlp$SFX" --resume \
  --objective rlp --max-steps 100000 --match-flops "$RUN/rpt$SFX" --seed "$SEED" ${RLP_ARGS:-}

step 2/2 "evaluation on the held-out documents: base, the compute-matched baseline (if any), every RPT and RLP checkpoint"
CPT=()
[ -s "$RUN/cpt$SFX/model.safetensors" ] && CPT=(--cpt "$RUN/cpt$SFX")
# `make demo`'s verdicts for base, cpt and rpt are reused when the settings match (the cache checks them).
if [ ! -e "$RUN/eval-rlp$SFX/eval_cache.json" ] && [ -s "$RUN/eval$SFX/eval_cache.json" ]; then
  mkdir -p "$RUN/eval-rlp$SFX" && cp "$RUN/eval$SFX/eval_cache.json" "$RUN/eval-rlp$SFX/eval_cache.json"
fi
"$BIN/rpt-train" eval "$RUN/shards" --config "$RECIPE" --base "$RUN/base" "${CPT[@]}" --run "$RUN/rpt$SFX" \
  --run-as rlp="$RUN/rlp$SFX" --out "$RUN/eval-rlp$SFX" ${EVAL_ARGS:-}

printf '\nRLP demo finished in %ss; table: %s/eval-rlp%s/eval.json, plot: %s/eval-rlp%s/eval.png\n' \
  "$(( $(date +%s) - t0 ))" "$RUN" "$SFX" "$RUN" "$SFX"
