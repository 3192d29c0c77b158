"""Rollouts: prompts -> completions -> predictions -> rewards -> advantages, truncation, and the group
selection used by dynamic sampling (on the tiny task of tests/rpt_train/taskkit.py)."""

from __future__ import annotations

import pytest
import torch

from rpt_core.model.generation import SamplingParams
from rpt_core.reward import compute_rewards
from rpt_core.text.prompts import load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.rl.grpo import group_advantages
from rpt_train.rl.objective_rpt import RptObjective
from rpt_train.rl.rollout import (
    RolloutSpec,
    concat_rollouts,
    informative_groups,
    rollout,
    sampling_params,
    select_groups,
    truncate_context,
)
from rpt_train.rl.step_metrics import rollout_metrics
from tests.helpers import (
    TextTemplate,
    next_letter,
    task_rows,
    tiny_model,
    tiny_tokenizer,
)

# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return tiny_tokenizer()


def plain_spec(tok, G=4, **kw) -> RolloutSpec:
    template = load_template("plain", answer_tokens=1)
    params = sampling_params(template, tok, max_new_tokens=50, temperature=1.0)
    return RolloutSpec(sampling=params, num_generations=G, **kw)


def test_tokenizer_and_task(tok):
    assert tok.encode(" c e") == [tok.token_to_id("Ġc"), tok.token_to_id("Ġe")]
    row = task_rows(1)[0]
    assert row["label"].startswith(f" {next_letter(row['context'][-1])}".encode())


def test_plain_rollout_rewards_and_advantages(tok):
    model = tiny_model(tok).eval()
    rows = task_rows(5)
    spec = plain_spec(tok, G=4)
    assert spec.sampling.max_new_tokens == 1  # the plain template caps generation at answer_tokens
    unscored = rollout(model, tok, load_template("plain"), rows, spec, torch.Generator().manual_seed(0))
    assert unscored.rewards is None and unscored.advantages is None  # the objective scores a rollout
    batch = RptObjective().score(unscored)
    assert batch.num_groups == 5 and batch.group_size == 4 and batch.num_sequences == 20
    assert batch.completion_ids.shape == (20, 1) and not bool(batch.truncated.any())
    # Rows are prompt-major and each prediction is the decoded first token (None for a stop token).
    eos = tok.token_to_id("<|endoftext|>")
    expected = [None if t == eos else tok.decode([t]) for t in batch.completion_ids[:, 0].tolist()]
    assert batch.predictions == expected
    labels = [r["label"] for r in rows for _ in range(4)]
    bounds = [r["boundaries"] for r in rows for _ in range(4)]
    assert batch.rewards.flatten().tolist() == compute_rewards(expected, labels, bounds, "prefix", 0.0)
    torch.testing.assert_close(batch.advantages, group_advantages(batch.rewards).flatten())
    ids, mask, P = batch.sequences()
    assert ids.shape == (20, P + 1) and bool((ids[4:8, :P] == batch.prompt_ids[1]).all())
    m = rollout_metrics(batch)
    assert m["reward"] == pytest.approx(batch.rewards.mean().item())
    assert m["completion_len_max"] == 1.0 and 0.0 <= m["frac_zero_std"] <= 1.0


def test_rewards_follow_the_generated_tokens(tok, monkeypatch):
    """With generate() replaced by a fixed output, rewards and advantages are exactly predictable."""
    from rpt_core.model.generation import Generation
    from rpt_train.rl import rollout as rollout_mod

    rows = task_rows(2)
    right = [tok.encode(r["label"].decode())[0] for r in rows]
    wrong = [tok.token_to_id("Ġ" + next_letter(next_letter(r["context"][-1]))) for r in rows]
    eos = tok.token_to_id("<|endoftext|>")
    tokens = torch.tensor(
        [[right[0]], [wrong[0]], [eos], [right[0]], [right[1]], [right[1]], [wrong[1]], [eos]]
    )

    def fake_generate(model, prompts, params, num_samples, generator, pad_id, decode=None):
        assert len(prompts) == 2 and num_samples == 4
        return Generation(
            tokens=tokens,
            logprobs=torch.zeros(8, 1),
            mask=torch.ones(8, 1, dtype=torch.bool),
            finished=tokens[:, 0] == eos,
            prompt_index=torch.arange(2).repeat_interleave(4),
        )

    monkeypatch.setattr(rollout_mod, "generate", fake_generate)
    objective = RptObjective(format_penalty=-0.5)
    model = tiny_model(tok)  # only asked where it lives
    batch = objective.score(rollout(model, tok, load_template("plain"), rows, plain_spec(tok, G=4), None))
    assert batch.rewards.tolist() == [[1.0, 0.0, -0.5, 1.0], [1.0, 1.0, 0.0, -0.5]]
    assert batch.format_failed.tolist() == [False, False, True, False, False, False, False, True]
    torch.testing.assert_close(batch.advantages, group_advantages(batch.rewards).flatten())
    m = {**rollout_metrics(batch), **objective.metrics(batch)}
    assert m["acc"] == 0.5 and m["format_fail"] == 0.25 and m["frac_zero_std"] == 0.0


