#!/usr/bin/env bash
# The offline RPT demo (`make demo`): a tiny base model that learned to reason -> RPT shards -> the base's
# pass rates on the training positions (the gates) -> RPT with the `think` template -> a compute-matched
# next-token baseline -> evaluation with intervals, by entropy bucket and by span class. Every artifact
# lands under $RUN; finished steps are skipped (or resumed) on a rerun.
#
# The corpus is arithmetic drills (one +, - or x each): the base pretrains on drills of which a share
# THINK_FRACTION are demonstrations whose worked thought starts before the result or inside it (so a
# thought can help at any digit of a result); RPT trains on positions outside the problem statements
# (MIN_CONTEXT tokens of context: a drill's statement is shorter, and its operand digits are random, so no
# thought can predict them), while the held-out evaluation keeps every position of the held-out documents,
# by entropy bucket, as the build chooses them. SEED is the RL step's seed: SEED=1 writes rpt-seed1,
# cpt-seed1 and eval-seed1 beside the seed-0 run and reuses its base, shards and gates.
set -euo pipefail
RUN=${RUN:-runs/demo}
RECIPE=${RECIPE:-pipelines/tiny-cpu.toml}
BIN=${BIN:-.venv/bin}
PRETRAIN_DOCS=${PRETRAIN_DOCS:-20000}
RPT_DOCS=${RPT_DOCS:-3000}
THINK_FRACTION=${THINK_FRACTION:-0.5}
MIN_CONTEXT=${MIN_CONTEXT:-13}
SEED=${SEED:-0}
SFX=""
[ "$SEED" = 0 ] || SFX="-seed$SEED"
mkdir -p "$RUN"
t0=$(date +%s)
step() { printf '\n== [%s] %s  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - t0 ))"; }

step 1/8 "corpora: $PRETRAIN_DOCS arithmetic drills for pretraining (seed 1; a share $THINK_FRACTION worked out in thoughts that start before or inside the result) and $RPT_DOCS plain drills for RPT (seed 0)"
[ -s "$RUN/pretrain.jsonl" ] || "$BIN/rpt-data" generate --drills-only --n "$PRETRAIN_DOCS" --seed 1 \
  --think-fraction "$THINK_FRACTION" --think-results 1.0 --out "$RUN/pretrain.jsonl" --quiet
[ -s "$RUN/corpus.jsonl" ] || "$BIN/rpt-data" generate --drills-only --n "$RPT_DOCS" --seed 0 \
  --out "$RUN/corpus.jsonl" --quiet

step 2/8 "byte-level BPE tokenizer with Qwen's pre-tokenizer rules (<think> and </think> are single tokens)"
[ -s "$RUN/tokenizer/tokenizer.json" ] || "$BIN/rpt-data" tokenizer train "$RUN/pretrain.jsonl" --config "$RECIPE" --out "$RUN/tokenizer"

step 3/8 "next-token pretraining of the tiny Qwen3 base (proxy and initial policy; it has seen worked thoughts)"
[ -s "$RUN/base/model.safetensors" ] || "$BIN/rpt-train" pretrain "$RUN/pretrain.jsonl" --config "$RECIPE" --tokenizer "$RUN/tokenizer" --out "$RUN/base"

step 4/8 "rpt-data build: proxy top-16 entropy, positions with entropy >= threshold; shards/ (held-out documents in val/: every position, for evaluation) and shards-rl/ (training positions with >= $MIN_CONTEXT context tokens: outside the problem statements)"
[ -s "$RUN/shards/manifest.json" ] || "$BIN/rpt-data" build --config "$RECIPE" --dataset "$RUN/corpus.jsonl" --proxy-model "$RUN/base" --out "$RUN/shards"
[ -s "$RUN/shards-rl/manifest.json" ] || "$BIN/rpt-data" build --config "$RECIPE" --dataset "$RUN/corpus.jsonl" --proxy-model "$RUN/base" \
  --out "$RUN/shards-rl" --min-context-tokens "$MIN_CONTEXT"

step 5/8 "gates before RL: the base on a sample of the training positions RL will use (next token, greedy reasoning, k sampled rollouts; rpt-train passrate)"
"$BIN/rpt-train" passrate "$RUN/shards-rl" --config "$RECIPE" --model "$RUN/base" --out "$RUN/passrates"

step 6/8 "rpt-train run (seed $SEED): RPT (think, then predict; prefix reward; GRPO) on shards-rl/train"
"$BIN/rpt-train" run "$RUN/shards-rl" --config "$RECIPE" --model "$RUN/base" --out "$RUN/rpt$SFX" --seed "$SEED" --resume

step 7/8 "compute-matched baseline: next-token training of the base on the same training documents, same FLOPs"
[ -s "$RUN/cpt$SFX/model.safetensors" ] || "$BIN/rpt-train" pretrain "$RUN/corpus.jsonl" --config "$RECIPE" \
  --init "$RUN/base" --exclude-val "$RUN/shards" --match-flops "$RUN/rpt$SFX" --out "$RUN/cpt$SFX" \
  --lr "${CPT_LR:-3e-4}" --warmup-steps 0 --min-lr-ratio 1.0

step 8/8 "evaluation on the held-out documents (every position, by entropy bucket): base, compute-matched baseline and every RPT checkpoint"
# Another seed reuses the seed-0 evaluation's verdicts for the base (the cache checks the settings).
if [ -n "$SFX" ] && [ ! -e "$RUN/eval$SFX/eval_cache.json" ] && [ -s "$RUN/eval/eval_cache.json" ]; then
  mkdir -p "$RUN/eval$SFX" && cp "$RUN/eval/eval_cache.json" "$RUN/eval$SFX/eval_cache.json"
fi
"$BIN/rpt-train" eval "$RUN/shards" --config "$RECIPE" --base "$RUN/base" --cpt "$RUN/cpt$SFX" --run "$RUN/rpt$SFX" --out "$RUN/eval$SFX"

printf '\ndemo finished in %ss; artifacts under %s (table: %s/eval%s/eval.json, plot: %s/eval%s/eval.png)\n' \
  "$(( $(date +%s) - t0 ))" "$RUN" "$RUN" "$SFX" "$RUN" "$SFX"
