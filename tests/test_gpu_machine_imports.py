"""A GPU machine has torch, transformers, pyarrow, tokenizers, safetensors, click and pytest, but neither
polars nor datasets: everything the GPU check runs, and both CLIs, must import without them."""

from __future__ import annotations

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
