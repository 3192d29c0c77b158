"""The whole demo pipeline (pipelines/demo.sh) on a micro recipe: every step runs and the table appears.

This is `make demo` with smaller numbers (tests/pipelines/micro.toml), so CI checks that the README's main
command works end to end: generate -> tokenizer -> pretrain -> build -> GRPO -> eval.
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
    for step in range(1, 7):
        assert f"== [{step}/6]" in out
    assert "easy >=0.5" in out and "medium >=1.0" in out and "hard >=1.5" in out
    report = json.loads((run / "eval" / "eval.json").read_text())
    labels = [r["label"] for r in report["results"]]
    assert labels[0] == "base" and "step 2" in labels and "step 4" in labels
    for result in report["results"]:
        for mode in ("ntp", "reasoning"):
            for cell in result["scores"][mode].values():
                assert 0 <= cell["correct"] <= cell["total"]
    assert (run / "eval" / "eval.png").stat().st_size > 0
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["positions_kept"]["train"] > 0

    # A second run skips or resumes every step and leaves the results as they were.
    again = subprocess.run(
        ["bash", str(REPO / "pipelines" / "demo.sh")], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert json.loads((run / "eval" / "eval.json").read_text())["results"] == report["results"]
