"""``Trainer.train_step`` of each objective in the GPU's dtype setup, on the CPU (``--cpu-autocast``):
float32 master weights, bfloat16 autocast for rollouts, scoring, log-probs and the update, a bfloat16 KV
cache; plus the guards of a real run's precision: bfloat16 parameters with an lr too small to move them
are refused, and every step logs how far the weights moved."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from rpt_core.model.kv_cache import KVCache
from rpt_core.runtime.errors import RptError
from rpt_train.rl import trainer as trainer_mod
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.trainer import Trainer
from tests.helpers import save_model_dir, think_copy_model, tiny_tokenizer, write_task_shards
from tests.helpers.launch import TORCHRUN_ENV, TWO_RANKS

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("autocast_task")
    tok = tiny_tokenizer(think=True)
    with torch.random.fork_rng():
        model = think_copy_model(tok, steps=20)
    return {
        "plain": write_task_shards(root / "shards", tok, n_train=64, n_val=8),
        "repeat": write_task_shards(root / "rlp_shards", tok, n_train=64, n_val=8, repeat=True),
        "model": save_model_dir(root / "model", tok, model=model),
    }


OBJECTIVES = {
    "rpt": dict(objective="rpt", template="think", shards="plain", max_new_tokens=4),
    "rlp": dict(objective="rlp", template="think", shards="repeat", max_new_tokens=4),
}


def config(task, out, objective, **kw) -> TrainConfig:
    o = dict(OBJECTIVES[objective])
    base = dict(
        shards=str(task[o.pop("shards")]),
        model=str(task["model"]),
        out=str(out),
        max_steps=1,
        lr=1e-2,
        warmup_steps=0,
        batch_size=3,
        num_generations=3,
        micro_batch_size=4,
        logprob_chunk=3,
        temperature=1.0,
        save_every=0,
        sample_every=0,
        quiet=True,
        device="cpu",
        cpu_autocast=True,
        num_iterations=2,
        beta=0.1,
    )
    return TrainConfig.from_flat(**{**base, **o, **kw})


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_a_train_step_of_each_objective_in_the_gpus_dtype_setup(task, tmp_path, objective, monkeypatch):
    """Old and reference log-probs (two iterations, KL), LM-head chunks smaller than a micro-batch, RLP's
    scoring forwards and EMA: all under autocast, the cache in bfloat16, the weights float32 and moved."""
    caches = []
    for_model = KVCache.for_model.__func__
    monkeypatch.setattr(KVCache, "for_model", classmethod(lambda *a: caches.append(a[-1]) or for_model(*a)))
    trainer = Trainer(config(task, tmp_path, objective))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    m = trainer.train_step()
    assert caches and set(caches) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    for key in ("loss", "grad_norm", "entropy", "kl", "update_ratio"):
        assert m[key] == m[key] and abs(m[key]) < float("inf"), key
    assert 0 < m["update_ratio"] < 1


def test_without_cpu_autocast_the_cpu_keeps_float32(task, tmp_path, monkeypatch):
    caches = []
    for_model = KVCache.for_model.__func__
    monkeypatch.setattr(KVCache, "for_model", classmethod(lambda *a: caches.append(a[-1]) or for_model(*a)))
    Trainer(config(task, tmp_path, "rpt", cpu_autocast=False, num_iterations=1, beta=0.0)).train_step()
    assert set(caches) == {torch.float32}


def test_bfloat16_parameters_with_an_lr_that_rounds_away_are_refused():
    with pytest.raises(RptError, match="updates round away"):
        TrainConfig.from_flat(dtype="bfloat16", lr=1e-6)
    TrainConfig.from_flat(dtype="bfloat16", lr=1e-4)
    TrainConfig.from_flat(dtype="float32", lr=1e-6)


def test_the_update_to_weight_ratio_is_logged_and_is_zero_when_nothing_moved(task, tmp_path):
    """bfloat16 parameters at an lr below their rounding: the step runs (lr 0 is allowed: a dry run) and
    the log says the weights did not move."""
    Trainer(config(task, tmp_path / "a", "rpt", lr=0.0, dtype="bfloat16", num_iterations=1, beta=0.0)).train()
    Trainer(config(task, tmp_path / "b", "rpt", num_iterations=1, beta=0.0)).train()
    ratios = [json.loads(Path(tmp_path / d / "metrics.jsonl").read_text())["update_ratio"] for d in "ab"]
    assert ratios[0] == 0.0 and ratios[1] > 0.0


FSDP_RUN = """
import json, sys, torch
torch.set_num_threads(1)
from rpt_core.model.kv_cache import KVCache
from rpt_train.rl.config import TrainConfig
from rpt_train.rl import trainer as trainer_mod
from rpt_train.rl.trainer import Trainer
caches = []
for_model = KVCache.for_model.__func__
KVCache.for_model = classmethod(lambda *a: caches.append(str(a[-1])) or for_model(*a))
cfg = TrainConfig.from_flat(shards=sys.argv[1], model=sys.argv[2], out=sys.argv[3], template='think',
    max_new_tokens=4, max_steps=2, lr=1e-2, warmup_steps=0, batch_size=2, num_generations=3,
    micro_batch_size=4, logprob_chunk=3,
    temperature=1.0, quiet=True, save_every=0, sample_every=0, device='cpu', fsdp=True, cpu_autocast=True,
    num_iterations=2, beta=0.1)
