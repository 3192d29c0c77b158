"""pipelines/demo-rlp.sh (`make demo-rlp`) on a tiny finished demo: RLP trains from the demo's base on its
shards up to the RPT run's compute, and one evaluation holds base, rpt and rlp; a rerun changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rpt_train.cli import main
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.trainer import Trainer
from tests.helpers import save_model_dir, think_copy_model, tiny_tokenizer, write_task_shards

REPO = Path(__file__).resolve().parents[2]
RECIPE = """
[train]
template = "think"
answer_tokens = 1
max_new_tokens = 3
num_generations = 4
batch_size = 4
micro_batch_size = 16
temperature = 1.0
lr = 3e-3
warmup_steps = 0
save_every = 2
keep_last = 10
sample_every = 0

[eval]
modes = ["ntp", "reasoning"]
max_samples = 12
batch_size = 16
"""


def demo_rlp(run: Path, recipe: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "RUN": str(run),
        "RECIPE": str(recipe),
        "BIN": str(Path(sys.executable).parent),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        ["bash", str(REPO / "pipelines" / "demo-rlp.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def finished_demo(tmp_path):
    """What `make demo` leaves for RLP: RUN/base, RUN/shards, a finished RPT run (RUN/rpt) and its
    evaluation (RUN/eval)."""
    run, tok = tmp_path / "run", tiny_tokenizer(think=True)
    with torch.random.fork_rng():
        save_model_dir(run / "base", tok, model=think_copy_model(tok, steps=100))
    write_task_shards(run / "shards", tok, n_train=64, n_val=16, repeat=True)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    cfg = TrainConfig.from_flat(
        shards=str(run / "shards"),
        model=str(run / "base"),
        out=str(run / "rpt"),
        max_steps=4,
        template="think",
        max_new_tokens=3,
        num_generations=4,
        batch_size=4,
        micro_batch_size=16,
        lr=3e-3,
        warmup_steps=0,
        save_every=2,
        quiet=True,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg).train()
    finally:
        torch.set_num_threads(before)
    args = ["eval", str(run / "shards"), "--config", str(recipe), "--base", str(run / "base"), "--run",
            str(run / "rpt"), "--out", str(run / "eval"), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return run, recipe


def test_demo_rlp_matches_compute_and_evaluates_both_runs(finished_demo):
    run, recipe = finished_demo
    proc = demo_rlp(run, recipe)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "== [1/2]" in out and "== [2/2]" in out and "max_flops" in out
    lines = proc.stdout.splitlines()
    evaluated = [line[10 : line.index(" (")] for line in lines if line.startswith("evaluated ")]
    assert evaluated and all(e.startswith("rlp") for e in evaluated), evaluated  # base, rpt: make demo's
    table = json.loads((run / "eval-rlp" / "eval.json").read_text())
    models = list(dict.fromkeys(r["model"] for r in table))
    assert models[:3] == ["base", "step 2", "rpt"] and models[-1] == "rlp"
    assert models[3].startswith("rlp step")  # RLP's earlier checkpoints are evaluated too
    flops = {r["model"]: r["flops"] for r in table}
    steps = [json.loads(line) for line in (run / "rlp" / "metrics.jsonl").read_text().splitlines()]
    # RLP stopped at the first step that reached the RPT run's compute.
    assert steps[-2]["train_flops"] < flops["rpt"] <= flops["rlp"] == steps[-1]["train_flops"]
    assert {r["mode"] for r in table} == {"ntp", "reasoning"}
    assert all(r["diff_vs_base_ntp"] is not None for r in table if r["model"] == "rlp" and r["n"])
    config = json.loads((run / "rlp" / "run_config.json").read_text())
    assert (config["objective"], config["template"], config["max_new_tokens"]) == ("rlp", "think", 3)

    again = demo_rlp(run, recipe)  # finished: the run stops at once and the evaluation is cached
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert json.loads((run / "eval-rlp" / "eval.json").read_text()) == table


def test_demo_rlp_needs_a_finished_demo(tmp_path):
    proc = demo_rlp(tmp_path / "nothing", tmp_path / "recipe.toml")
    assert proc.returncode == 1 and "run 'make demo' first" in proc.stderr
