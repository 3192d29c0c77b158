"""What ``rpt-train run`` refuses or says so that nothing is silently wrong: resumed settings that cannot
change, settings that train nothing, a tokenizer that is not the model's, shards it cannot check, and
the exit status and the lock that let scripts and a second command tell what happened."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rpt_core.runtime.config import flat_fields
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.cli.run import run
from rpt_train.rl.checkpoint import RUN_CONFIG, latest_checkpoint
from rpt_train.rl.config import RESUMABLE, TrainConfig
from rpt_train.rl.grpo import ADVANTAGES, silent_with_one_completion
from rpt_train.rl.trainer import Trainer
from tests.helpers import (
    LETTERS,
    corrupt_data_pages,
    letters_bpe,
    save_model_dir,
    tiny_tokenizer,
    write_task_shards,
)
from tests.helpers.runs import task_config

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    tok = tiny_tokenizer()
    return {
        "tok": tok,
        "root": root,
        "shards": write_task_shards(root / "shards", tok),
        "model": save_model_dir(root / "model", tok),
    }


def config(task, out, **kw) -> TrainConfig:
    small = dict(batch_size=2, num_generations=2, micro_batch_size=4)
    return task_config(task["shards"], task["model"], out, **{**small, **kw})


def cli_args(task, out, *extra) -> list[str]:
    """``config(task, out)`` as options, then ``extra``."""
    return [
        str(task["shards"]),
        "--model",
        str(task["model"]),
        "--out",
        str(out),
        "--template",
        "plain",
        "--max-steps",
        "2",
        "--lr",
        "1e-2",
        "--warmup-steps",
        "0",
        "--batch-size",
        "2",
        "--num-generations",
        "2",
        "--micro-batch-size",
        "4",
        "--temperature",
        "1.0",
        "--save-every",
        "0",
        "--sample-every",
        "0",
        "--quiet",
        *extra,
    ]


# ---- resume: every difference applied and recorded, or refused ---------------------------------------


def test_resume_refuses_settings_that_cannot_change_and_lists_them(task, tmp_path):
    Trainer(config(task, tmp_path / "run")).train()
    with pytest.raises(RptError) as e:
        Trainer(config(task, tmp_path / "run", resume=True, lr=5e-3, seed=1))
    assert str(e.value).startswith("--resume: settings that cannot change mid-run differ from the saved run")
    assert "): lr: 0.01 -> 0.005, seed: 0 -> 1; resume with the saved values" in str(e.value)
    result = CliRunner().invoke(run, cli_args(task, tmp_path / "run", "--resume", "--lr", "5e-3"))
    assert result.exit_code == 1 and result.stderr.startswith("error: --resume: settings that cannot change")
    assert "): lr: 0.01 -> 0.005; resume" in result.stderr and result.stderr.count("\n") == 1


def test_resume_applies_and_records_settings_that_may_change(task, tmp_path):
    Trainer(config(task, tmp_path / "run")).train()
    resumed = Trainer(config(task, tmp_path / "run", resume=True, max_steps=3, keep_last=1, save_every=3))
    result = resumed.train()
    assert result.step == 3
    for path in (tmp_path / "run" / RUN_CONFIG, result.checkpoint / RUN_CONFIG):
        saved = json.loads(path.read_text())
        assert (saved["max_steps"], saved["keep_last"], saved["save_every"], saved["lr"]) == (3, 1, 3, 1e-2)


def test_resume_compares_paths_as_the_files_they_name(task, tmp_path, monkeypatch):
    Trainer(config(task, tmp_path / "run")).train()
    monkeypatch.chdir(task["shards"].parent)
    Trainer(config(task, tmp_path / "run", resume=True, shards="shards/", max_steps=3)).train()  # no refusal


def logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_without_a_checkpoint_starts_fresh_or_refuses_and_steps_never_go_back(task, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(config(task, out, resume=True)).train()  # nothing there yet: a fresh start, said in one line
    assert capsys.readouterr().err == f"warning: --resume: no checkpoint in {out}; starting fresh at step 0\n"
    for state in out.glob("checkpoints/step-*/trainer_state.pt"):  # every loadable state gone (a crash)
        state.unlink()
    with pytest.raises(RptError, match=r"^--resume: .* logged steps up to 2 but holds no loadable"):
        Trainer(config(task, out, resume=True))
    Trainer(config(task, out, max_steps=3)).train()  # started over: the earlier attempt's lines are dropped
    assert "dropped 2 lines of an earlier attempt" in capsys.readouterr().err
    assert logged_steps(out) == [1, 2, 3]


def test_every_resumable_setting_is_a_train_option():
    fields = set(flat_fields(TrainConfig))
    assert RESUMABLE <= fields and {"lr", "seed", "model", "shards", "template"}.isdisjoint(RESUMABLE)


def test_a_sampler_state_of_another_device_type_is_refused(task, tmp_path):
    tr = Trainer(config(task, tmp_path / "run"))
    state = copy.deepcopy(tr.state_dict())
    state["ranks"][0]["sampler"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA generator's state
    with pytest.raises(RptError, match="sampler state was saved on another kind of device"):
        tr.load_state_dict(state)


# ---- settings that would train nothing --------------------------------------------------------------


def test_estimators_that_are_zero_for_one_completion():
    assert {k for k in ADVANTAGES if silent_with_one_completion(k)} == {
        "group",
        "mean",
        "leave-one-out",
    }  # RLP's too: no other sample to leave out


@pytest.mark.parametrize("advantage", ["group", "mean"])
def test_one_generation_with_a_group_relative_advantage_is_refused(task, tmp_path, advantage):
    with pytest.raises(
        RptError, match=rf"--num-generations 1 with --advantage {advantage}: .* every advantage is 0"
    ):
        config(task, tmp_path / "run", num_generations=1, advantage=advantage)
    config(task, tmp_path / "run", num_generations=1, advantage="anchor")  # anchor still learns
    with pytest.raises(RptError, match="--dynamic-sampling .* needs --num-generations >= 2"):
        config(task, tmp_path / "run", num_generations=1, advantage="anchor", dynamic_sampling=True)


def test_top_k_beyond_the_vocabulary_is_refused(task, tmp_path):
    with pytest.raises(RptError, match=r"--top-k 100 is larger than the policy's vocabulary \(18\)"):
        Trainer(config(task, tmp_path / "run", top_k=100))


# ---- what run says instead of skipping silently -----------------------------------------------------


def test_val_every_without_a_val_split_is_said_once(task, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(task["shards"], shards)
    shutil.rmtree(shards / "val")
    Trainer(config(task, tmp_path / "run", shards=str(shards), val_every=1)).train()
    err = capsys.readouterr().err
    assert err.count("warning: --val-every 1: ") == 1 and "has no val/ shards; validation is off" in err


def test_shards_without_a_manifest_are_said_once(task, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(task["shards"], shards)
    (shards / "manifest.json").unlink()
    Trainer(config(task, tmp_path / "run", shards=str(shards), val_every=1)).train()
    assert capsys.readouterr().err.count("has no manifest.json: the shards' tokenizer and checksums") == 1


def other_vocab_tokenizer() -> Tokenizer:
    """The task tokenizer's characters and size with its merges' ids in another order: a different base
    vocabulary (labels on other ids) that the model's embedding table could still index."""
    return Tokenizer(letters_bpe(LETTERS[::-1]))


