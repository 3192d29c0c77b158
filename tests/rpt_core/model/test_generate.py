"""Batched generation: samplers, log-prob definition, stop tokens, padding independence, replication of
the prompt cache, determinism, the two-level exponential race's distribution, and the decode loop's
machinery (finished rows leaving the batch, sparse host checks, bucketed shapes) changing no token.
"""

from __future__ import annotations

import pytest
import torch

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.decode import DecodeOptions
from rpt_core.model.generation import (
    Generation,
    SamplingParams,
    exponential_race,
    filter_candidates,
    generate,
    race_sample,
)
from rpt_core.runtime.errors import RptError

VOCAB = 600  # > 2 * 128 and not a multiple of 128: the two-level race pads its last block
PROMPTS = [[5, 17, 3], [9, 8, 7, 6, 5, 4, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [42]]


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16
    )
    m = Qwen3ForCausalLM(cfg)
    m.init_weights(std=0.2)  # peaked enough that top-k / top-p actually cut
    return m.eval()


def run(model, params, prompts=PROMPTS, seed=0, **kw) -> Generation:
    return generate(model, prompts, params, generator=torch.Generator().manual_seed(seed), **kw)


@torch.no_grad()
def recompute_logits(model, prompts, gen: Generation) -> list[torch.Tensor]:
    """Fresh full-forward logits (T_new, V) predicting each generated token of each row, one row at a time."""
    out = []
    for row in range(gen.tokens.shape[0]):
        prompt = prompts[int(gen.prompt_index[row])]
        n = int(gen.mask[row].sum())
        seq = torch.tensor([prompt + gen.tokens[row, :n].tolist()])
        logits = model(seq)[0]  # (len, V)
        out.append(logits[len(prompt) - 1 : len(prompt) - 1 + n])
    return out


# ------------------------------------------------------------------------------------------ pure pieces


def test_race_sample_matches_the_distribution():
    probs = torch.zeros(VOCAB)
    probs[[0, 130, 131, 400, 599]] = torch.tensor([0.1, 0.25, 0.05, 0.4, 0.2])  # spread over blocks
    n = 20_000
    weights = (probs * 3.0).expand(n, VOCAB).contiguous()  # unnormalised on purpose
    tokens, total = race_sample(weights, torch.Generator().manual_seed(0))
    assert torch.allclose(total, torch.full((n,), 3.0))
    freq = torch.bincount(tokens, minlength=VOCAB).float() / n
    assert freq[probs == 0].sum() == 0
    sigma = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * sigma + 1e-9).all(), freq[probs > 0]


def test_exponential_race_is_proportional():
    weights = torch.tensor([[1.0, 0.0, 3.0]]).expand(40_000, 3)
    freq = torch.bincount(exponential_race(weights, torch.Generator().manual_seed(1)), minlength=3) / 40_000
    assert freq[1] == 0 and abs(freq[0] - 0.25) < 0.01 and abs(freq[2] - 0.75) < 0.01


def test_filter_candidates_by_hand():
    z = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).log_softmax(-1)
    values, ids = filter_candidates(z, top_k=2, top_p=1.0)
    assert ids.tolist() == [[1, 3]]
    probs = z.exp()[0]  # sorted: ids 1, 3, 2, 0
    p1, p3 = probs[1].item(), probs[3].item()
    values, ids = filter_candidates(z, top_k=0, top_p=p1 + 0.5 * p3)
    kept = ids[values > float("-inf")].tolist()
    assert kept == [1, 3]  # the prefix reaches top_p only with the second token
    values, ids = filter_candidates(z, top_k=0, top_p=p1 * 0.9)
    assert ids[values > float("-inf")].tolist() == [1]
    values, ids = filter_candidates(z, top_k=3, top_p=0.999)  # top-p renormalises over top-k
    assert sorted(ids[values > float("-inf")].tolist()) == [1, 2, 3]


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=-0.5), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5), dict(max_new_tokens=0)],
)
def test_bad_params_are_clear_errors(kwargs):
    with pytest.raises(RptError):
        SamplingParams(**kwargs)


def test_bad_prompts_are_clear_errors(model):
    params = SamplingParams(max_new_tokens=2)
    for prompts in ([], [[1, 2], []], [[1, VOCAB]], [[-1]]):
        with pytest.raises(RptError):
            generate(model, prompts, params)
    with pytest.raises(RptError):
        generate(model, [[1]], params, num_samples=0)