tr = Trainer(cfg)
res = tr.train()
m = [json.loads(line) for line in open(sys.argv[3] + '/metrics.jsonl')] if tr.rank == 0 else []
out = {'caches': sorted(set(caches)), 'step': res.step, 'ratios': [r['update_ratio'] for r in m]}
open(f'rank{tr.rank}.json', 'w').write(json.dumps(out))
"""


def test_two_fsdp2_ranks_with_a_bfloat16_param_dtype(task, tmp_path):
    """FSDP2 on the CPU (gloo), ``MixedPrecisionPolicy(param_dtype=bfloat16)``: the rollout's KV cache
    follows the param dtype (not the sharded float32 parameters), and two steps train."""
    script = tmp_path / "fsdp_run.py"
    script.write_text(FSDP_RUN)
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    cmd = [*TWO_RANKS, str(script), str(task["plain"]), str(task["model"]), str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and "ChildFailed" not in line]
    assert proc.returncode == 0, "\n".join(errors[-6:]) or proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["caches"] == ["torch.bfloat16"] and r["step"] == 2 for r in ranks), ranks
    assert all(x > 0 for x in ranks[0]["ratios"]) and len(ranks[0]["ratios"]) == 2


def test_rollouts_run_on_a_bfloat16_copy_refreshed_after_each_step(task, tmp_path, monkeypatch):
    """``--rollout-weights bf16-copy`` (auto with --compile-decode under autocast): a captured decode step
    reads bfloat16 weights instead of re-casting the float32 ones at every replay."""
    seen = []
    real = trainer_mod.rollout
    monkeypatch.setattr(trainer_mod, "rollout", lambda model, *a: seen.append(model) or real(model, *a))
    trainer = Trainer(config(task, tmp_path / "a", "rpt", rollout_weights="bf16-copy", beta=0.0))
    copy = trainer.rollout_model
    assert copy is not None and all(p.dtype == torch.bfloat16 for p in copy.parameters())
    for _ in range(2):
        trainer.train_step()
        for c, p in zip(copy.parameters(), trainer.model.parameters(), strict=True):
            assert torch.equal(c, p.detach().to(torch.bfloat16))
    assert len(seen) == 2 and all(m is copy for m in seen)
    assert Trainer(config(task, tmp_path / "b", "rpt", compile_decode=True)).rollout_model is not None
    assert Trainer(config(task, tmp_path / "c", "rpt")).rollout_model is None  # auto: no captured step
    assert (
        Trainer(config(task, tmp_path / "d", "rpt", compile_decode=True, cpu_autocast=False)).rollout_model
        is None
    )
