#!/usr/bin/env bash
# The offline RPT demo (`make demo`): embedded data -> tokenizer -> tiny base model -> RPT shards -> GRPO
# -> easy/medium/hard evaluation. Every artifact lands under $RUN; finished steps are skipped on a rerun.
set -euo pipefail
RUN=${RUN:-runs/demo}
RECIPE=${RECIPE:-pipelines/tiny-cpu.toml}
BIN=${BIN:-.venv/bin}
PRETRAIN_DOCS=${PRETRAIN_DOCS:-12000}
mkdir -p "$RUN"
t0=$(date +%s)
step() { printf '\n== [%s] %s  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - t0 ))"; }

step 1/6 "pretraining corpus: $PRETRAIN_DOCS generated problems (seed 1; the RPT corpus data/synthmath.jsonl is seed 0)"
[ -s "$RUN/pretrain.jsonl" ] || "$BIN/rpt-data" generate --n "$PRETRAIN_DOCS" --seed 1 --out "$RUN/pretrain.jsonl"

step 2/6 "byte-level BPE tokenizer with Qwen's pre-tokenizer rules"
[ -s "$RUN/tokenizer/tokenizer.json" ] || "$BIN/rpt-data" tokenizer train "$RUN/pretrain.jsonl" --config "$RECIPE" --out "$RUN/tokenizer"

step 3/6 "next-token pretraining of the tiny Qwen3 base (proxy and initial policy)"
[ -s "$RUN/base/model.safetensors" ] || "$BIN/rpt-train" pretrain "$RUN/pretrain.jsonl" --config "$RECIPE" --tokenizer "$RUN/tokenizer" --out "$RUN/base"

step 4/6 "rpt-data build: proxy top-16 entropy, keep positions with entropy >= threshold"
"$BIN/rpt-data" build --config "$RECIPE" --dataset data/synthmath.jsonl --proxy-model "$RUN/base" --out "$RUN/shards"

step 5/6 "rpt-train run: GRPO on the train/ shards"
"$BIN/rpt-train" run "$RUN/shards" --config "$RECIPE" --model "$RUN/base" --out "$RUN/rpt" --resume

step 6/6 "evaluation on val/ shards: base vs every RPT checkpoint"
"$BIN/rpt-train" eval "$RUN/shards" --config "$RECIPE" --base "$RUN/base" --run "$RUN/rpt" --out "$RUN/eval"

printf '\ndemo finished in %ss; artifacts under %s (eval table: %s/eval/eval.json, plot: %s/eval/eval.png)\n' \
  "$(( $(date +%s) - t0 ))" "$RUN" "$RUN" "$RUN"
