"""The GPU's dtype setup, run on the CPU: float32 master weights under ``torch.autocast(device, bfloat16)``
(CPU autocast is the same mechanism as CUDA's), a bfloat16 KV cache, bfloat16 proxies. Every path of a GPU
run that a CPU can execute runs here: rollouts (eager and with finished rows compacted), eval's reasoning
mode, old / reference log-probs and the update's backward, RLP's scoring forwards and EMA, and proxy
scoring. The trainer's own steps under autocast are in ``tests/rpt_train/rl/test_trainer_autocast.py``.

Before these tests existed no CUDA configuration had run anywhere: the first rollout of the default GPU
run crashed in the decode cache write (float32 keys into a bfloat16 cache)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from rpt_core.model.decode import DecodeOptions
from rpt_core.model.generation import SamplingParams, generate, left_pad
from rpt_core.model.logprobs import LogprobModule, logprobs_from_hidden, token_logprobs
from rpt_core.text.prompts import load_template
from rpt_data.build.entropy import ProxyScorer
from rpt_train.rl.grpo import GrpoLossConfig
from rpt_train.rl.objective import ObjectiveContext
from rpt_train.rl.objective_rlp import RlpObjective
from rpt_train.rl.objective_rpt import RptObjective
from rpt_train.rl.rollout import RolloutSpec, rollout, sampling_params, stop_token_ids
from rpt_train.rl.update import MicroBatchPlan, MicroBatchSettings, backward_micro_batches, batched_logprobs
from tests.helpers import (
    TextTemplate,
    repeat_rows,
    save_model_dir,
    task_rows,
    tiny_model,
    tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def bf16_autocast():
    """What the trainer enters on a GPU (``Trainer.autocast``), on the CPU."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(think=True)


@pytest.fixture
def model(tok):
    """float32 master weights, grouped-query attention (4 heads over 2 KV heads), tied embeddings."""
    return tiny_model(tok)


def likely_stop(model, tok) -> int:
    """Make end-of-text likely, so rows stop at different steps (and leave the batch when compacting)."""
    eos = tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        model.lm_head.weight[eos] = 0.0
    return eos


@pytest.mark.parametrize("compact", [False, True], ids=["eager", "compacted"])
def test_rollouts_under_autocast_match_the_trainers_logprobs(model, tok, compact):
    eos = likely_stop(model, tok)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    params = SamplingParams(max_new_tokens=10, temperature=0.9, stop_token_ids=(eos,))
    options = DecodeOptions(compact=compact, min_dead_fraction=0.0)
    with torch.no_grad(), bf16_autocast():
        gen = generate(model.eval(), prompts, params, 3, torch.Generator().manual_seed(0), 0, options)
    lengths = gen.lengths()
    assert gen.finished.any() and lengths.unique().numel() > 1, "want rows that stop at different steps"
    assert torch.isfinite(gen.logprobs).all()
    # The log-probs the sampler returned are those the trainer recomputes under the same autocast (the
    # ratio pi / pi_old of the first update starts at 1 up to bfloat16 rounding).
    ids, attn = left_pad(prompts, 0, "cpu")  # (3, 5)
    ids = torch.cat([ids.repeat_interleave(3, 0), gen.tokens], dim=1)  # (9, 5 + T)
    attn = torch.cat([attn.repeat_interleave(3, 0), gen.mask], dim=1).long()  # (9, 5 + T)
    with torch.no_grad(), bf16_autocast():
        logp, _ = token_logprobs(model, ids, attn, 5, 0.9)
    torch.testing.assert_close(logp[gen.mask], gen.logprobs[gen.mask], atol=0.1, rtol=0.05)


def test_eval_reasoning_mode_under_autocast(model, tok):
    from rpt_train.eval.score import EvalSettings, evaluate_model

    likely_stop(model, tok)
    settings = EvalSettings(load_template("think"), max_prompt_tokens=16, max_new_tokens=6, batch_size=3)
    rows = repeat_rows(5, 0, tok)
    with bf16_autocast():
        verdicts = evaluate_model(model, tok, rows, settings, modes=("reasoning", "sampled"))
    assert {len(v) for v in verdicts.values()} == {5}


def _rpt_batch(model, tok):
    eos = likely_stop(model, tok)
    del eos
    template = TextTemplate()
    spec = RolloutSpec(sampling_params(template, tok, 6, 1.0), num_generations=3)
    with torch.no_grad(), bf16_autocast():
        batch = rollout(model.eval(), tok, template, task_rows(4, 0), spec, torch.Generator().manual_seed(0))
    batch.advantages = torch.randn(batch.num_sequences, generator=torch.Generator().manual_seed(0))
    return batch


