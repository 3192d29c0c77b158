"""The whole demo pipeline (pipelines/demo.sh, then demo-rlp.sh) on a micro recipe: every step runs and
the tables appear.

This is `make demo` with smaller numbers (tests/integration/pipelines/micro.toml), so CI checks that the
README's main command works end to end: generate (with reasoning demonstrations) -> tokenizer -> pretrain ->
build -> the base's pass rates on training positions (the gates) -> RPT with the think template ->
compute-matched baseline -> eval (by bucket and by span class); then `make demo-rlp` (RLP from the same
base on the same shards at the RPT run's compute, evaluated beside it) and RLP on shards that keep every
position (RLP needs no entropy filter and no verifier).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "tests" / "integration" / "pipelines" / "micro.toml"
BIN = Path(sys.executable).parent


def run_script(script: str, run: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUN": str(run), "RECIPE": str(RECIPE), "BIN": str(BIN), "PRETRAIN_DOCS": "300"}
    return subprocess.run(
        ["bash", str(REPO / "pipelines" / script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("demo") / "run"
    proc = run_script("demo.sh", run)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return run, out


def test_demo_pipeline_end_to_end(demo):
    run, out = demo
    for step in range(1, 9):
        assert f"== [{step}/8]" in out
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
    # The gates before RL: the base's pass rates on at most 20 training positions, printed and written.
    assert "pass rates before RL" in out and "pass@4" in out
    gates = json.loads((run / "passrates" / "passrate_summary.json").read_text())
    assert gates["split"] == "train" and 0 < gates["positions"] <= 20 and gates["k"] == 4
    assert all(0 <= gates["groups"]["all"][m] <= 1 for m in ("ntp", "p_true", "greedy", "pass1", "passk"))
    assert gates["groups"]["all"]["pass1"] <= gates["groups"]["all"]["passk"]
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["positions_kept"]["train"] > 0

    # Accuracy by span class: the build counts kept rows per class, eval.json adds class rows after the
    # bucket rows, and the console shows the hard bucket by class.
    by_class = manifest["counts"]["positions_kept_by_class"]["train"]
    assert sum(by_class.values()) == manifest["counts"]["positions_kept"]["train"] and "given" in by_class
    assert "train positions kept by class: given=" in out
    buckets = [r for r in table if "class" not in r]
    assert len(buckets) == 4 * 2 * 3 and table[: len(buckets)] == buckets  # 4 models, 2 modes, 3 buckets
    classes = [r for r in table[len(buckets) :] if "class" in r]
    assert len(classes) == len(table) - len(buckets) > 0
    assert {r["class"] for r in classes} <= {"given", "computed_op", "computed", "text"}
    assert {(r["model"], r["mode"], r["bucket"]) for r in classes} == {
        (r["model"], r["mode"], r["bucket"]) for r in buckets
    }
    assert "hard bucket (entropy >= 1.5) by where the position sits" in out

    # A second run skips or resumes every step and leaves the results as they were.
    again = run_script("demo.sh", run)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert json.loads((run / "eval" / "eval.json").read_text()) == table


def test_demo_rlp_trains_rlp_to_the_rpt_runs_compute_and_evaluates_it_beside_rpt(demo):
    run, _ = demo
    proc = run_script("demo-rlp.sh", run)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "difference rlp - rpt" in proc.stdout
    table = json.loads((run / "eval-rlp" / "eval.json").read_text())
    flops = {r["model"]: r["flops"] for r in table}
    assert {"base", "cpt", "rpt", "rlp"} <= flops.keys()
    assert flops["rpt"] <= flops["rlp"] < 2 * flops["rpt"]  # stopped at the first step past RPT's compute
    summary = json.loads((run / "eval-rlp" / "eval_summary.json").read_text())
    cells = summary["vs_rpt"]["rlp"]
    assert set(cells) == {f"{m}/{b}" for m in ("ntp", "reasoning") for b in ("easy", "medium", "hard")}


def test_rlp_runs_on_shards_that_keep_every_position(demo, tmp_path):
    """RLP's reward is dense: shards built with --entropy-threshold 0 (every position) train as well."""
    run, _ = demo
    shards, out = tmp_path / "all", tmp_path / "rlp"
    build = [str(BIN / "rpt-data"), "build", "--config", str(RECIPE), "--dataset", "data/synthmath.jsonl",
             "--proxy-model", str(run / "base"), "--out", str(shards), "--entropy-threshold", "0",
             "--quiet"]  # fmt: skip
    proc = subprocess.run(build, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads((shards / "manifest.json").read_text())["counts"]
    assert counts["positions_kept"]["train"] == counts["positions_scored"]["train"] > 0
    train = [str(BIN / "rpt-train"), "run", str(shards), "--config", str(RECIPE), "--model",
             str(run / "base"), "--out", str(out), "--objective", "rlp", "--max-steps", "2",
             "--quiet"]  # fmt: skip
    proc = subprocess.run(train, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("info_gain_mean" in r for r in rows)
