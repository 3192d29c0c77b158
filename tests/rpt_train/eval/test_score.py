"""Tests for rpt_train.eval.score: entropy buckets at their thresholds, deterministic per-bucket sampling, and
exact accuracies of a hand-made model whose greedy next token is known for every context."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

import rpt_train.eval.score as evaluate
import rpt_train.rl.rollout as rollout_module
from rpt_core.data.shards import rows_to_table, shard_name, write_shard
from rpt_core.model import Qwen3ForCausalLM
from rpt_core.runtime.progress import Progress
from rpt_core.text.prompts import load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval.run import EvalConfig, load_rows
from rpt_train.eval.score import (
    BUCKETS,
    EvalSettings,
    accuracy_by_bucket,
    buckets_of,
    evaluate_model,
    ntp_correct,
    reasoning_correct,
    sampled_accuracy,
    select_samples,
)
from rpt_train.rl.objective_rpt import RptObjective
from rpt_train.rl.rollout import rollout, stop_token_ids
from tests.helpers import TextTemplate, bigram_model, byte_tokenizer, shard_row

# ------------------------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


MAPPING = {"x": "y", "y": "w", "p": "ab", "q": "z"}


# (row, ntp correct, reasoning correct) for MAPPING with the plain template, answer_tokens = 1.
HAND_CASES = [
    (shard_row("A", "x", ["y", "w"], 0.4999), True, True),  # below every threshold: never evaluated
    (shard_row("B", "zzx", ["y", "w"], 0.5), True, True),  # easy
    (shard_row("C", "x", ["z"], 0.9999), False, False),  # easy
    # "ab" is one predicted token covering two label tokens: wrong next token, right 2-token prefix.
    (shard_row("D", "abp", ["a", "b"], 1.0), False, True),  # easy, medium
    (shard_row("E", "q", ["z"], 1.5), True, True),  # easy, medium, hard
    (shard_row("F", "p", ["a", "bc"], 2.0), False, False),  # "ab" ends inside the token "bc"
    (shard_row("G", "yp", ["ab"], 1.7), True, True),
]
# Hand-counted from HAND_CASES: {mode: {bucket: (correct, total)}}.
EXPECTED = {
    "ntp": {"easy": (3, 6), "medium": (2, 4), "hard": (2, 3)},
    "reasoning": {"easy": (4, 6), "medium": (3, 4), "hard": (2, 3)},
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok) -> Qwen3ForCausalLM:
    return bigram_model(tok, MAPPING)


def settings(**kw) -> EvalSettings:
    template = load_template("plain", answer_tokens=kw.pop("answer_tokens", 1))
    return EvalSettings(template=template, **{"batch_size": 3, **kw})


def write_val_shard(root, rows) -> None:
    write_shard(root / "val" / shard_name("val", 0, 0), rows_to_table(rows))


# -------------------------------------------------------------------------------------------- buckets


@pytest.mark.parametrize(
    ("entropy", "expected"),
    [
        (0.0, []),
        (0.4999, []),
        (0.5, ["easy"]),
        (0.9999, ["easy"]),
        (1.0, ["easy", "medium"]),
        (1.4999, ["easy", "medium"]),
        (1.5, ["easy", "medium", "hard"]),
        (2.0, ["easy", "medium", "hard"]),
    ],
)
def test_buckets_at_the_thresholds(entropy, expected):
    assert buckets_of(entropy) == expected
    # Shards store entropy as float32: the thresholds are exact there and 0.4999 stays below 0.5.
    assert buckets_of(float(np.float32(entropy))) == expected


def test_thresholds_are_the_papers():
    assert BUCKETS == {"easy": 0.5, "medium": 1.0, "hard": 1.5}


# ------------------------------------------------------------------------------------ sample selection


def many_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"doc_id": f"doc{i % 17}", "position": i, "entropy": rng.choice([0.1, 0.7, 1.2, 1.9, 3.0])}
        for i in range(n)
    ]


def key(row: dict) -> tuple[str, int]:
    return row["doc_id"], row["position"]


def chosen_for(rows: list[dict], bucket: str) -> list[tuple[str, int]]:
    return [key(r) for r in rows if bucket in r["buckets"]]


def test_select_samples_is_deterministic_and_ignores_input_order():
    rows = many_rows(300)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    first = select_samples(rows, 20, seed=3)
    assert [key(r) for r in first] == [key(r) for r in select_samples(shuffled, 20, seed=3)]
    assert first == select_samples(rows, 20, seed=3)
    other = select_samples(rows, 20, seed=4)
    assert [key(r) for r in other] != [key(r) for r in first]


def test_select_samples_caps_every_bucket_exactly():
    rows = many_rows(300)
    sizes = {b: sum(1 for r in rows if b in buckets_of(r["entropy"])) for b in BUCKETS}
    assert min(sizes.values()) > 40  # every bucket is larger than the cap below
    kept = select_samples(rows, 25)
    for bucket in BUCKETS:
        assert len(chosen_for(kept, bucket)) == 25
    assert all(r["entropy"] >= 0.5 for r in kept)
    # A row counts only in buckets it reaches, and the input rows are not modified.
    assert all(set(r["buckets"]) <= set(buckets_of(r["entropy"])) for r in kept)
    assert all("buckets" not in r for r in rows)
    table = accuracy_by_bucket(kept, [True] * len(kept))
    assert {b: table[b]["total"] for b in BUCKETS} == dict.fromkeys(BUCKETS, 25)


def test_each_bucket_is_a_sample_of_its_own_positions():
    """The hard sample does not depend on easy-only rows (and vice versa): no bucket is skewed by another."""
    rows = many_rows(300)
    kept = select_samples(rows, 10)
    hard_only = [r for r in rows if r["entropy"] >= 1.5]
    assert chosen_for(kept, "hard") == chosen_for(select_samples(hard_only, 10), "hard")
    # Adding rows below every threshold changes nothing.
    noise = [{"doc_id": "low", "position": i, "entropy": 0.2} for i in range(50)]
    assert select_samples(rows + noise, 10) == kept


def test_select_samples_without_cap_keeps_every_bucketed_row():
    rows = many_rows(100)
    kept = select_samples(rows, None)
    assert sorted(map(key, kept)) == sorted(key(r) for r in rows if r["entropy"] >= 0.5)
    assert all(r["buckets"] == buckets_of(r["entropy"]) for r in kept)


def test_small_bucket_is_taken_whole():
    rows = [{"doc_id": "d", "position": i, "entropy": 0.6} for i in range(30)]
    rows += [{"doc_id": "d", "position": 100 + i, "entropy": 2.5} for i in range(3)]
    kept = select_samples(rows, 8)
    assert len(chosen_for(kept, "hard")) == 3
    assert len(chosen_for(kept, "medium")) == 3
    assert len(chosen_for(kept, "easy")) == 8


# --------------------------------------------------------------------------------- accuracy by bucket


def test_accuracy_by_bucket_hand_count():
    rows = [{"entropy": e} for e in (0.6, 1.2, 1.6, 1.6, 0.2)]
    table = accuracy_by_bucket(rows, [True, False, True, False, True])
    assert table["easy"] == {"correct": 2, "total": 4, "accuracy": 0.5}
    assert table["medium"] == {"correct": 1, "total": 3, "accuracy": pytest.approx(1 / 3)}
    assert table["hard"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    empty = accuracy_by_bucket([{"entropy": 0.7}], [True])
    assert math.isnan(empty["hard"]["accuracy"]) and empty["hard"]["total"] == 0
    with pytest.raises(ValueError):
        accuracy_by_bucket(rows, [True])


# --------------------------------------------------------------------------------- hand-made model


def test_bigram_model_predicts_the_mapping(tok, model):
    for src, dst in MAPPING.items():
        logits = model(torch.tensor([tok.encode("zz" + src)]))[0, -1]
        assert tok.token_bytes(int(logits.argmax())) == dst.encode()


def test_hand_made_accuracy_per_bucket_and_mode(tmp_path, tok, model):
    write_val_shard(tmp_path, [row for row, _, _ in HAND_CASES])
    rows = load_rows(EvalConfig(shards=str(tmp_path), max_samples=None))
    assert sorted(r["doc_id"] for r in rows) == list("BCDEFG")
    verdicts = evaluate_model(model, tok, rows, settings())
    for mode, buckets in EXPECTED.items():
        table = accuracy_by_bucket(rows, verdicts[mode])
        for bucket, (correct, total) in buckets.items():
            cell = table[bucket]
            assert (cell["correct"], cell["total"]) == (correct, total), (mode, bucket)
            assert cell["accuracy"] == correct / total


def test_progress_advances_once_per_position_and_mode(tok, model):
    rows = [row for row, _, _ in HAND_CASES]
    progress = Progress(None, quiet=True)
    evaluate_model(model, tok, rows, settings(), progress=progress)
    assert progress.n == 2 * len(rows)


def test_per_row_verdicts_and_batch_size_independence(tok, model):
    rows = [row for row, _, _ in HAND_CASES]
    for batch_size in (1, 4, 32):
        s = settings(batch_size=batch_size)
        assert ntp_correct(model, tok, rows, s) == [ntp for _, ntp, _ in HAND_CASES]
        assert reasoning_correct(model, tok, rows, s) == [r for _, _, r in HAND_CASES]


def test_reasoning_with_two_answer_tokens(tok, model):
    rows = [
        shard_row("a", "x", ["y", "w"], 1.0),  # rollout "y", "w": both tokens right
        shard_row("b", "x", ["y"], 1.0),  # "yw" is longer than the label
        shard_row("c", "x", ["y", "wz"], 1.0),  # "yw" ends inside the second token
        shard_row("d", "q", ["z", "a"], 1.0),  # "z" is unmapped: then token 0 (all logits equal)
    ]
    assert reasoning_correct(model, tok, rows, settings(answer_tokens=2)) == [True, False, False, False]
    # ntp ignores answer_tokens: only the first token matters.
    assert ntp_correct(model, tok, rows, settings(answer_tokens=2)) == [True, True, True, True]


def test_sampled_rollouts_are_seeded(tok, model):
    rows = [row for row, _, _ in HAND_CASES]
    greedy = reasoning_correct(model, tok, rows, settings())
    # Logit margin 10 * sqrt(32) / 0.7 ~ 80 nats: every sample equals the greedy token.
    sampled = sampled_accuracy(model, tok, rows, settings(temperature=0.7, seed=5, samples=3))
    assert sampled == [float(g) for g in greedy]
    # "y" and "z" tie after "x": each sample is a coin flip, reproducible from the seed alone.
    coin = bigram_model(tok, {"x": "y"})
    with torch.no_grad():
        coin.lm_head.weight[tok.encode("z")[0]] = coin.lm_head.weight[tok.encode("y")[0]]
    many = [shard_row(str(i), "x", ["y"], 1.0) for i in range(40)]
    a = sampled_accuracy(coin, tok, many, settings(temperature=1.0, seed=1, samples=1))
    assert a == sampled_accuracy(coin, tok, many, settings(temperature=1.0, seed=1, samples=1))
    assert 5 < sum(a) < 35
    assert a != sampled_accuracy(coin, tok, many, settings(temperature=1.0, seed=2, samples=1))
    four = sampled_accuracy(coin, tok, many, settings(temperature=1.0, seed=1, samples=4))
    assert set(four) <= {0.0, 0.25, 0.5, 0.75, 1.0} and len(set(four)) > 2  # the share of 4 samples
    assert reasoning_correct(coin, tok, many, settings()) == [True] * 40  # greedy: the first of the tie


def test_chat_template_without_an_answer_scores_zero(tok, model):
    rows = [row for row, _, _ in HAND_CASES[1:]]
    s = EvalSettings(template=load_template("qwen3-think"), max_new_tokens=3, batch_size=8)
    assert reasoning_correct(model, tok, rows, s) == [False] * len(rows)


def test_chat_prompt_truncates_the_context_not_the_instruction(tok, model, monkeypatch):
    seen: list[list[int]] = []
    real = evaluate.generate

    def spy(model, prompts, *args, **kwargs):
        seen.extend(prompts)
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(evaluate, "generate", spy)  # ntp
    monkeypatch.setattr(rollout_module, "generate", spy)  # reasoning: the training rollout path
    template = load_template("qwen3-think")
    rows = [shard_row("a", "q" * 200 + "END", ["y"], 1.0)]
    reasoning_correct(
        model, tok, rows, EvalSettings(template=template, max_prompt_tokens=3, max_new_tokens=1)
    )
    (prompt,) = seen
    assert tok.decode(prompt) == template.render("END")  # the last 3 context tokens, in the full chat prompt
    seen.clear()
    ntp_correct(model, tok, rows, EvalSettings(template=template, max_prompt_tokens=3))
    assert seen == [tok.encode("END")]  # ntp: the raw context's last tokens


def test_predicted_id_beyond_the_tokenizer_is_wrong_not_a_crash(tok):
    # Model vocabularies are often padded past the tokenizer's (Qwen3: 151,936 vs 151,669 ids).
    padded = bigram_model(tok, {"x": str(tok.vocab_size + 2)}, extra_vocab=4)
    rows = [shard_row("a", "x", ["y"], 1.0)]
    assert ntp_correct(padded, tok, rows, settings()) == [False]
    assert reasoning_correct(padded, tok, rows, settings()) == [False]


def test_long_context_is_left_truncated(tok, model):
    # The prediction depends on the last token only, so truncating to one token keeps it right.
    rows = [shard_row("a", "q" * 50 + "x", ["y"], 1.0)]
    assert ntp_correct(model, tok, rows, settings(max_prompt_tokens=1)) == [True]


def test_ntp_compares_the_predicted_id_with_the_rows_token_id(tok, model):
    row = shard_row("a", "x", ["y"], 1.0)  # the model's greedy next token after "x" is "y"
    assert ntp_correct(model, tok, [row], settings()) == [True]
    other = {**row, "token_id": tok.encode("w")[0]}  # same label bytes, another ground-truth id
    assert ntp_correct(model, tok, [other], settings()) == [False]


def test_reasoning_uses_the_training_rollout_and_reward(tok, model, monkeypatch):
    """Training's stop ids and cut-off rule: a completion cut off at max_new_tokens earns nothing, even
    when its text would match (training scores it as a format failure)."""
    seen = []
    real = rollout_module.generate

    def spy(model, prompts, params, *args, **kwargs):
        seen.append(params)
        return real(model, prompts, params, *args, **kwargs)

    monkeypatch.setattr(rollout_module, "generate", spy)
    rows = [shard_row("a", "x", ["y", "w"], 1.0)]  # the model continues "x" with "y", "w", ... never stops
    s = EvalSettings(template=TextTemplate(), max_new_tokens=2, batch_size=1)
    assert reasoning_correct(model, tok, rows, s) == [False]
    assert seen[0].stop_token_ids == stop_token_ids(tok) and seen[0].max_new_tokens == 2
    spec = s.rollout_spec(tok)
    trained = RptObjective().score(rollout(model, tok, s.template, rows, spec, torch.Generator()))
    assert trained.truncated.tolist() == [True] and trained.rewards.tolist() == [[0.0]]
