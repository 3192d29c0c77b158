"""SIGTERM, as Slurm and Kubernetes stop a job: ``rpt-train run`` (and ``pretrain``) finish the step, save a
checkpoint, say so in one line and exit 143; ``--resume`` then continues to the same bytes as a run that
was never stopped."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from rpt_train.rl.checkpoint import latest_checkpoint, load_trainer_state
from rpt_train.rl.trainer import Trainer
from tests.rpt_train.rl.test_run_guards import (
    config,
    logged_steps,
    processes,
    start_run,
    task,
    wait_for_steps,
)

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["processes", "task"]  # fixtures, used by name


def test_sigterm_saves_a_checkpoint_that_resumes_to_the_same_bytes(task, tmp_path, processes):
    out = tmp_path / "stopped"
    proc = start_run(task, out)  # --max-steps 100000: only the signal stops it
    processes.append(proc)
    wait_for_steps(out, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    ckpt = latest_checkpoint(out)
    k = int(ckpt.name.removeprefix("step-"))
    assert stdout == f"terminated: {k} steps; checkpoint {ckpt} (continue it with --resume)\n"
    assert "SIGTERM: finishing this step, then saving a checkpoint" in stderr and "Traceback" not in stderr
    resumed = Trainer(config(task, out, resume=True, max_steps=k + 2)).train()
    straight = Trainer(config(task, tmp_path / "straight", max_steps=k + 2)).train()
    assert resumed.step == straight.step == k + 2
    model = "model.safetensors"
    assert (resumed.checkpoint / model).read_bytes() == (straight.checkpoint / model).read_bytes()
    a, b = load_trainer_state(resumed.checkpoint), load_trainer_state(straight.checkpoint)
    assert a["step"] == b["step"] and a["ranks"][0]["stream"] == b["ranks"][0]["stream"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[key], sb[key]) for key in sa)
    assert logged_steps(out) == list(range(1, k + 3))
    rewards = [(m["step"], m["reward"]) for m in map(json.loads, (out / "metrics.jsonl").open())]
    assert rewards == [
        (m["step"], m["reward"]) for m in map(json.loads, (tmp_path / "straight" / "metrics.jsonl").open())
    ]
