"""A GPU machine has torch, transformers, pyarrow, tokenizers, safetensors, click and pytest, but neither
polars nor datasets: everything the GPU check runs, and both CLIs, must import without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = [
    "rpt_train.cli",
    "rpt_data.cli",
    "rpt_train.rl.trainer",
    "rpt_train.eval.run",
    "tests.rpt_train.test_gpu",
    "benchmarks.gpu_check",
    "benchmarks.rollout_model",
]
BLOCKER = """
import importlib, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("polars", "datasets"):
            raise ImportError(f"{name} is not installed on a GPU machine")

sys.meta_path.insert(0, Blocked())
for module in sys.argv[1:]:
    importlib.import_module(module)
print("imported", len(sys.argv) - 1)
"""


def test_gpu_check_and_clis_import_without_polars_and_datasets():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", BLOCKER, *MODULES], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"imported {len(MODULES)}" in proc.stdout


RUN_BLOCKED = (
    BLOCKER.split("for module in")[0]
    + """
import runpy
sys.argv = ["gpu_check.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
"""
)


def test_the_gpu_checks_throughput_part_runs_at_toy_sizes_without_polars_and_datasets(tmp_path):
    """Its CPU side: every part, including a trainer step of each objective, runs where polars and
    datasets are missing (the first GPU run is not the place to find an import inside a function)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", RUN_BLOCKED, "--out", str(tmp_path), "--quick", "--summary", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "throughput.json").read_text())
    assert {"rollout_ours_eager", "rollout_transformers", "grpo_update"} <= results.keys()
    assert all(results["objective_steps"][o]["seconds_per_step"] > 0 for o in ("rpt", "rlp"))
