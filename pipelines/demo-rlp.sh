#!/usr/bin/env bash
# RLP beside RPT (`make demo-rlp`): reuses a finished `make demo` run directory ($RUN: base, shards, rpt),
# trains RLP (`rpt-train run --objective rlp`) from the same base on the same shards until it has spent
# the RPT run's training compute (--match-flops), then evaluates base, rpt and rlp on the same held-out
# positions. The RLP run takes every [train] setting of the recipe; its thoughts use the RPT run's
# template when that one thinks, else `think` with $THOUGHT_TOKENS tokens. Reruns resume.
set -euo pipefail
RUN=${RUN:-runs/demo}
RECIPE=${RECIPE:-pipelines/tiny-cpu.toml}
BIN=${BIN:-.venv/bin}
PY=${PY:-$BIN/python}
THOUGHT_TOKENS=${THOUGHT_TOKENS:-48}
t0=$(date +%s)
step() { printf '\n== [%s] %s  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - t0 ))"; }

for need in base/model.safetensors shards/manifest.json rpt/run_config.json rpt/checkpoints/latest; do
  if [ ! -e "$RUN/$need" ]; then
    echo "error: $RUN/$need is missing: run 'make demo' first (RLP reuses its base, shards and RPT run)" >&2
    exit 1
  fi
done

# The RPT run's rollout template: RLP needs one that thinks (think, qwen3-think, answer-tags).
read -r RPT_TEMPLATE RPT_MAX_NEW RPT_ANSWER < <("$PY" -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["template"], c["max_new_tokens"], c["answer_tokens"])' "$RUN/rpt/run_config.json")
if [ "$RPT_TEMPLATE" = plain ]; then
  TEMPLATE=think MAX_NEW=$THOUGHT_TOKENS
else
  TEMPLATE=$RPT_TEMPLATE MAX_NEW=$RPT_MAX_NEW
fi
# Reasoning-mode evaluation: a thought of up to MAX_NEW tokens (RLP's budget), then the answer tokens.
EVAL_MAX_NEW=$(( MAX_NEW + RPT_ANSWER ))

step 1/2 "rpt-train run --objective rlp: thoughts ($TEMPLATE, <= $MAX_NEW tokens) rewarded by their information gain over an EMA no-think baseline, from $RUN/base, until the compute of $RUN/rpt"
"$BIN/rpt-train" run "$RUN/shards" --config "$RECIPE" --model "$RUN/base" --out "$RUN/rlp" --resume \
  --objective rlp --template "$TEMPLATE" --max-new-tokens "$MAX_NEW" --max-steps 100000 \
  --match-flops "$RUN/rpt" ${RLP_ARGS:-}

step 2/2 "evaluation on the held-out documents: base, the compute-matched baseline (if any), every RPT and RLP checkpoint; reasoning mode thinks with the $TEMPLATE template"
CPT=()
[ -s "$RUN/cpt/model.safetensors" ] && CPT=(--cpt "$RUN/cpt")
"$BIN/rpt-train" eval "$RUN/shards" --config "$RECIPE" --base "$RUN/base" "${CPT[@]}" --run "$RUN/rpt" \
  --run-as rlp="$RUN/rlp" --template "$TEMPLATE" --max-new-tokens "$EVAL_MAX_NEW" --out "$RUN/eval-rlp"

printf '\nRLP demo finished in %ss; table: %s/eval-rlp/eval.json, plot: %s/eval-rlp/eval.png\n' \
  "$(( $(date +%s) - t0 ))" "$RUN" "$RUN"