def test_logprobs_and_the_update_backward_under_autocast(model, tok):
    """Old / reference log-probs and the micro-batched backward (LM-head chunks smaller than a micro-batch)
    under autocast: float32 gradients on every parameter, close to the float32 ones."""
    batch = _rpt_batch(model, tok)
    module = LogprobModule(model.train(), chunk=3)
    old = batched_logprobs(module, batch, 1.0, 4, bf16_autocast)
    assert old.dtype == torch.float32 and torch.isfinite(old).all()
    objective = RptObjective(grpo=GrpoLossConfig(max_len=6))
    mask = batch.loss_mask()
    plan = MicroBatchPlan(-(-batch.num_sequences // 5), float(objective.loss_agg.normaliser(mask)))

    def grads(autocast):
        model.zero_grad(set_to_none=True)
        s = MicroBatchSettings(objective, temperature=1.0, micro_batch_size=5, autocast=autocast)
        sums = backward_micro_batches(
            module, batch, loss_mask=mask, settings=s, plan=plan, old_logp=old, ref_logp=old
        )
        return {n: p.grad.clone() for n, p in model.named_parameters()}, sums

    g16, sums = grads(bf16_autocast)
    g32, _ = grads(contextlib.nullcontext)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in g16.values())
    assert np.isfinite(list(sums.values())).all()
    flat16, flat32 = (torch.cat([g[n].flatten() for n in g32]) for g in (g16, g32))
    assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) > 0.99


def test_rlp_scoring_and_ema_under_autocast(model, tok):
    objective = RlpObjective(tokens=2, ema_decay=0.5)
    objective.attach(
        ObjectiveContext(
            model,
            tok,
            micro_batch_size=3,
            logprob_chunk=4,
            autocast=bf16_autocast,
            stop_ids=stop_token_ids(tok),
            pad_id=tok.pad_id,
        )
    )
    template = load_template("think")
    spec = objective.rollout_spec(RolloutSpec(sampling_params(template, tok, 4, 1.0), num_generations=3), tok)
    with torch.no_grad(), bf16_autocast():
        batch = rollout(
            model.eval(), tok, template, repeat_rows(4, 0, tok), spec, torch.Generator().manual_seed(0)
        )
    scored = objective.score(batch)
    assert scored.rewards.dtype == torch.float32 and torch.isfinite(scored.rewards).all()
    assert torch.isfinite(scored.advantages).all()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    objective.after_step(model)
    ema = dict(objective.ema.named_parameters())
    for name, p in model.named_parameters():
        assert ema[name].dtype == torch.float32
        torch.testing.assert_close(ema[name], p.detach() - 0.005)


def test_proxy_scoring_in_bfloat16_under_autocast(model, tok, tmp_path):
    """``rpt-data build`` on a GPU: the proxy loaded in bfloat16 (``load_proxy``; its CUDA default) and
    scored under bfloat16 autocast; entropies close to the float32 proxy's."""
    from rpt_data.build.proxy import load_proxy

    save_model_dir(tmp_path / "proxy", tok, model=model)
    proxy = load_proxy(str(tmp_path / "proxy"), None, "bfloat16", torch.device("cpu"), top_k=4)
    assert proxy.model.dtype == torch.bfloat16 and proxy.dtype == "bfloat16"
    docs = [[3, 4, 5, 6, 7, 8, 9, 10, 11, 12] * 3, list(range(2, 19)), [7, 8]]
    ref = ProxyScorer(model.eval(), top_k=4, batch_tokens=64, autocast=False).score(docs)
    bf16 = ProxyScorer(proxy.model, top_k=4, batch_tokens=64, autocast=True).score(docs)
    for a, b in zip(ref, bf16, strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(b[1:], a[1:], atol=0.05)


@pytest.mark.parametrize("chunk", [64, 7], ids=["one-chunk", "chunked"])
def test_logged_entropy_is_computed_in_float32_under_autocast(chunk):
    """The LM head runs in bfloat16 under autocast (as it does on the GPU), but the entropy of those
    logits must be summed in float32: a bfloat16 row dot is off by ~0.4%."""
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(64, 32, generator=g), torch.randn(500, 32, generator=g) * 0.5
    targets = torch.randint(0, 500, (64,), generator=g)
    with bf16_autocast():
        _, entropy = logprobs_from_hidden(hidden, weight, targets, 1.0, chunk)
    z = torch.nn.functional.linear(hidden.bfloat16(), weight.bfloat16()).double()  # the same logits
    p = z.softmax(-1)
    expected = -(p * z.log_softmax(-1)).sum(-1)
    assert entropy.dtype == torch.float32
    torch.testing.assert_close(entropy.double(), expected, atol=1e-4, rtol=1e-5)