# ----------------------------------------------------------------------------------------------- generate


def test_greedy_batch_equals_each_prompt_alone(model):
    params = SamplingParams(max_new_tokens=10, greedy=True)
    batch = run(model, params)
    assert batch.tokens.shape == (4, 10) and batch.mask.all() and not batch.finished.any()
    assert batch.prompt_index.tolist() == [0, 1, 2, 3]
    for i, prompt in enumerate(PROMPTS):
        alone = run(model, params, prompts=[prompt])
        assert torch.equal(alone.tokens[0], batch.tokens[i])
        assert torch.allclose(alone.logprobs[0], batch.logprobs[i], atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=12, temperature=0.7),
        SamplingParams(max_new_tokens=12, temperature=1.3, top_k=5),
        SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.6),
        SamplingParams(max_new_tokens=12, temperature=0.9, top_k=20, top_p=0.8),
        SamplingParams(max_new_tokens=12, greedy=True),
    ],
    ids=["full", "top_k", "top_p", "top_k+top_p", "greedy"],
)
def test_logprobs_match_a_fresh_forward(model, params):
    gen = run(model, params, num_samples=2)
    temperature = 1.0 if params.greedy else params.temperature
    for row, logits in enumerate(recompute_logits(model, PROMPTS, gen)):
        n = logits.shape[0]
        expected = (logits / temperature).log_softmax(-1)  # (n, V): the definition, filters or not
        tok = gen.tokens[row, :n]
        torch.testing.assert_close(
            gen.logprobs[row, :n], expected.gather(-1, tok[:, None])[:, 0], atol=1e-4, rtol=0
        )
        # ...while the filters did restrict what was drawn:
        rank = (logits > logits.gather(-1, tok[:, None])).sum(-1)  # (n,) tokens strictly better
        if params.top_k:
            assert (rank < params.top_k).all()
        if params.greedy:
            assert (rank == 0).all()
        if params.top_p < 1.0:
            k = params.top_k or VOCAB
            probs = logits.topk(k, -1).values.softmax(-1)  # (n, k), renormalised over top-k
            mass_before = (
                probs.cumsum(-1).gather(-1, rank[:, None])[:, 0] - probs.gather(-1, rank[:, None])[:, 0]
            )
            assert (mass_before < params.top_p + 1e-6).all()


def test_filters_change_what_is_drawn(model):
    free = run(model, SamplingParams(max_new_tokens=24, temperature=1.5), seed=3)
    ranks = []
    for row, logits in enumerate(recompute_logits(model, PROMPTS, free)):
        tok = free.tokens[row, : logits.shape[0]]
        ranks.append((logits > logits.gather(-1, tok[:, None])).sum(-1))
    assert torch.cat(ranks).max() >= 5  # so the top_k=5 assertion above is not vacuous


def test_stop_tokens(model):
    base = run(model, SamplingParams(max_new_tokens=10, greedy=True))
    stop = int(base.tokens[0, 3])
    gen = run(model, SamplingParams(max_new_tokens=10, greedy=True, stop_token_ids=(stop,)))
    for row in range(len(PROMPTS)):
        hits = (base.tokens[row] == stop).nonzero()
        if len(hits):
            end = int(hits[0]) + 1  # the stop token itself is included
            assert gen.finished[row]
        else:
            end = base.tokens.shape[1]
            assert not gen.finished[row]
        assert gen.mask[row].tolist() == [c < end for c in range(gen.tokens.shape[1])]
        assert torch.equal(gen.tokens[row, :end], base.tokens[row, :end])
        assert (gen.tokens[row, end:] == 0).all() and (gen.logprobs[row, end:] == 0).all()
        assert gen.lengths()[row] == end
    assert gen.finished[0] and gen.lengths()[0] <= 4


def test_stops_early_when_every_row_is_done(model):
    base = run(model, SamplingParams(max_new_tokens=8, greedy=True), prompts=PROMPTS[:1])
    stop = int(base.tokens[0, 2])
    gen = run(
        model,
        SamplingParams(max_new_tokens=8, greedy=True, stop_token_ids=(stop, 1)),
        prompts=PROMPTS[:1],
        pad_id=7,
    )
    end = int((base.tokens[0] == stop).nonzero()[0]) + 1
    assert gen.tokens.shape == (1, end) and gen.mask.all() and gen.finished.all()