def test_truncated_completions_have_no_prediction_and_can_be_masked(tok):
    model = tiny_model(tok, seed=3).eval()
    template = TextTemplate()
    params = sampling_params(template, tok, max_new_tokens=3, temperature=1.0)
    assert params.max_new_tokens == 3
    # Make the stop token likely enough that some completions end early and some are cut off.
    eos = tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        model.lm_head.weight[eos] = 0.0  # a neutral logit: as likely as an average token
    spec = RolloutSpec(sampling=params, num_generations=8)
    batch = rollout(model, tok, template, task_rows(6), spec, torch.Generator().manual_seed(0))
    batch = RptObjective(format_penalty=-1.0).score(batch)
    gen_len = batch.completion_mask.sum(-1)
    assert bool(batch.truncated.any()) and not bool(batch.truncated.all())
    for i in range(batch.num_sequences):
        if batch.truncated[i]:
            assert gen_len[i] == 3 and batch.predictions[i] is None
            assert batch.rewards.flatten()[i] == -1.0 and batch.format_failed[i]
    lm = batch.loss_mask(mask_truncated=True)
    assert not bool(lm[batch.truncated].any())
    assert bool((lm[~batch.truncated] == batch.completion_mask[~batch.truncated]).all())
    assert bool((batch.loss_mask(False) == batch.completion_mask).all())


def test_truncate_context_keeps_the_end(tok):
    ctx = " a b c d e f"
    assert truncate_context(tok, ctx, 10) == ctx
    assert truncate_context(tok, ctx, 2) == " e f"


def _hand_batch(tok, rewards: list[list[float]], T: int, P: int, seed: int):
    """A real rollout with its rewards replaced (advantages recomputed) and completions padded to T."""
    model = tiny_model(tok, seed).eval()
    rows = task_rows(len(rewards), seed)
    template = TextTemplate()
    params = SamplingParams(max_new_tokens=T, temperature=1.0, stop_token_ids=())
    b = rollout(model, tok, template, rows, RolloutSpec(sampling=params, num_generations=2), None)
    b.rewards = torch.tensor(rewards)
    b.advantages = group_advantages(b.rewards).flatten()
    return b


def test_select_concat_and_informative_groups(tok):
    a = _hand_batch(tok, [[1, 0], [1, 1], [0, 0]], T=2, P=3, seed=0)
    b = _hand_batch(tok, [[0, 1]], T=4, P=5, seed=1)
    assert informative_groups(a) == [0] and informative_groups(b) == [0]
    sel = select_groups(a, [2, 0])
    assert sel.rows == [a.rows[2], a.rows[0]] and sel.rewards.tolist() == [[0, 0], [1, 0]]
    assert bool((sel.completion_ids[2:] == a.completion_ids[:2]).all())
    cat = concat_rollouts([sel, b])
    assert cat.num_groups == 3 and cat.completion_ids.shape == (6, 4)
    assert not bool(cat.completion_mask[:4, 2:].any())  # short completions right-padded
    ids, mask, P = cat.sequences()
    ids_b, mask_b, P_b = b.sequences()
    # Each sequence keeps its real tokens in order after re-padding.
    for i, j in ((4, 0), (5, 1)):
        assert ids[i][mask[i].bool()].tolist() == ids_b[j][mask_b[j].bool()].tolist()
    ids_a, mask_a, _ = a.sequences()
    assert ids[2][mask[2].bool()].tolist() == ids_a[0][mask_a[0].bool()].tolist()
    assert cat.predictions[4:] == b.predictions and len(cat.format_failed) == 6


