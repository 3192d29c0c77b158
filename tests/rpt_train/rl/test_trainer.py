"""The GRPO loop end to end on a tiny synthetic task (CPU, float32): it learns, resumes exactly, keeps
ranks in sync, skips non-finite steps, refuses mismatched shards, and drives the ``run`` CLI."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from rpt_core.runtime.cli import Terminated, stop_signals
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.cli.run import run
from rpt_train.rl import objective_rpt
from rpt_train.rl import trainer as trainer_mod
from rpt_train.rl.checkpoint import latest_checkpoint
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.run_setup import lr_factor
from rpt_train.rl.trainer import Trainer
from tests.helpers import save_model_dir, tiny_tokenizer, write_task_shards
from tests.helpers.launch import TWO_RANKS
from tests.helpers.runs import task_config

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matmuls: threads only add overhead (and the machine is shared).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    tok = tiny_tokenizer()
    return {
        "tok": tok,
        "shards": write_task_shards(root / "shards", tok),
        "model": save_model_dir(root / "model", tok),
    }


def config(task, out, **kw) -> TrainConfig:
    return task_config(task["shards"], task["model"], out, **kw)


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(Path(ckpt) / "model.safetensors"))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_lr_factor_warms_up_linearly_then_stays():
    assert [lr_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0) == 1.0


def test_learns_the_tiny_task(task, tmp_path):
    """The next letter is a fixed permutation of the last one: reward starts near 1/17 and must climb.

    Calibrated over seeds 0-3: first-5-step mean reward 0.05-0.08, last-5 0.76-0.79, final greedy val 1.0.
    """
    cfg = config(
        task,
        tmp_path / "run",
        max_steps=80,
        lr=3e-3,
        batch_size=8,
        num_generations=8,
        micro_batch_size=64,
        val_every=20,
        val_samples=32,
        sample_every=40,
    )
    result = Trainer(cfg).train()
    assert result.step == 80 and result.stopped == "max_steps"
    m = metrics(cfg.io.out)
    first = sum(r["reward"] for r in m[:5]) / 5
    last = sum(r["reward"] for r in m[-5:]) / 5
    val = [r["val_reward"] for r in m if "val_reward" in r]
    assert first < 0.2 and last > 0.5, (first, last)
    assert len(val) == 4 and val[-1] >= 0.8 and val[-1] > val[0], val
    expected = {
        "reward_std",
        "acc",
        "format_fail",
        "frac_zero_std",
        "completion_len_mean",
        "completion_len_max",
        "clip_frac",
        "entropy",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "time_generate",
        "time_score",
        "time_update",
    }
    assert expected <= m[0].keys()
    samples = [json.loads(s) for s in (Path(cfg.io.out) / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {40, 80} and {"prompt", "completion", "reward"} <= samples[
        0
    ].keys()
    run_config = json.loads((Path(cfg.io.out) / "run_config.json").read_text())
    assert run_config["lr"] == 3e-3 and run_config["template"] == "plain"


def test_resume_and_interrupt_are_exact(task, tmp_path, monkeypatch):
    kw = dict(num_iterations=2, warmup_steps=3, dynamic_sampling=True, max_resample_batches=1, lr=3e-3)
    straight = Trainer(config(task, tmp_path / "a", max_steps=4, **kw)).train()

    # 2 steps, then --resume to 4.
    Trainer(config(task, tmp_path / "b", max_steps=2, **kw)).train()
    with pytest.raises(RptError, match="--resume"):
        Trainer(config(task, tmp_path / "b", max_steps=4, **kw))
    resumed = Trainer(config(task, tmp_path / "b", max_steps=4, resume=True, **kw)).train()
    assert resumed.step == 4 and same_weights(straight.checkpoint, resumed.checkpoint)
    steps = [r["step"] for r in metrics(tmp_path / "b")]
    assert steps == [1, 2, 3, 4]
    drop_time = lambda rows: [
        {k: v for k, v in r.items() if not k.startswith(("time", "tokens_per_s"))} for r in rows
    ]  # noqa: E731
    assert drop_time(metrics(tmp_path / "a")) == drop_time(metrics(tmp_path / "b"))

    # A stop request after step 2 (the CLI's first Ctrl-C) saves step 2 and returns.
    c = Trainer(config(task, tmp_path / "c", max_steps=4, **kw))
    res = c.train(stop=lambda: c.step >= 2)
    assert (res.stopped, res.step) == ("interrupted", 2) and res.checkpoint.name == "step-000002"

    # A KeyboardInterrupt in the middle of step 3's rollout saves the state from before step 3.
    d = Trainer(config(task, tmp_path / "d", max_steps=4, **kw))
    real_rollout = trainer_mod.rollout

    def interrupting(*args, **kwargs):
        if d.step == 2:
            raise KeyboardInterrupt
        return real_rollout(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "rollout", interrupting)
    res = d.train()
    assert (res.stopped, res.step) == ("interrupted", 2)
    monkeypatch.setattr(trainer_mod, "rollout", real_rollout)
    res = Trainer(config(task, tmp_path / "d", max_steps=4, resume=True, **kw)).train()
    assert same_weights(straight.checkpoint, res.checkpoint)


def test_state_dict_is_the_whole_resumable_state(task, tmp_path):
    """load_state_dict(state_dict()) in memory continues exactly as the original trainer does."""
    kw = dict(num_iterations=2, dynamic_sampling=True, max_resample_batches=1, lr=3e-3, max_steps=4)
    a = Trainer(config(task, tmp_path / "a", **kw))
    for _ in range(2):
        a.train_step()
    b = Trainer(config(task, tmp_path / "b", **kw))  # fresh weights, optimizer, stream, RNGs
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.step == 2
    for _ in range(2):
        ma, mb = a.train_step(), b.train_step()
        assert ma["loss"] == mb["loss"] and ma["reward"] == mb["reward"]
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_two_ranks_keep_identical_weights(task, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(
        "import hashlib, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from rpt_train.rl.config import TrainConfig\n"
        "from rpt_train.rl.trainer import Trainer\n"
        "cfg = TrainConfig.from_flat(shards=sys.argv[1], model=sys.argv[2], out=sys.argv[3],\n"
        "    template='plain', max_steps=3, lr=1e-2, warmup_steps=0, batch_size=4, num_generations=4,\n"
        "    micro_batch_size=5,\n"
        "    temperature=1.0, quiet=True, save_every=0, dynamic_sampling=True, max_resample_batches=2,\n"
        "    val_every=3, val_samples=8)\n"
        "tr = Trainer(cfg)\n"
        "from rpt_core.data.stream import ShardStream\n"  # the row each rank starts from: they must differ
        "st = ShardStream(tr.stream.paths, 0, cfg.data.shuffle_buffer, tr.rank, tr.world)\n"
        "first = next(iter(st))['doc_id']\n"
        "res = tr.train()\n"
        "h = hashlib.sha256()\n"
        "for k, v in sorted(tr.model.state_dict().items()):\n"
        "    h.update(v.detach().contiguous().numpy().tobytes())\n"
        # One file per rank: two processes printing to one pipe can interleave their lines.
        "open(f'rank{tr.rank}.txt', 'w').write(f'RANK {tr.rank} {h.hexdigest()} {first} {res.step}')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [*TWO_RANKS, str(script), str(task["shards"]), str(task["model"]), str(tmp_path / "out")]
    # A session of its own, so a hang can be ended with every worker torchrun started.
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        cmd, stdout=pipe, stderr=pipe, text=True, env=env, cwd=tmp_path, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    lines = sorted((tmp_path / f"rank{r}.txt").read_text().split() for r in range(2))
    assert [line[1] for line in lines] == ["0", "1"]
    assert lines[0][2] == lines[1][2], "ranks diverged"
    assert lines[0][3] != lines[1][3], "ranks should draw different contexts"
    init = load_file(str(task["model"] / "model.safetensors"))
    final = weights(latest_checkpoint(tmp_path / "out"))
    assert any(not torch.equal(init[k], final[k]) for k in init), "training did not move the weights"
    assert [r["step"] for r in metrics(tmp_path / "out")] == [1, 2, 3]
    assert "val_reward" in metrics(tmp_path / "out")[-1]


def test_non_finite_loss_skips_the_step_and_too_many_stop_the_run(task, tmp_path, monkeypatch):
    real = objective_rpt.grpo_loss
    poison = {"on": False}

    def maybe_nan(*args, **kwargs):
        loss, m = real(*args, **kwargs)
        return (loss * float("nan"), m) if poison["on"] else (loss, m)

    monkeypatch.setattr(objective_rpt, "grpo_loss", maybe_nan)
    tr = Trainer(config(task, tmp_path / "run", max_steps=10, max_bad_steps=2))
    tr.train_step()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    adam_steps = [s["step"].clone() for s in tr.optimizer.state.values()]
    poison["on"] = True
    m = tr.train_step()
    assert m["skipped"] == 1 and tr.bad_steps == 1
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert [s["step"] for s in tr.optimizer.state.values()] == adam_steps
    poison["on"] = False
    m = tr.train_step()
    assert "skipped" not in m and tr.bad_steps == 0
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())

    poison["on"] = True
    with pytest.raises(RptError, match="2 steps in a row had a non-finite"):
        Trainer(config(task, tmp_path / "run2", max_steps=10, max_bad_steps=2)).train()


def test_tokenizer_fingerprint_mismatch_is_refused(task, tmp_path):
    shards = write_task_shards(tmp_path / "shards", task["tok"], n_train=8, n_val=2, fingerprint="0" * 64)
    with pytest.raises(RptError, match="another tokenizer"):
        Trainer(config(task, tmp_path / "run", shards=str(shards)))


def test_dynamic_sampling_draws_more_contexts(task, tmp_path):
    cfg = config(
        task, tmp_path / "run", batch_size=4, num_generations=2, dynamic_sampling=True, max_resample_batches=3
    )
    tr = Trainer(cfg)
    m = tr.train_step()
    # Rewards start near 1/17: most pairs are all-zero, so the step must have drawn more contexts.
    assert m["resample_batches"] >= 1 and tr.stream.rows_yielded == 4 * (1 + m["resample_batches"])
    assert 1 <= m["groups"] <= 4


@pytest.mark.parametrize(
    ("sig", "code", "second"), [(signal.SIGINT, 130, KeyboardInterrupt), (signal.SIGTERM, 143, Terminated)]
)
def test_stop_signals_first_sets_the_flag_second_interrupts(sig, code, second):
    before = signal.getsignal(sig)
    with stop_signals() as flag:
        os.kill(os.getpid(), sig)
        assert flag.hit and flag.exit_code == code
        with pytest.raises(second):
            os.kill(os.getpid(), sig)
    assert signal.getsignal(sig) is before


def test_cli_run_smoke(task, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[train]\nnum_generations = 3\nsave_every = 1\ntemplate = 'plain'\nkeep_last = 1\n")
    out = tmp_path / "run"
    args = [
        str(task["shards"]),
        "--model",
        str(task["model"]),
        "--out",
        str(out),
        "--config",
        str(recipe),
        "--max-steps",
        "2",
        "--num-generations",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--quiet",
    ]
    result = CliRunner().invoke(run, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "run_config.json").read_text())
    assert resolved["num_generations"] == 2 and resolved["save_every"] == 1 and resolved["lr"] == 1e-3
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-000002"]  # keep_last = 1
    assert len(metrics(out)) == 2 and "max_steps: 2 steps" in result.output
    bad_args = [
        str(task["shards"]),
        "--model",
        str(task["model"]),
        "--out",
        str(tmp_path / "bad"),
        "--temperature",
        "0",
    ]
    bad = CliRunner().invoke(run, bad_args)
    assert bad.exit_code == 1 and bad.output.startswith("error: temperature 0 (greedy decoding) cannot train")
    assert bad.output.count("\n") == 1
    assert "--max-new-tokens" in CliRunner().invoke(run, ["--help"]).output


def test_kl_to_frozen_reference_and_gradient_checkpointing(task, tmp_path):
    tr = Trainer(config(task, tmp_path / "kl", max_steps=3, beta=0.1))
    ref_before = {k: v.clone() for k, v in tr.ref.model.state_dict().items()}
    tr.train()
    m = metrics(tmp_path / "kl")
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-6) and m[2]["kl"] > 0  # policy drifts from the reference
    assert all(torch.equal(ref_before[k], v) for k, v in tr.ref.model.state_dict().items())

    plain = Trainer(config(task, tmp_path / "p", max_steps=2)).train()
    assert "kl" not in metrics(tmp_path / "p")[0]  # only measured when a reference exists
    ckpt = Trainer(config(task, tmp_path / "c", max_steps=2, gradient_checkpointing="on")).train()
    wa, wb = weights(plain.checkpoint), weights(ckpt.checkpoint)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_empty_contexts_are_skipped_and_counted(task, tmp_path):
    from rpt_core.data import shards
    from tests.helpers import task_rows

    rows = task_rows(12)
    for r in rows[:3]:
        r["context"] = ""
    out = tmp_path / "shards"
    shards.write_shard(out / "train" / shards.shard_name("train", 0, 0), shards.rows_to_table(rows))
    tr = Trainer(config(task, tmp_path / "run", shards=str(out), shuffle_buffer=1, batch_size=4))
    m = tr.train_step()
    assert m["skipped_rows"] == 3 and tr.stream.rows_yielded == 7


def test_chat_think_uses_the_policys_own_template_and_checkpoints_keep_it(task, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(task["model"], model)
    template = (
        "{% for m in messages %}[{{ m['content'][-2:] }}]{% endfor %}{{ '=>' if add_generation_prompt }}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    tr = Trainer(
        config(task, tmp_path / "run", model=str(model), template="chat-think", max_steps=1, max_new_tokens=3)
    )
    assert tr.template.render(" a b") == "[ b]=>"
    result = tr.train()
    saved = Tokenizer.load(result.checkpoint)
    assert saved.chat.render([{"role": "user", "content": "xyz"}]) == "[yz]=>"


def test_a_policy_from_another_family_is_refused(task, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(task["model"], model)
    model_config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**model_config, "eos_token_id": 151645}))  # Qwen's
    with pytest.raises(RptError, match="eos_token_id 151645 but tokenizer .* different model families"):
        Trainer(config(task, tmp_path / "run", model=str(model)))
