"""SIGTERM, as Slurm and Kubernetes stop a job: ``rpt-train run`` (and ``pretrain``) finish the step, save a
checkpoint, say so in one line and exit 143; ``--resume`` then continues to the same bytes as a run that
was never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rpt_core.runtime.errors import RptError
from rpt_train.pretrain import PretrainConfig, checkpoint_to_resume, pretrain
from rpt_train.rl.checkpoint import latest_checkpoint, load_trainer_state
from rpt_train.rl.trainer import Trainer
from tests.rpt_train.rl.test_run_guards import (
    REPO,
    config,
    logged_steps,
    processes,
    start_run,
    task,
    wait_for_steps,
)
from tests.rpt_train.test_pretrain import micro

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["micro", "processes", "task"]  # fixtures, used by name


def terminate(proc: subprocess.Popen, out: Path) -> tuple[Path, int, str]:
    """SIGTERM a running command: it exits 143 and names the checkpoint it saved in one line; returns that
    checkpoint, its step and the command's stderr."""
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    ckpt = latest_checkpoint(out)
    k = int(ckpt.name.removeprefix("step-"))
    assert stdout == f"terminated: {k} steps; checkpoint {ckpt} (continue it with --resume)\n"
    return ckpt, k, stderr


def test_sigterm_saves_a_checkpoint_that_resumes_to_the_same_bytes(task, tmp_path, processes):
    out = tmp_path / "stopped"
    proc = start_run(task, out)  # --max-steps 100000: only the signal stops it
    processes.append(proc)
    wait_for_steps(out, proc)
    ckpt, k, stderr = terminate(proc, out)
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


# ---- rpt-train pretrain -----------------------------------------------------------------------------


def pretrain_args(micro, out) -> list[str]:
    return [
        micro["corpus"],
        "--tokenizer",
        micro["tokenizer"],
        "--out",
        str(out),
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "100000",
        "--eval-every",
        "4",
        "--device",
        "cpu",
        "--no-bf16-autocast",
        "--quiet",
    ]


def after_calls(n: int):
    """A ``stop`` that turns true at its n-th call (pretrain calls it once per step)."""
    calls = iter(range(n, 0, -1))
    return lambda: next(calls) == 1


def test_pretrain_sigterm_then_resume_continues_to_the_same_bytes(micro, tmp_path, processes):
    out = tmp_path / "stopped"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rpt_train.cli", "pretrain", *pretrain_args(micro, out), "--save-every", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    processes.append(proc)
    deadline = time.monotonic() + 120
    while latest_checkpoint(out) is None:  # a step was trained and saved: stop it mid-run
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    ckpt, k, _ = terminate(proc, out)
    assert not (out / "model.safetensors").exists()  # a stopped pretraining leaves no final model
    with pytest.raises(RptError, match="holds a pretraining checkpoint .*; pass --resume"):
        pretrain(pretrain_config(micro, out))
    with pytest.raises(RptError, match=r"--resume: settings differ .*: lr: 0.003 -> 0.001"):
        pretrain(pretrain_config(micro, out, resume=True, lr=1e-3))
    resumed = pretrain(pretrain_config(micro, out, resume=True), stop=after_calls(5))
    straight = pretrain(pretrain_config(micro, tmp_path / "straight"), stop=after_calls(k + 5))
    assert resumed["stopped"]["step"] == straight["stopped"]["step"] == k + 5
    a, b = Path(resumed["stopped"]["checkpoint"]), Path(straight["stopped"]["checkpoint"])
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    sa, sb = load_trainer_state(a), load_trainer_state(b)
    assert sa["history"] == sb["history"] and sa["sampler"] == sb["sampler"]
    for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(x[key], y[key]) for key in x)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [h["step"] for h in sa["history"]]


def pretrain_config(micro, out, **kw) -> PretrainConfig:
    base = dict(
        corpus=[micro["corpus"]],
        tokenizer=micro["tokenizer"],
        out=str(out),
        seq_len=32,
        batch_size=2,
        max_steps=100000,
        eval_every=4,
        device="cpu",
        bf16_autocast=False,
        quiet=True,
    )
    return PretrainConfig(**{**base, **kw})


def test_pretrain_resume_without_a_checkpoint_starts_fresh_or_refuses(tmp_path, capsys):
    out = tmp_path / "p"
    assert checkpoint_to_resume(PretrainConfig(corpus=["c"], out=str(out), resume=True)) is None
    assert capsys.readouterr().err == f"warning: --resume: no checkpoint in {out}; starting fresh at step 0\n"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 100, "train_loss": 2.0}\n')  # killed before any save
    with pytest.raises(RptError, match=rf"^--resume: {out} logged steps up to 100 but holds no loadable"):
        checkpoint_to_resume(PretrainConfig(corpus=["c"], out=str(out), resume=True))