def test_temperature_zero_is_greedy(model):
    assert SamplingParams(temperature=0).greedy
    greedy = run(model, SamplingParams(max_new_tokens=10, greedy=True))
    zero = run(model, SamplingParams(max_new_tokens=10, temperature=0.0), seed=7)
    assert torch.equal(zero.tokens, greedy.tokens) and torch.equal(zero.logprobs, greedy.logprobs)


def test_top_k_one_equals_greedy(model):
    greedy = run(model, SamplingParams(max_new_tokens=10, greedy=True))
    top1 = run(model, SamplingParams(max_new_tokens=10, temperature=0.8, top_k=1), seed=5)
    assert torch.equal(top1.tokens, greedy.tokens)


def test_seed_reproduces(model):
    params = SamplingParams(max_new_tokens=10, temperature=1.0)
    a, b, c = run(model, params, seed=11), run(model, params, seed=11), run(model, params, seed=12)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_num_samples_rows_are_prompt_major(model):
    greedy = run(model, SamplingParams(max_new_tokens=6, greedy=True))
    reps = run(model, SamplingParams(max_new_tokens=6, greedy=True), num_samples=3)
    assert reps.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert torch.equal(reps.tokens, greedy.tokens.repeat_interleave(3, dim=0))
    sampled = run(model, SamplingParams(max_new_tokens=6, temperature=1.5), num_samples=3)
    assert sampled.tokens.shape == (12, 6)
    assert len({tuple(r) for r in sampled.tokens[:3].tolist()}) > 1  # samples of one prompt differ


def test_prompt_is_prefilled_once_and_cache_is_replicated(model, monkeypatch):
    calls, widths = [], []
    original = model.new_kv_cache
    spy_cache = lambda b, n, **kw: calls.append((b, n)) or original(b, n, **kw)  # noqa: E731
    monkeypatch.setattr(model, "new_kv_cache", spy_cache)
    real_hidden = model.hidden_states

    def spy(ids, *args, **kwargs):
        widths.append(tuple(ids.shape))
        return real_hidden(ids, *args, **kwargs)

    monkeypatch.setattr(model, "hidden_states", spy)
    gen = run(model, SamplingParams(max_new_tokens=5, temperature=1.0), num_samples=4)
    assert calls == [(4, 12)]  # P prompts, padded prompt width only
    assert widths[0] == (4, 12) and all(w == (16, 1) for w in widths[1:]) and len(widths) == 5
    assert gen.tokens.shape == (16, 5)


def test_bfloat16_model_generates(model):
    bf16 = Qwen3ForCausalLM(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16).eval()
    for params in (
        SamplingParams(max_new_tokens=6, temperature=0.8),
        SamplingParams(max_new_tokens=6, top_k=4, top_p=0.9),
        SamplingParams(max_new_tokens=6, greedy=True),
    ):
        gen = run(bf16, params, num_samples=2)
        assert gen.tokens.shape == (8, 6) and gen.logprobs.dtype == torch.float32
        assert torch.isfinite(gen.logprobs).all() and (gen.logprobs <= 0).all()
        assert ((gen.tokens >= 0) & (gen.tokens < VOCAB)).all()


def test_stop_after_ends_a_row_n_tokens_after_its_trigger():
    """A think template's rule: stop ``n`` tokens after ``</think>``; rows without it run to the cap."""
    model = _successor_model()
    params = SamplingParams(max_new_tokens=12, greedy=True, stop_after=(5, 2))
    out = generate(model, [[1], [8]], params, pad_id=0)
    assert out.tokens[0][out.mask[0]].tolist() == [2, 3, 4, 5, 6, 7] and bool(out.finished[0])
    assert bool(out.mask[1].all()) and not bool(out.finished[1])  # 9, 10, ..., 15, 8, ...: never 5


def _successor_model():
    """A Qwen3 whose greedy next token after t is t + 1 (t < 15), and 8 after 15."""
    from rpt_core.model import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=16,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        tie_word_embeddings=False,
        eos_token_id=None,
        torch_dtype="float32",
    )
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream is the token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(16))
        model.lm_head.weight.zero_()
        for src in range(1, 16):
            model.lm_head.weight[src + 1 if src < 15 else 8, src] = 10.0
    return model.eval()


# ------------------------------------------------------------------------------ variable lengths, the loop

MANY = [[3 + i, 40 + 7 * i, 9, 100 + i][: 1 + i % 4] for i in range(10)]  # 10 prompts of 1-4 tokens