def test_rollout_batch_size_splits_generate_calls(tok):
    model = tiny_model(tok).eval()
    rows = task_rows(5)
    batch = rollout(
        model,
        tok,
        load_template("plain"),
        rows,
        plain_spec(tok, G=2, rollout_batch_size=2),
        torch.Generator().manual_seed(0),
    )
    assert batch.num_groups == 5 and batch.rows == rows and batch.num_sequences == 10


def test_dynamic_batch_draws_until_enough_informative_groups(tok):
    """Fake rollouts whose rewards are fixed per row: rows with id % 3 == 0 have unequal rewards."""
    from rpt_train.rl.rollout import DynamicSampling

    def dynamic_batch(roll, rows, next_rows, batch_size, max_resample_batches):  # the trainer's loop
        sampler = DynamicSampling(batch_size, max_resample_batches)
        sampler.add(roll(rows))
        while sampler.wants_more() and (more := next_rows(batch_size)):
            sampler.add(roll(more))
        return (*sampler.result(), sampler.extra_draws)

    real = _hand_batch(tok, [[0, 0]], T=2, P=3, seed=0)
    pool = iter(range(100))
    drawn_rows: list[int] = []

    def next_rows(n):
        return [{"id": next(pool)} for _ in range(n)]

    def roll(rows):
        drawn_rows.extend(r["id"] for r in rows)
        b = concat_rollouts([real] * len(rows))
        b.rows = list(rows)
        b.rewards = torch.tensor([[1.0, 0.0] if r["id"] % 3 == 0 else [0.0, 0.0] for r in rows])
        b.advantages = group_advantages(b.rewards).flatten()
        return b

    batch, drawn, tries = dynamic_batch(roll, next_rows(4), next_rows, batch_size=4, max_resample_batches=5)
    # ids 0..3 give 0 and 3; 4..7 give 6; 8..11 give 9 -> 4 informative groups after 2 extra draws.
    assert tries == 2 and drawn_rows == list(range(12)) and drawn.num_groups == 12
    assert [r["id"] for r in batch.rows] == [0, 3, 6, 9] and bool((batch.rewards[:, 0] == 1).all())
    # Bounded: with at most one extra draw the batch holds what was found.
    pool = iter(range(100))
    batch, _, tries = dynamic_batch(roll, next_rows(4), next_rows, batch_size=4, max_resample_batches=1)
    assert tries == 1 and [r["id"] for r in batch.rows] == [0, 3, 6]
    # Nothing informative at all: the first batch is used as is.
    pool = iter(range(1, 100, 3))
    batch, _, tries = dynamic_batch(roll, next_rows(2), next_rows, batch_size=2, max_resample_batches=2)
    assert tries == 2 and batch.num_groups == 2 and informative_groups(batch) == []


def test_contexts_per_generate_call_follow_free_memory_on_cuda(monkeypatch):
    """rollout_batch_size 0: every context in one call on a CPU; on CUDA, as many as half the free memory
    holds, the allocator's cached free memory included (a stand-in model says it lives on CUDA; the free
    memory is faked)."""
    from types import SimpleNamespace

    from rpt_train.rl import rollout as rollout_mod

    tok = tiny_tokenizer()
    model = tiny_model(tok)
    spec = RolloutSpec(SamplingParams(max_new_tokens=90), num_generations=4)
    prompts = [[1] * 10, [2] * 6, [3] * 3]
    assert rollout_mod.contexts_per_call(model, prompts, spec) == 3
    cfg = model.config
    on_cuda = SimpleNamespace(device=torch.device("cuda"), config=cfg, dtype=torch.float32)
    per_slot = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4  # K, V in float32
    per_row = 100 * per_slot + 12 * cfg.vocab_size  # 10 + 90 slots, and the sampler's scratch
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * 8 * per_row, 10**12))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    assert rollout_mod.contexts_per_call(on_cuda, prompts, spec) == 2  # 8 rows = 2 contexts of G = 4
    # After an update the allocator keeps freed activations cached: free to reuse, though the driver
    # counts them as used. 16 rows' worth reserved, 8 of them allocated: room for 8 more rows.
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2 * 16 * per_row)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * 8 * per_row)
    assert rollout_mod.contexts_per_call(on_cuda, prompts, spec) == 4  # 16 rows
