"""Training checkpoints: exact round trip (weights, optimizer, scheduler, RNG), pruning, crash safety."""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.runtime.distributed import gather_full_state
from rpt_core.runtime.errors import RptError
from rpt_train.rl import checkpoint as ckpt
from rpt_train.rl.checkpoint import (
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tests.conftest import QWEN3_TOKENIZER as TOKENIZER
from tests.helpers import tiny_model

_model = partial(tiny_model, 96, hidden=64, intermediate=128, head_dim=16, positions=2048)


def _train_step(model, opt, sched, x):
    loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def _setup(seed=0):
    model = _model(seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _save(run, step, model, opt, sched, keep_last=3, tokenizer=None):
    state = {
        "model": model.state_dict(),
        "step": step,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng_state(),
        "data": {"rows_yielded": 10 * step},
    }
    return save_checkpoint(
        run, step, state, model.config, tokenizer, {"lr": 1e-2, "step": step}, keep_last=keep_last
    )


def test_round_trip_resumes_identically(tmp_path):
    x = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    model, opt, sched = _setup()
    _train_step(model, opt, sched, x)
    path = _save(tmp_path, 1, model, opt, sched, tokenizer=TOKENIZER)
    assert path == tmp_path / "checkpoints" / "step-000001" and latest_checkpoint(tmp_path) == path
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000001"
    assert json.loads((path / "run_config.json").read_text()) == {"lr": 1e-2, "step": 1}
    assert (path / "tokenizer.json").read_bytes() == TOKENIZER.read_bytes()
    draws = (random.random(), torch.rand(3), np.random.rand())

    state = load_trainer_state(path)
    assert state["step"] == 1 and state["data"] == {"rows_yielded": 10}
    model2 = Qwen3ForCausalLM.from_pretrained(path, device="cpu").train()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    assert (
        random.random() == draws[0] and torch.equal(torch.rand(3), draws[1]) and np.random.rand() == draws[2]
    )

    for m, o, s in ((model, opt, sched), (model2, opt2, sched2)):
        _train_step(m, o, s, x)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_keep_last_and_latest(tmp_path):
    model, opt, sched = _setup()
    for step in range(1, 6):
        _save(tmp_path, step * 10, model, opt, sched, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-000040", "step-000050"]
    assert latest_checkpoint(tmp_path).name == "step-000050"
    assert [(s, p.name) for s, p in checkpoint_steps(tmp_path)] == [(40, "step-000040"), (50, "step-000050")]
    # A save at an earlier step (resumed from an older checkpoint) is kept and becomes latest.
    _save(tmp_path, 45, model, opt, sched, keep_last=2)
    assert latest_checkpoint(tmp_path).name == "step-000045"
    assert (tmp_path / "checkpoints" / "step-000045").is_dir()
    _save(tmp_path, 60, model, opt, sched, keep_last=0)
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 3


def test_latest_fallbacks(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    model, opt, sched = _setup()
    _save(tmp_path, 1, model, opt, sched)
    _save(tmp_path, 2, model, opt, sched)
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-000002"
    (tmp_path / "checkpoints" / "latest").write_text("step-000009\n")  # points at a pruned directory
    assert latest_checkpoint(tmp_path).name == "step-000002"


def test_crash_mid_save_keeps_previous(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    first = _save(tmp_path, 1, model, opt, sched)
    before = sorted(p.name for p in first.iterdir())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(RptError, match=r"trainer_state.pt: cannot write the checkpoint \(disk full\)"):
        _save(tmp_path, 2, model, opt, sched)
    with pytest.raises(RptError, match=r"trainer_state.pt: cannot write the checkpoint \(disk full\)"):
        _save(tmp_path, 1, model, opt, sched)  # overwriting the same step must not lose it either
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000001"]
    assert sorted(p.name for p in first.iterdir()) == before
    assert latest_checkpoint(tmp_path) == first and load_trainer_state(first)["step"] == 1


def test_gathered_state_round_trips_through_load_checkpoint(tmp_path):
    model, opt, sched = _setup(3)
    _train_step(model, opt, sched, torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1)))
    model_sd, optim_sd = gather_full_state(model, opt)  # what the trainer saves, under any wrapping
    state = {"model": model_sd, "optimizer": optim_sd, "step": 7, "rng": rng_state()}
    path = save_checkpoint(tmp_path, 7, state, model.config, None, {})
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["optimizer"].keys() == optim_sd.keys()
    for k, v in model.state_dict().items():
        if k != "lm_head.weight":  # tied: saved once, as the embedding
            assert torch.equal(v, loaded["model"][k]), k
    from_hf = Qwen3ForCausalLM.from_pretrained(path, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, from_hf.state_dict()[k]), k


def test_bad_trainer_state(tmp_path):
    with pytest.raises(RptError, match="not a training checkpoint"):
        load_trainer_state(tmp_path)
    model, _, _ = _setup()
    path = save_checkpoint(
        tmp_path, 1, {"model": model.state_dict(), "odd": Path("x")}, model.config, None, {}
    )
    with pytest.raises(RptError, match="cannot read the trainer state"):
        load_trainer_state(path)
    with pytest.raises(RptError, match="tokenizer file not found"):
        save_checkpoint(tmp_path, 2, {"model": model.state_dict()}, model.config, tmp_path / "none.json", {})
    assert latest_checkpoint(tmp_path).name == "step-000001"


def test_transformers_loads_checkpoint(tmp_path):
    import transformers

    model, opt, sched = _setup(5)
    path = _save(tmp_path, 3, model, opt, sched)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    x = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.eval()(x)
        theirs = hf(x).logits.float()
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
