"""Tests for the Qwen-style BPE trainer (rpt_data.tokenizer_train) and `rpt-data tokenizer train`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_data.cli import main as rpt_data_main
from rpt_data.cli.tokenizer import tokenizer_group
from rpt_data.tokenizer_train import ADDED_TOKENS, train_tokenizer
from tests.conftest import GSM8K, QWEN3_TOKENIZER

QWEN_JSON = QWEN3_TOKENIZER

UNSEEN = "Über 3.14159 cafés — 龘 🦜 naïve\ttabs\r\n  and  spaces 2024!"


def _records(n: int) -> list[dict]:
    with open(GSM8K, encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [r["problem"] + "\n\n" + r["solution"] for r in _records(300)]


@pytest.fixture(scope="module")
def trained(texts) -> Tokenizer:
    return Tokenizer(train_tokenizer(texts, vocab_size=2048))


def test_digits_are_single_tokens(trained, texts):
    table = trained.token_bytes_table
    digit_tokens = [t for t in table if any(chr(b).isdigit() for b in t)]
    assert digit_tokens, "the corpus has digits"
    assert all(len(t) == 1 for t in digit_tokens), [t for t in digit_tokens if len(t) > 1][:5]
    pieces = [trained.token_bytes(i) for i in trained.encode("Paid 12345 dollars")]
    start = pieces.index(b"1")
    assert pieces[start - 1 : start + 5] == [b" ", b"1", b"2", b"3", b"4", b"5"]


def test_space_before_digit_alone_and_words_keep_leading_space(trained):
    pieces = [trained.token_bytes(i) for i in trained.encode("She has 7 apples and the box")]
    assert pieces[pieces.index(b"7") - 1] == b" "
    assert b" the" in pieces and b" has" in pieces  # frequent gsm8k words merged with their space
    assert all(
        not (p.startswith(b" ") and any(chr(b).isdigit() for b in p)) for p in trained.token_bytes_table
    )


def test_added_tokens_follow_the_bpe_vocabulary(trained):
    assert trained.vocab_size == 2048
    assert trained.base_vocab_size == 2048 - len(ADDED_TOKENS)
    ids = [trained.token_to_id(content) for content, _ in ADDED_TOKENS]
    assert ids == list(range(2043, 2048))
    assert trained.special_ids == {2043, 2044, 2045}  # <think> / </think> added but not special, like Qwen3
    assert trained.eos_id == 2045 and trained.pad_id == 2043
    ids = trained.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 2044 and ids[-1] == 2045


def test_round_trip_and_full_byte_alphabet(trained, texts):
    for text in texts:
        assert trained.decode(trained.encode(text)) == text
    ids, spans = trained.encode_with_spans(UNSEEN)  # raises if any byte were dropped
    assert spans[-1][1] == len(trained.normalize(UNSEEN).encode())
    assert trained.decode(ids) == trained.normalize(UNSEEN)


def test_mirrors_qwen3_pipeline(trained):
    ours = json.loads(trained.raw.to_str())
    qwen = json.loads(QWEN_JSON.read_text(encoding="utf-8"))
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert ours[key] == qwen[key], key
    model_options = lambda d: {k: v for k, v in d["model"].items() if k not in ("vocab", "merges")}
    assert model_options(ours) == model_options(qwen)


def test_deterministic(texts, trained):
    again = Tokenizer(train_tokenizer(texts, vocab_size=2048))
    assert again.fingerprint == trained.fingerprint
    assert again.base_vocab_fingerprint == trained.base_vocab_fingerprint


def test_loads_with_our_tokenizer_and_transformers(trained, tmp_path, texts):
    import transformers

    file = trained.save(tmp_path)
    ours = Tokenizer.load(tmp_path)
    assert ours.fingerprint == trained.fingerprint
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(file))
    for text in [*texts[:20], UNSEEN, "<|im_start|>user\n<think>x</think><|im_end|>"]:
        ids = ours.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == ours.decode(ids)


def test_too_small_vocab_is_rpt_error():
    with pytest.raises(RptError, match="too small"):
        train_tokenizer(["abc"], vocab_size=100)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_train_writes_tokenizer_and_prints_summary(tmp_path):
    corpus = _write_jsonl(tmp_path / "gsm.jsonl", [*_records(150), {"problem": "no solution"}])
    out = tmp_path / "tok"
    result = CliRunner().invoke(
        tokenizer_group, ["train", str(corpus), "--vocab-size", "600", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    summary = [line for line in lines if line.startswith("wrote ")]
    assert len(summary) == 1 and "vocab 600" in summary[0] and "150 documents" in summary[0]
    assert "missing_field:solution=1" in summary[0]
    assert any(line.endswith("gsm.jsonl:151: missing_field:solution") for line in lines)  # the warning
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 600 and tok.token_to_id("<|im_end|>") == 597
    assert not list(out.glob(".*tmp"))  # no temp file left behind


def test_cli_no_usable_documents_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a"}\nnot json\n', encoding="utf-8")
    result = CliRunner().invoke(rpt_data_main, ["tokenizer", "train", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "error: no usable documents" in result.output
    assert "malformed_json=1" in result.output and "missing_field:solution=1" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "tokenizer.json").exists()