def test_a_tokenizer_that_is_not_the_models_is_refused(task, tmp_path):
    other = other_vocab_tokenizer().save(tmp_path / "other")
    shards = write_task_shards(tmp_path / "shards", task["tok"], n_train=8, n_val=2, fingerprint="")
    with pytest.raises(
        RptError, match=rf"tokenizer {other} has a different base vocabulary from the policy .*'s own"
    ):
        Trainer(config(task, tmp_path / "run", shards=str(shards), tokenizer=str(other)))
    same = task["tok"].save(tmp_path / "copy")  # the model's own vocabulary from another file is fine
    Trainer(config(task, tmp_path / "run2", tokenizer=str(same)))


def test_a_shard_that_differs_from_the_manifest_stops_the_run_before_training(task, tmp_path):
    from rpt_core.data import shards as S
    from rpt_core.data.shards import Manifest, shard_paths
    from rpt_core.runtime.files import sha256_file

    shards = tmp_path / "shards"
    shutil.copytree(task["shards"], shards)
    paths = shard_paths(shards, "train")
    entries = [
        {"path": p.relative_to(shards).as_posix(), "split": "train", "sha256": sha256_file(p)} for p in paths
    ]
    manifest = Manifest.read(shards)
    manifest.shards = entries
    manifest.write(shards)
    corrupt_data_pages(paths[1])
    with pytest.raises(RptError, match=rf"^{paths[1]}: its sha256 differs from the one"):
        Trainer(config(task, tmp_path / "run", shards=str(shards)))
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and S.check_schema(paths[1])


# ---- exit status and the lock, in real processes ----------------------------------------------------


def start_run(task, out, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = cli_args(task, out, "--max-steps", "100000", *extra)
    cmd = [sys.executable, "-m", "rpt_train.cli", "run", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_steps(out: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run logged no step: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


@pytest.fixture
def processes():
    """Started runs; any still running when the test ends (a failure) is killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_ctrl_c_saves_then_exits_130(task, tmp_path, processes):
    out = tmp_path / "run"
    proc = start_run(task, out)
    processes.append(proc)
    wait_for_steps(out, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert stdout.startswith("interrupted: ") and latest_checkpoint(out) is not None


def test_two_runs_started_together_on_one_out(task, tmp_path, processes):
    out = tmp_path / "run"
    processes += [start_run(task, out) for _ in range(2)]
    deadline = time.monotonic() + 120
    while all(p.poll() is None for p in processes):
        assert time.monotonic() < deadline, "neither run stopped: both are writing into one --out"
        time.sleep(0.2)
    loser, winner = sorted(processes, key=lambda p: p.poll() is None)
    _, loser_err = loser.communicate()
    wait_for_steps(out, winner)
    winner.send_signal(signal.SIGINT)
    winner.communicate(timeout=120)
    assert loser.returncode == 1 and winner.returncode == 130
    assert loser_err.startswith(f"error: {out} is in use by rpt-train run (pid {winner.pid} ")
    assert loser_err.count("\n") == 1
    steps = logged_steps(out)
    assert steps == list(range(1, len(steps) + 1))  # one run's lines, none interleaved
