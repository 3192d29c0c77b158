"""token_logprobs: reproduces generate()'s log-probs, is chunk-invariant, and differentiates like the
plain full-logits computation."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from rpt_core.model.generation import SamplingParams, generate, left_pad
from rpt_core.model.logprobs import LogprobModule, logprobs_from_hidden, token_logprobs
from rpt_train.rl.update import trim_padding
from tests import helpers

V = 64


tiny_model = partial(helpers.tiny_model, V, std=0.3, eval=True)  # std: log-probs vary a lot across tokens


def sequences(prompts, gen, pad_id=0):
    """(input_ids, attention_mask, P) of prompt + completion, exactly as the trainer builds them."""
    G = gen.tokens.shape[0] // len(prompts)
    p_ids, p_mask = left_pad(prompts, pad_id, "cpu")
    ids = torch.cat([p_ids.repeat_interleave(G, 0), gen.tokens], 1)
    mask = torch.cat([p_mask.repeat_interleave(G, 0), gen.mask], 1).long()
    return ids, mask, p_ids.shape[1]


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_reproduces_generate_logprobs_with_left_padding(temperature):
    model = tiny_model()
    prompts = [[5, 9, 11, 3, 7, 2, 8], [4], [10, 12, 13]]  # different lengths -> left padding
    params = SamplingParams(max_new_tokens=12, temperature=temperature, stop_token_ids=tuple(range(0, 64, 5)))
    gen = generate(model, prompts, params, num_samples=3, generator=torch.Generator().manual_seed(1))
    assert not bool(gen.mask.all()), "want some early stops so the completion is right-padded too"
    ids, mask, P = sequences(prompts, gen)
    with torch.no_grad():
        logp, entropy = token_logprobs(model, ids, mask, P, temperature, chunk=5)
    m = gen.mask
    assert logp.shape == gen.logprobs.shape
    torch.testing.assert_close(logp[m], gen.logprobs[m], atol=1e-4, rtol=0)
    assert bool((logp[~m] == 0).all()) and bool((entropy[~m] == 0).all())  # the LM head skips padding
    assert bool((entropy[m] > 0).all()) and bool(
        (entropy[m] <= torch.log(torch.tensor(float(V))) + 1e-5).all()
    )


def test_chunking_and_trimming_do_not_change_values():
    model = tiny_model(1)
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10]]
    gen = generate(
        model,
        prompts,
        SamplingParams(max_new_tokens=9, temperature=1.0, stop_token_ids=(3,)),
        num_samples=2,
        generator=torch.Generator().manual_seed(0),
    )
    ids, mask, P = sequences(prompts, gen)
    with torch.no_grad():
        ref, ref_ent = token_logprobs(model, ids, mask, P, 1.0, chunk=10_000)
        for chunk in (1, 3):
            lp, ent = token_logprobs(model, ids, mask, P, 1.0, chunk=chunk)
            torch.testing.assert_close(lp, ref, atol=1e-6, rtol=0)
            torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
        # Only the second prompt's rows (short prompt): leading all-pad columns get trimmed.
        sub_ids, sub_mask = ids[2:], mask[2:]
        t_ids, t_mask, t_P, kept = trim_padding(sub_ids, sub_mask, P)
        assert t_ids.shape[1] < sub_ids.shape[1] and t_P < P
        lp, _ = token_logprobs(model, t_ids, t_mask, t_P, 1.0)
        m = gen.mask[2:, :kept]
        torch.testing.assert_close(lp[m], ref[2:, :kept][m], atol=1e-5, rtol=0)
        assert not bool(gen.mask[2:, kept:].any())


@pytest.mark.parametrize("chunk", [3, 1000])  # logits rebuilt in backward / one chunk's softmax kept
def test_gradient_matches_full_logits(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    weight = torch.randn(V, 16, requires_grad=True)
    targets = torch.randint(0, V, (3, 7))
    lp, ent = logprobs_from_hidden(hidden, weight, targets, temperature=0.8, chunk=chunk)
    (lp * torch.linspace(-1, 1, 7)).sum().backward()
    g_h, g_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    full_all = torch.log_softmax(hidden @ weight.T / 0.8, -1)
    full = full_all.gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(lp, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, -(full_all.exp() * full_all).sum(-1).detach(), atol=1e-5, rtol=0)
    (full * torch.linspace(-1, 1, 7)).sum().backward()
    torch.testing.assert_close(g_h, hidden.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_w, weight.grad, atol=1e-5, rtol=1e-5)


def test_module_forward_matches_function_and_trains():
    model = tiny_model(2)
    module = LogprobModule(model, chunk=4)
    ids = torch.tensor([[0, 0, 5, 6, 7, 8, 0], [4, 5, 6, 7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    lp, _ = module(ids, mask, 4, 1.0)
    with torch.no_grad():
        ref, _ = token_logprobs(model, ids, mask, 4, 1.0)
    torch.testing.assert_close(lp.detach(), ref)
    lp[mask[:, 4:].bool()].sum().backward()
    assert model.model.embed_tokens.weight.grad is not None
    assert float(model.model.layers[0].mlp.up_proj.weight.grad.abs().sum()) > 0
