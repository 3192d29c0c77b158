"""A GPU machine has torch, transformers, pyarrow, tokenizers, safetensors, click and pytest, but neither
polars nor datasets: everything the GPU check runs, and both CLIs, must import without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = [
    "rpt_train.cli",
    "rpt_data.cli",
    "rpt_train.rl.trainer",
    "rpt_train.eval.run",
    "tests.integration.test_gpu",
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
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *MODULES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    failed = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert not failed, failed  # parts are guarded: a failure is recorded, not raised
    assert all(results["objective_steps"][o]["seconds_per_step"] > 0 for o in ("rpt", "rlp"))


def test_the_smollm2_gpu_check_skips_with_a_reason_without_its_file_or_gguf(tmp_path, monkeypatch):
    """A GPU machine without network has neither the GGUF nor the ``gguf`` package: a skip, not a failure."""
    import importlib.util

    import pytest

    from tests.integration.test_gpu import smollm2_file

    monkeypatch.setenv("RPT_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(pytest.skip.Exception, match="not found"):
        smollm2_file()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    with pytest.raises(pytest.skip.Exception, match="gguf package"):
        smollm2_file()


def test_a_failing_part_of_the_check_leaves_the_others_and_the_summary(tmp_path):
    """Each throughput part is guarded: a failure is recorded as one line, the next part still runs, and
    the summary table shows both."""
    import torch

    from benchmarks import gpu_check

    results = gpu_check.Results(tmp_path)
    ran = []
    gpu_check.part(results, "rollout_ours_eager", lambda: 1 / 0, torch.device("cpu"))
    gpu_check.part(results, "grpo_update", lambda: ran.append(1), torch.device("cpu"))
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert ran == [1] and saved["rollout_ours_eager"] == {"error": "ZeroDivisionError: division by zero"}
    table = gpu_check.summary(tmp_path)
    assert "| rollout, ours (eager) | ZeroDivisionError: division by zero |" in table
    assert (tmp_path / "summary.md").read_text().strip() == table
