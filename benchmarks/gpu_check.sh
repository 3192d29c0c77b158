#!/usr/bin/env bash
# The prepared first GPU run: the CUDA tests, then rollout / update throughput on a Qwen3-0.6B shape, then
# one summary table. At most 8 minutes on one H100 / H200 (each part has its own time limit, every part
# leaves its results even if another fails or times out, and summary.md is always written).
#
#   PYTHONPATH=. bash benchmarks/gpu_check.sh        # from the repository root; no install step
#   make gpu-check                                   # the same
#
# Needs python3 with torch (CUDA), transformers, pytest, pyarrow, tokenizers, safetensors, click; never
# polars, datasets or the network. Writes gpu_check.log, gpu_tests.xml, gpu_tests.jsonl, throughput.json
# and summary.md under $OUT when it is set, else under runs/gpu_check/. Without a GPU the tests are skipped;
# GPU_CHECK_ARGS=--quick runs the throughput part at toy sizes (that is how its CPU side is checked).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DIR="${OUT:-runs/gpu_check}"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PY="${PYTHON:-python3}"
# 190 + 230 + 30 s, each killed 10 s after its limit if it ignores SIGTERM: <= 8 minutes in all.
TESTS_LIMIT="${GPU_CHECK_TESTS_S:-190}"
BENCH_LIMIT="${GPU_CHECK_BENCH_S:-230}"
rm -f "$DIR/gpu_tests.jsonl" "$DIR/gpu_tests.xml" "$DIR/throughput.json" "$DIR/summary.md"

{
  echo "== gpu_check: $(date -u +%FT%TZ) on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 || true
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"

  echo "== 1. tests marked gpu (limit ${TESTS_LIMIT}s)"
  RPT_GPU_REPORT="$DIR/gpu_tests.jsonl" timeout -k 10 "$TESTS_LIMIT" "$PY" -m pytest tests/integration/test_gpu.py \
    -m gpu -p no:cacheprovider -o addopts= -q -rfE -s --junitxml="$DIR/gpu_tests.xml"
  echo "(tests exit status $?)"

  echo "== 2. throughput on a Qwen3-0.6B shape (limit ${BENCH_LIMIT}s)"
  timeout -k 10 "$BENCH_LIMIT" "$PY" benchmarks/gpu_check.py --out "$DIR" ${GPU_CHECK_ARGS:-}
  echo "(throughput exit status $?)"

  echo "== summary"
  # summary.md is always written: by the table builder, or by this line when the builder itself fails.
  if ! timeout -k 5 30 "$PY" benchmarks/gpu_check.py --summary "$DIR"; then
    printf '| check | result |\n|---|---|\n| summary | the table could not be built: see gpu_check.log and throughput.json |\n' \
      | tee "$DIR/summary.md"
  fi
} 2>&1 | tee "$DIR/gpu_check.log"
