"""Distributed helpers: single-process no-ops, and a real 2-process gloo run (collectives, DDP, FSDP2)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from functools import partial

import pytest
import torch

from rpt_core.runtime import distributed as D
from tests.helpers import TORCHRUN_ENV, TWO_RANKS, tiny_model

_tiny = partial(tiny_model, 64, None, heads=2, kv_heads=1, head_dim=16, positions=2048)  # unseeded


def test_single_process_is_a_no_op(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    info = D.init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.is_main, info.distributed) == (
        0,
        1,
        0,
        True,
        False,
    )
    assert info.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not D.is_initialized()
    t = torch.tensor([1.0, 2.0])
    assert D.all_reduce_mean(3.5) == 3.5 and D.all_reduce_mean(t) is t and D.all_reduce_sum(2) == 2
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    D.barrier()
    model = _tiny()
    assert D.wrap_ddp(model, info) is model and D.wrap_fsdp2(model, info) is model
    # torch.compile's OptimizedModule keeps the original as ``_orig_mod``; a stand-in avoids importing
    # dynamo (seconds) just to check the unwrapping contract.
    compiled = torch.nn.Module()
    compiled._orig_mod = model
    assert D.unwrap(compiled) is model and D.unwrap(model) is model
    with D.no_sync(model):
        pass
    D.cleanup()


def test_bad_env_is_a_user_error(monkeypatch):
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(D.RptError, match="RANK"):
        D.init_distributed()


def test_gather_and_load_full_state_single_process():
    model = _tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    model_sd, optim_sd = D.gather_full_state(model, opt)
    assert set(model_sd) >= {"model.embed_tokens.weight", "model.norm.weight"}
    assert "model.layers.0.mlp.up_proj.weight" in optim_sd["state"]  # keyed by name: portable across wrappers
    other = _tiny()
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-2)
    D.load_full_state(other, opt2, model_sd, optim_sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


SCRIPT = textwrap.dedent(
    """
    import copy, json, os, sys
    import torch
    from rpt_core.runtime import distributed as D
    from rpt_core.model import Qwen3Config, Qwen3ForCausalLM

    info = D.init_distributed()
    out = {"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
           "is_main": info.is_main, "device": str(info.device)}
    out["mean_float"] = D.all_reduce_mean(float(info.rank) + 1.0)
    out["mean_tensor"] = D.all_reduce_mean(torch.tensor([info.rank, 2.0 * info.rank])).tolist()
    out["mean_int_tensor"] = D.all_reduce_mean(torch.tensor([info.rank])).tolist()
    out["sum"] = D.all_reduce_sum(torch.tensor([1, info.rank])).tolist()
    out["broadcast"] = D.broadcast_object({"from": info.rank})

    def tiny():
        torch.manual_seed(0)
        cfg = Qwen3Config.preset("tiny", vocab_size=64, num_hidden_layers=2, hidden_size=32,
                                 intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                                 head_dim=16)
        return Qwen3ForCausalLM(cfg).train()

    def loss_of(m, x):
        return torch.nn.functional.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())

    xs = [torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(r)) for r in range(2)]
    x = xs[info.rank]
    # Reference: every rank computes both ranks' local gradients on a bare copy and averages them.
    ref = tiny()
    grads = []
    for xi in xs:
        ref.zero_grad()
        loss_of(ref, xi).backward()
        grads.append({n: p.grad.clone() for n, p in ref.named_parameters()})
    avg = {n: (grads[0][n] + grads[1][n]) / 2 for n in grads[0]}

    ddp = D.wrap_ddp(tiny(), info)
    out["unwrap_ddp"] = type(D.unwrap(ddp)).__name__
    with D.no_sync(ddp):
        loss_of(ddp, x).backward()
    bare = D.unwrap(ddp)
    out["no_sync_local"] = all(torch.allclose(p.grad, grads[info.rank][n], atol=1e-6)
                               for n, p in bare.named_parameters())
    bare.zero_grad()
    loss_of(ddp, x).backward()
    out["ddp_avg"] = all(torch.allclose(p.grad, avg[n], atol=1e-6) for n, p in bare.named_parameters())
    ddp_opt = torch.optim.AdamW(ddp.parameters(), lr=0.01)
    ddp_opt.step()
    ddp_opt.zero_grad()
    # Full state round trip under DDP: every rank loads the full dicts (as if read from a checkpoint).
    saved = copy.deepcopy(D.broadcast_object(D.gather_full_state(ddp, ddp_opt)))
    after_one = {k: v.clone() for k, v in bare.state_dict().items()}
    loss_of(ddp, x).backward()
    ddp_opt.step()
    ddp_opt.zero_grad()
    D.load_full_state(ddp, ddp_opt, *saved)
    out["ddp_restored"] = all(torch.equal(v, bare.state_dict()[k]) for k, v in after_one.items())

    fsdp = D.wrap_fsdp2(tiny(), info)
    opt = torch.optim.AdamW(fsdp.parameters(), lr=0.01)
    loss_of(fsdp, x).backward()
    opt.step()
    opt.zero_grad()
    # Full on rank 0, empty elsewhere; copied because unsharded tensors (Adam's step) alias the live state.
    model_sd, optim_sd = copy.deepcopy(D.gather_full_state(fsdp, opt))
    out["gathered_keys"] = len(model_sd)
    if info.is_main:
        out["fsdp_matches_ddp"] = all(torch.allclose(model_sd[n], after_one[n], atol=1e-6) for n in after_one)
    logits = fsdp.logits(fsdp.hidden_states(x))  # methods other than forward gather the root too
    out["fsdp_methods"] = list(logits.shape)
    loss_of(fsdp, x).backward()
    opt.step()
    opt.zero_grad()
    D.load_full_state(fsdp, opt, model_sd, optim_sd)  # rank 0's dicts are broadcast
    out["fsdp_restored"] = torch.allclose(fsdp(x), bare(x), atol=1e-5)
    # One more identical step from the restored states: equal only if the optimizer states came back too.
    for model, o in ((ddp, ddp_opt), (fsdp, opt)):
        loss_of(model, x).backward()
        o.step()
    final_sd, _ = D.gather_full_state(fsdp)
    if info.is_main:
        out["resumed_step_matches"] = all(torch.allclose(final_sd[n], p.detach(), atol=1e-6)
                                          for n, p in bare.named_parameters())
    D.barrier()
    with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as f:
        json.dump(out, f)
    D.cleanup()
    """
)


def test_two_process_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # gloo on CPU even on a GPU machine
    cmd = [*TWO_RANKS, str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    for i, out in enumerate(r):
        assert (out["rank"], out["world_size"], out["local_rank"], out["is_main"]) == (i, 2, i, i == 0)
        assert out["device"] == "cpu"
        assert (
            out["mean_float"] == 1.5 and out["mean_tensor"] == [0.5, 1.0] and out["mean_int_tensor"] == [0.5]
        )
        assert out["sum"] == [2, 1] and out["broadcast"] == {"from": 0}
        assert out["unwrap_ddp"] == "Qwen3ForCausalLM"
        assert out["no_sync_local"] and out["ddp_avg"]
        assert out["ddp_restored"] and out["fsdp_methods"] == [2, 6, 64] and out["fsdp_restored"]
    assert r[0]["gathered_keys"] > 0 and r[1]["gathered_keys"] == 0
    assert r[0]["fsdp_matches_ddp"] and r[0]["resumed_step_matches"]
