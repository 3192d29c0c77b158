#!/usr/bin/env bash
# The offline RPT demo (`make demo`): a tiny base model that learned to reason -> RPT shards -> the base's
# pass rates on training positions (the gates) -> RPT with the `think` template -> a compute-matched
# next-token baseline -> evaluation with intervals. Every artifact lands under $RUN; finished steps are
# skipped (or resumed) on a rerun.
set -euo pipefail
RUN=${RUN:-runs/demo}
RECIPE=${RECIPE:-pipelines/tiny-cpu.toml}
BIN=${BIN:-.venv/bin}
PRETRAIN_DOCS=${PRETRAIN_DOCS:-12000}
THINK_FRACTION=${THINK_FRACTION:-0.5}
THINK_DRILLS=${THINK_DRILLS:-0.5}
mkdir -p "$RUN"
t0=$(date +%s)
step() { printf '\n== [%s] %s  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - t0 ))"; }

step 1/8 "pretraining corpus: $PRETRAIN_DOCS generated problems (a share $THINK_FRACTION of them reasoning demonstrations) and arithmetic drills (seed 1; the RPT corpus data/synthmath.jsonl is seed 0 and plain)"
[ -s "$RUN/pretrain.jsonl" ] || "$BIN/rpt-data" generate --n "$PRETRAIN_DOCS" --seed 1 \
  --think-fraction "$THINK_FRACTION" --think-drills "$THINK_DRILLS" --out "$RUN/pretrain.jsonl" --quiet

step 2/8 "byte-level BPE tokenizer with Qwen's pre-tokenizer rules (<think> and </think> are single tokens)"
[ -s "$RUN/tokenizer/tokenizer.json" ] || "$BIN/rpt-data" tokenizer train "$RUN/pretrain.jsonl" --config "$RECIPE" --out "$RUN/tokenizer"

step 3/8 "next-token pretraining of the tiny Qwen3 base (proxy and initial policy; it has seen worked thoughts)"
[ -s "$RUN/base/model.safetensors" ] || "$BIN/rpt-train" pretrain "$RUN/pretrain.jsonl" --config "$RECIPE" --tokenizer "$RUN/tokenizer" --out "$RUN/base"

step 4/8 "rpt-data build: proxy top-16 entropy, keep positions with entropy >= threshold (held-out documents: val/)"
"$BIN/rpt-data" build --config "$RECIPE" --dataset data/synthmath.jsonl --proxy-model "$RUN/base" --out "$RUN/shards"

step 5/8 "gates before RL: the base on a sample of the training positions (next token, greedy reasoning, k sampled rollouts; rpt-train passrate)"
"$BIN/rpt-train" passrate "$RUN/shards" --config "$RECIPE" --model "$RUN/base" --out "$RUN/passrates"

step 6/8 "rpt-train run: RPT (think, then predict; prefix reward; GRPO) on the train/ shards"
"$BIN/rpt-train" run "$RUN/shards" --config "$RECIPE" --model "$RUN/base" --out "$RUN/rpt" --resume

step 7/8 "compute-matched baseline: next-token training of the base on the same training documents, same FLOPs"
[ -s "$RUN/cpt/model.safetensors" ] || "$BIN/rpt-train" pretrain data/synthmath.jsonl --config "$RECIPE" \
  --init "$RUN/base" --exclude-val "$RUN/shards" --match-flops "$RUN/rpt" --out "$RUN/cpt" \
  --lr "${CPT_LR:-3e-4}" --warmup-steps 0 --min-lr-ratio 1.0

step 8/8 "evaluation on the held-out documents: base, compute-matched baseline and every RPT checkpoint"
"$BIN/rpt-train" eval "$RUN/shards" --config "$RECIPE" --base "$RUN/base" --cpt "$RUN/cpt" --run "$RUN/rpt" --out "$RUN/eval"

printf '\ndemo finished in %ss; artifacts under %s (table: %s/eval/eval.json, plot: %s/eval/eval.png)\n' \
  "$(( $(date +%s) - t0 ))" "$RUN" "$RUN" "$RUN"
