"""The whole demo pipeline (pipelines/demo.sh) on a micro recipe: every step runs and the table appears.

This is `make demo` with smaller numbers (tests/pipelines/micro.toml), so CI checks that the README's main
command works end to end: generate (with reasoning demonstrations) -> tokenizer -> pretrain -> build ->
RPT with the think template -> compute-matched baseline -> eval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_pipeline_end_to_end(tmp_path):
    run = tmp_path / "run"
    env = {
        **os.environ,
        "RUN": str(run),
        "RECIPE": str(REPO / "tests" / "pipelines" / "micro.toml"),
        "BIN": str(Path(sys.executable).parent),
        "PRETRAIN_DOCS": "300",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "pipelines" / "demo.sh")], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for step in range(1, 8):
        assert f"== [{step}/7]" in out
    assert "easy >=0.5" in out and "medium >=1.0" in out and "hard >=1.5" in out
    assert "<think>" in (run / "pretrain.jsonl").read_text()
    table = json.loads((run / "eval" / "eval.json").read_text())
    assert list(dict.fromkeys(r["model"] for r in table)) == ["base", "cpt", "step 2", "rpt"]
    assert {r["mode"] for r in table} == {"ntp", "reasoning"}
    for row in table:
        assert 0 <= row["correct"] <= row["n"]
    flops = {r["model"]: r["flops"] for r in table}
    assert flops["base"] == 0 and flops["rpt"] > flops["step 2"] > 0
    assert abs(flops["cpt"] - flops["rpt"]) <= 0.5 * flops["rpt"]  # matched to within one pretraining step
    assert (run / "eval" / "eval.png").stat().st_size > 0
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["positions_kept"]["train"] > 0

    # A second run skips or resumes every step and leaves the results as they were.
    again = subprocess.run(
        ["bash", str(REPO / "pipelines" / "demo.sh")], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert json.loads((run / "eval" / "eval.json").read_text()) == table
