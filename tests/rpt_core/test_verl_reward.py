"""verl's ``compute_score``: hand-checked scores, and the same rewards as ``rpt-train``'s own path for the
same completions (rpt: ids -> ``extract_predictions`` -> ``score_rows``; verl: ids -> the real Qwen3
tokenizer's ``decode(skip_special_tokens=True)`` in transformers -> ``compute_score``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from rpt_core.reward import score_rows
from rpt_core.runtime.errors import RptError
from rpt_core.text.prompts import load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_core.verl_reward import compute_score
from rpt_data.export.verl_rows import check_think_end, verl_row
from rpt_train.rl.rollout import extract_predictions, stop_token_ids
from tests.conftest import QWEN3_TOKENIZER

CONTEXT = "Add the two numbers. The sum of 19 and 23 is"
LABEL_TEXT = " forty-two, which"
PENALTY = -1.0  # distinct from a wrong answer's 0, so a format failure cannot pass for a miss


def info(label: bytes, boundaries, template: str = "qwen3-think", **extra) -> dict:
    return {
        "label_b64": base64.b64encode(label).decode(),
        "boundaries": list(boundaries),
        "template": template,
        **extra,
    }


# ------------------------------------------------------------------------------------- hand-checked


def test_boxed_prefix_on_a_boundary_scores_one_and_reports_the_prediction():
    out = compute_score(
        "rpt", "<think>hm</think>\n\n\\boxed{ forty}", " forty-two", info(b" forty-two", [6, 7, 10])
    )
    assert out == {"score": 1.0, "acc": 1.0, "pred": " forty", "format_ok": True}


def test_prefix_off_a_boundary_or_wrong_scores_zero():
    extra = info(b" forty-two", [6, 7, 10])
    assert compute_score("rpt", "</think>\\boxed{ fort}", "", extra)["score"] == 0.0
    assert compute_score("rpt", "</think>\\boxed{forty}", "", extra)["score"] == 0.0  # the space matters


def test_no_reasoning_end_is_a_format_failure_with_the_exported_penalty():
    out = compute_score("rpt", "<think>\\boxed{ forty}", "", info(b" forty", [6], format_penalty=-0.5))
    assert out == {"score": -0.5, "acc": 0.0, "pred": "", "format_ok": False}


def test_reward_kwargs_override_the_exported_reward_settings():
    extra = info(b" forty-two", [6, 10], reward="prefix", format_penalty=0.0)
    text = "</think>\\boxed{ forty-two}"
    assert compute_score("rpt", text, "", extra)["score"] == 1.0
    assert compute_score("rpt", text, "", extra, reward="first-token")["score"] == 0.0
    assert compute_score("rpt", "no answer", "", extra, format_penalty=-2.0)["score"] == -2.0


def test_answer_tags_and_plain_templates_extract_as_their_template_does():
    assert (
        compute_score("rpt", "</think><answer> 4</answer>", "", info(b" 42", [2, 3], "answer-tags"))["score"]
        == 1.0
    )
    assert compute_score("rpt", " 4", "", info(b" 42", [2, 3], "plain"))["score"] == 1.0
    # plain: an empty completion (only a stop token, which verl's decoding drops) extracted nothing
    assert compute_score("rpt", "", "", info(b" 42", [2, 3], "plain", format_penalty=-1.0))["score"] == -1.0


def test_label_bytes_come_from_label_b64_not_the_replacement_decoded_ground_truth():
    label = "é".encode()[:1] + b"x"  # not valid UTF-8
    extra = info(label, [1, 2], "plain")
    assert compute_score("rpt", "\ufffdx", label.decode("utf-8", "replace"), extra)["score"] == 0.0
    assert compute_score("rpt", "\udcc3", "", extra)["score"] == 0.0  # a lone surrogate never matches


def test_other_data_sources_and_rows_without_label_bytes_are_refused():
    with pytest.raises(RptError, match="data_source 'rpt' rows only"):
        compute_score("openai/gsm8k", "#### 4", "4", {})
    with pytest.raises(RptError, match="label_b64"):
        compute_score("rpt", "x", "x", {"boundaries": [1]})
    with pytest.raises(RptError, match="extra_info is missing"):
        compute_score("rpt", "x", "x")


def test_extra_keyword_arguments_from_verl_are_accepted():
    out = compute_score(
        data_source="rpt",
        solution_str="</think>\\boxed{ 4}",
        ground_truth=" 4",
        extra_info={**info(b" 4", [2]), "num_turns": 2, "rollout_reward_scores": {}},
        reward_router_address=None,
    )
    assert out["score"] == 1.0


# ------------------------------------------------------------------------ rpt-train path == verl path


@pytest.fixture(scope="module")
def rpt_tok(qwen3_raw_tokenizer) -> Tokenizer:
    return Tokenizer(qwen3_raw_tokenizer)


@pytest.fixture(scope="module")
def hf_tok():
    return AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER.parent))


@pytest.fixture(scope="module")
def row(rpt_tok) -> dict:
    ids, spans = rpt_tok.encode_with_spans(LABEL_TEXT)
    return {
        "doc_id": "d:0",
        "position": 9,
        "context": CONTEXT,
        "label": LABEL_TEXT.encode(),
        "boundaries": [end for _, end in spans],
        "entropy": 1.25,
    }


def rpt_rewards(tok: Tokenizer, template, completions: list[list[int]], row, kind, truncated=None):
    """``rpt-train``: padded completion ids -> extract_predictions -> score_rows (the trainer's calls)."""
    width = max(len(c) for c in completions)
    tokens = torch.zeros(len(completions), width, dtype=torch.long)
    mask = torch.zeros(len(completions), width, dtype=torch.bool)
    for i, ids in enumerate(completions):
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = True
    cut = torch.zeros(len(completions), dtype=torch.bool) if truncated is None else torch.tensor(truncated)
    preds = extract_predictions(tok, template, tokens, mask, cut, stop_token_ids(tok))
    return score_rows(preds, [row], len(completions), kind, PENALTY)[0].tolist()


def verl_rewards(hf, template, completions: list[list[int]], row, kind) -> list[float]:
    """verl: the exported row; each completion decoded as verl's reward managers do, then compute_score."""
    exported = verl_row(row, "train", 0, template, kind, PENALTY)
    scores = []
    for ids in completions:
        text = hf.decode(ids, skip_special_tokens=True)
        gt = exported["reward_model"]["ground_truth"]
        scores.append(compute_score("rpt", text, gt, dict(exported["extra_info"]))["score"])
    return scores


def chat_completions(tok: Tokenizer, row, close: str, open_: str) -> list[list[int]]:
    end = tok.token_to_id("<|im_end|>")
    first, non_boundary = LABEL_TEXT[: row["boundaries"][0]], LABEL_TEXT[:3]
    texts = [
        f"<think>\nthe sum is 42\n</think>\n\n{open_}{first}{close}",  # right: the first token
        f"<think>\nok\n</think>\n\n{open_}{LABEL_TEXT}{close}",  # right: the whole label
        f"<think>\nok\n</think>\n\n{open_}{non_boundary}{close}",  # a prefix off the boundaries
        f"<think>\nok\n</think>\n\n{open_} forty-one{close}",  # wrong
        f"<think>\nstill thinking {open_}{first}{close}",  # never closed its reasoning: format failure
        f"<think>\nok\n</think>\n\n{open_}{first}",  # unclosed answer: format failure
        "<think>\nok\n</think>\n\nno answer at all",
        f"<think>\nok\n</think>\n\n{open_}{close}",  # empty answer: extracted, wrong
    ]
    ids = [tok.encode(t) + [end] for t in texts]
    ids.append(tok.encode(texts[0]))  # stopped without a stop token (but not cut off)
    ids.append(tok.encode(texts[0]) + [tok.token_to_id("<|endoftext|>")])  # the other stop token
    return ids


@pytest.mark.parametrize("name", ["qwen3-think", "answer-tags"])
@pytest.mark.parametrize("kind", ["prefix", "first-token"])
def test_chat_templates_score_the_same_through_rpt_train_and_verl(name, kind, rpt_tok, hf_tok, row):
    template = load_template(name)
    close, open_ = ("}", "\\boxed{") if name == "qwen3-think" else ("</answer>", "<answer>")
    completions = chat_completions(rpt_tok, row, close, open_)
    ours = rpt_rewards(rpt_tok, template, completions, row, kind)
    assert ours == verl_rewards(hf_tok, template, completions, row, kind)
    # the cases above really span every outcome (so equality is not vacuous)
    assert {1.0, 0.0, PENALTY} <= set(ours)


def test_plain_scores_the_same_through_rpt_train_and_verl(rpt_tok, hf_tok, row):
    """verl generates at most answer_tokens tokens (data.max_response_length); so does rpt-train."""
    template = load_template("plain", answer_tokens=2)
    label_ids = rpt_tok.encode(LABEL_TEXT)
    end, eot = rpt_tok.token_to_id("<|im_end|>"), rpt_tok.token_to_id("<|endoftext|>")
    completions = [
        label_ids[:2],  # right
        label_ids[:1] + [eot],  # right (one token, then stopped)
        label_ids[1:3],  # wrong
        [end],  # nothing generated: format failure on both sides
        [eot],
    ]
    ours = rpt_rewards(rpt_tok, template, completions, row, "prefix")
    assert ours == verl_rewards(hf_tok, template, completions, row, "prefix")
    assert ours == [1.0, 1.0, 0.0, PENALTY, PENALTY]


def test_qwen3_keeps_think_end_when_verl_skips_special_tokens(rpt_tok, hf_tok):
    ids = rpt_tok.encode("<think>a</think>b") + [rpt_tok.token_to_id("<|im_end|>")]
    assert hf_tok.decode(ids, skip_special_tokens=True) == "<think>a</think>b"


@pytest.fixture(scope="module")
def special_think_dir(tmp_path_factory) -> Path:
    """The Qwen3 tokenizer with ``</think>`` flagged special, as some reasoning models ship it."""
    out = tmp_path_factory.mktemp("special-think")
    tok = json.loads(QWEN3_TOKENIZER.read_text(encoding="utf-8"))
    for added in tok["added_tokens"]:
        added["special"] = added["special"] or added["content"] == "</think>"
    (out / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    config = json.loads((QWEN3_TOKENIZER.parent / "tokenizer_config.json").read_text(encoding="utf-8"))
    for added in config["added_tokens_decoder"].values():
        added["special"] = added["special"] or added["content"] == "</think>"
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def test_a_special_think_end_vanishes_in_verl_so_export_refuses_that_tokenizer(special_think_dir, row):
    """Where ``</think>`` is special, verl deletes it before compute_score runs: the same completion that
    rpt-train rewards scores the format penalty there (documented), and the export refuses the pair."""
    rpt_tok = Tokenizer.load(special_think_dir)
    hf = AutoTokenizer.from_pretrained(str(special_think_dir))
    template = load_template("qwen3-think")
    completion = chat_completions(rpt_tok, row, "}", "\\boxed{")[:1]
    assert "</think>" not in hf.decode(completion[0], skip_special_tokens=True)
    assert rpt_rewards(rpt_tok, template, completion, row, "prefix") == [1.0]
    assert verl_rewards(hf, template, completion, row, "prefix") == [PENALTY]
    with pytest.raises(RptError, match="special token"):
        check_think_end(template, rpt_tok)
    check_think_end(load_template("plain"), rpt_tok)  # no reasoning, nothing to lose
    # the documented fix: the shipped Qwen3 flags (special: false) pass
    check_think_end(template, Tokenizer.load(QWEN3_TOKENIZER))


def test_a_cut_off_completion_is_scored_on_its_text_in_verl(rpt_tok, hf_tok, row):
    """The one documented difference: verl does not tell compute_score that a response hit
    data.max_response_length, so an answer completed before the cut still counts there."""
    template = load_template("qwen3-think")
    completion = [rpt_tok.encode(f"<think>x</think>\\boxed{{{LABEL_TEXT[: row['boundaries'][0]]}}} and then")]
    assert rpt_rewards(rpt_tok, template, completion, row, "prefix", truncated=[True]) == [PENALTY]
    assert verl_rewards(hf_tok, template, completion, row, "prefix") == [1.0]
