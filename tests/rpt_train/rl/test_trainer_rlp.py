"""``--objective rlp`` end to end on the tiny task (CPU, float32): the information gain rises, resume is
exact with the EMA baseline in the checkpoint state, checkpoints stay loadable by transformers, compute
is counted and can be matched, and the ``run`` CLI takes it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers
from click.testing import CliRunner
from safetensors.torch import load_file

from rpt_train.cli.run import run
from rpt_train.compute import rl_step_flops
from rpt_train.rl.checkpoint import load_trainer_state
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.trainer import Trainer
from tests.helpers import save_model_dir, think_copy_model, tiny_tokenizer, write_task_shards
from tests.helpers.runs import task_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlp_task")
    tok = tiny_tokenizer(think=True)
    with torch.random.fork_rng():
        model = think_copy_model(tok)
    return {
        "tok": tok,
        "shards": write_task_shards(root / "shards", tok, repeat=True),
        "model": save_model_dir(root / "model", tok, model=model),
    }


def config(task, out, **kw) -> TrainConfig:
    rlp = dict(objective="rlp", template="think", max_new_tokens=3, lr=3e-3)
    sizes = dict(batch_size=8, num_generations=8, micro_batch_size=64)
    return task_config(task["shards"], task["model"], out, **{**rlp, **sizes, **kw})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_information_gain_rises(task, tmp_path):
    """The base writes a random one-letter thought and copies it after </think>; the next token repeats
    the context's last letter. Thinking that letter is worth ~+9 nats over the no-think baseline (which
    expects <think> there), a random one ~+3: RLP must learn to think the right letter.

    Calibrated over seeds 0-4: first-5-step mean gain 3.8-4.2, last-5 7.2-7.9.
    """
    cfg = config(task, tmp_path / "run", max_steps=30, val_every=30, val_samples=16)
    Trainer(cfg).train()
    m = metrics(cfg.io.out)
    first = sum(r["info_gain_mean"] for r in m[:5]) / 5
    last = sum(r["info_gain_mean"] for r in m[-5:]) / 5
    assert first < 4.5 and last > first + 2.0, (first, last)
    assert m[-1]["reasoned_logp"] > m[0]["reasoned_logp"] + 1.0
    expected = {
        "info_gain_mean",
        "info_gain_std",
        "info_gain_pos_frac",
        "ema_logp",
        "thought_len_mean",
        "thought_truncated",
        "thought_unclosed",
        "reward",
        "loss",
        "grad_norm",
        "flops",
        "train_flops",
        "val_reward",
        "val_info_gain_mean",
    }
    assert expected <= m[-1].keys()
    assert "acc" not in m[-1] and m[-1]["format_fail"] == 0.0  # RLP asks for no answer format


def test_resume_is_exact_with_the_ema_in_the_checkpoint(task, tmp_path):
    # A fast EMA, moved twice per step; dynamic sampling selects and joins scored groups (their details).
    kw = dict(ema_decay=0.5, num_iterations=2, lr=3e-3, dynamic_sampling=True, max_resample_batches=1)
    straight = Trainer(config(task, tmp_path / "a", max_steps=4, **kw)).train()
    Trainer(config(task, tmp_path / "b", max_steps=2, **kw)).train()
    resumed = Trainer(config(task, tmp_path / "b", max_steps=4, resume=True, **kw)).train()
    wa, wb = (load_file(str(c / "model.safetensors")) for c in (straight.checkpoint, resumed.checkpoint))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ea, eb = (load_trainer_state(c)["objective"]["ema"] for c in (straight.checkpoint, resumed.checkpoint))
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert any(not torch.equal(ea[k], wa[k]) for k in wa)  # the baseline lags the policy
    drop_time = lambda rows: [
        {k: v for k, v in r.items() if not k.startswith(("time", "tokens_per_s"))} for r in rows
    ]  # noqa: E731
    assert drop_time(metrics(tmp_path / "a")) == drop_time(metrics(tmp_path / "b"))


def test_state_dict_carries_the_ema(task, tmp_path):
    a = Trainer(config(task, tmp_path / "a", ema_decay=0.5))
    a.train_step()
    b = Trainer(config(task, tmp_path / "b", ema_decay=0.5))
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    ma, mb = a.train_step(), b.train_step()
    assert ma["loss"] == mb["loss"] and ma["info_gain_mean"] == mb["info_gain_mean"]
    for (k, x), y in zip(
        a.objective.ema.state_dict().items(), b.objective.ema.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), k


def test_checkpoint_loads_in_transformers_and_keeps_the_ema_apart(task, tmp_path):
    result = Trainer(config(task, tmp_path / "run", max_steps=1, ema_decay=0.5)).train()
    weights = load_file(str(result.checkpoint / "model.safetensors"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(result.checkpoint))
    for k, v in hf.state_dict().items():
        assert torch.equal(v, weights[k]), k  # the policy, not its average
    ema = load_trainer_state(result.checkpoint)["objective"]["ema"]
    assert set(ema) == set(weights) and any(not torch.equal(ema[k], weights[k]) for k in weights)


def test_scoring_compute_is_counted_and_max_flops_stops_the_run(task, tmp_path):
    tr = Trainer(config(task, tmp_path / "a"))
    scored = []
    score = tr.objective.score
    tr.objective.score = lambda batch: scored.append(score(batch)) or scored[-1]
    m = tr.train_step()
    b = scored[0]
    prompt, completion = int(b.prompt_mask.sum()), int(b.completion_mask.sum())
    without = rl_step_flops(tr.n_params, prompt + completion, 8 * prompt + completion)
    assert b.score_tokens > 0 and m["flops"] == without + 2 * tr.n_params * b.score_tokens
    budget = 2.5 * m["flops"]
    res = Trainer(config(task, tmp_path / "b", max_steps=100, max_flops=budget)).train()
    assert (res.stopped, res.step) == ("max_flops", 3)  # the first step that reaches the budget is the last
    again = Trainer(config(task, tmp_path / "c", max_steps=100, match_flops=str(tmp_path / "b"))).train()
    assert (again.stopped, again.step) == ("max_flops", 3)  # same seed, same steps: the same compute


def test_cli_run_rlp(task, tmp_path):
    out = tmp_path / "run"
    args = [
        str(task["shards"]),
        "--model",
        str(task["model"]),
        "--out",
        str(out),
        "--objective",
        "rlp",
        "--template",
        "think",
        "--max-new-tokens",
        "3",
        "--rlp-tokens",
        "2",
        "--ema-decay",
        "0.9",
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
    assert (resolved["objective"], resolved["rlp_tokens"], resolved["ema_decay"]) == ("rlp", 2, 0.9)
    assert len(metrics(out)) == 2
    bad = CliRunner().invoke(run, [*args[:-1], "--template", "plain", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and bad.output.startswith("error: --objective rlp samples a thought")