def variable_lengths(model, **params) -> SamplingParams:
    """Greedy (unless ``params`` say otherwise) with stop ids taken from a free greedy run, so rows of MANY
    stop after very different numbers of tokens."""
    base = run(model, SamplingParams(max_new_tokens=16, greedy=True), prompts=MANY)
    stops = tuple(sorted({int(base.tokens[0, 2]), int(base.tokens[3, 6]), int(base.tokens[5, 11])}))
    return SamplingParams(**{"max_new_tokens": 16, "greedy": True, "stop_token_ids": stops, **params})


def batch_widths(model, monkeypatch) -> list[int]:
    """Spy: the batch size of every decode step (the model sees (B, 1) token batches)."""
    widths = []
    real_hidden = model.hidden_states

    def spy(ids, *args, **kwargs):
        if ids.shape[1] == 1:
            widths.append(ids.shape[0])
        return real_hidden(ids, *args, **kwargs)

    monkeypatch.setattr(model, "hidden_states", spy)
    return widths


def assert_same_generation(a: Generation, b: Generation) -> None:
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.finished, b.finished)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def test_finished_rows_leave_the_batch_without_changing_any_row(model, monkeypatch):
    params = variable_lengths(model)
    fixed = run(model, params, prompts=MANY, num_samples=2, decode=DecodeOptions(compact=False))
    lengths = fixed.lengths()
    assert lengths.unique().numel() >= 3 and fixed.finished.any() and not fixed.finished.all()
    widths = batch_widths(model, monkeypatch)
    compacted = run(model, params, prompts=MANY, num_samples=2)
    assert_same_generation(compacted, fixed)
    # Each decode step runs exactly the rows still generating (checked every step on CPU).
    expected = [int((lengths > t).sum()) for t in range(1, len(widths) + 1)]
    assert widths == expected and widths[-1] < 20


def test_host_checks_every_few_steps_change_nothing(model, monkeypatch):
    params = variable_lengths(model)
    every = run(model, params, prompts=MANY)
    widths = batch_widths(model, monkeypatch)
    sparse = run(model, params, prompts=MANY, decode=DecodeOptions(check_every=5))
    assert_same_generation(sparse, every)
    assert len(set(widths[:4])) == 1 and len(set(widths[4:9])) == 1 and widths[4] < widths[0]  # at checks


def test_static_shapes_give_the_same_tokens(model, monkeypatch):
    """Bucketed rows and key windows (the shapes a compiled / CUDA-graph step is captured at), eagerly."""
    params = variable_lengths(model)
    exact = run(model, params, prompts=MANY, num_samples=2)
    widths = batch_widths(model, monkeypatch)
    static = run(model, params, prompts=MANY, num_samples=2, decode=DecodeOptions(static_shapes=True))
    assert_same_generation(static, exact)
    assert set(widths) <= {20, 16, 14, 12, 10, 8} and widths[-1] < 20  # row buckets, shrinking


def test_logprobs_match_a_fresh_forward_with_rows_leaving(model):
    params = variable_lengths(model, max_new_tokens=14, greedy=False, temperature=0.9)
    options = DecodeOptions(check_every=3, static_shapes=True)
    gen = run(model, params, prompts=MANY, num_samples=3, decode=options)
    assert gen.lengths().unique().numel() > 1
    for row, logits in enumerate(recompute_logits(model, MANY, gen)):
        n = logits.shape[0]
        tok = gen.tokens[row, :n]
        expected = (logits / 0.9).log_softmax(-1).gather(-1, tok[:, None])[:, 0]
        torch.testing.assert_close(gen.logprobs[row, :n], expected, atol=1e-4, rtol=0)
        assert (gen.tokens[row, n:] == 0).all() and not gen.mask[row, n:].any()


def test_in_place_softmax_equals_softmax():
    from rpt_core.model.generation import softmax_

    z = 5 * torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    expected = torch.softmax(z, -1)
    assert softmax_(z) is z
    torch.testing.assert_close(z, expected, atol=0, rtol=1e-6)


def test_rows_that_fit_counts_the_cache_and_the_sampler_scratch(model):
    from rpt_core.model.generation import rows_that_fit

    cfg = model.config  # 2 layers, 2 KV heads of 16 dims, float32: 512 bytes of K and V per slot
    per_row = 100 * 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 + 12 * VOCAB
    assert rows_that_fit(model, 100, free_bytes=2 * 10 * per_row) == 10  # half the free memory
    assert rows_that_fit(model, 100, free_bytes=10) == 1  # never zero
