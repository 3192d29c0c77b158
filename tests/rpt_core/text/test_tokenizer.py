"""Tests for rpt_core.text.tokenizer against the real Qwen3 tokenizer and tiny hand-built ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer, TokenSpanMismatch, bytes_to_unicode
from tests.conftest import CHAMP, GSM8K, QWEN3_DIR

QWEN_DIR = QWEN3_DIR

KNOWN_TEXT = "The capital of France is Paris. $x^2+1=5$"
KNOWN_IDS = [785, 6722, 315, 9625, 374, 12095, 13, 400, 87, 61, 17, 10, 16, 28, 20, 3]


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer.load(QWEN_DIR / "tokenizer.json")


def _documents(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [r["problem"] + "\n\n" + r["solution"] for r in map(json.loads, f) if r]


def _boundaries(spans) -> set[int]:
    return {s for s, _ in spans} | {e for _, e in spans}


def test_known_ids_and_vocabulary_facts(qwen):
    assert qwen.encode(KNOWN_TEXT) == KNOWN_IDS
    assert qwen.decode(KNOWN_IDS) == KNOWN_TEXT
    assert (qwen.vocab_size, qwen.base_vocab_size) == (151_669, 151_643)
    assert qwen.token_to_id("<|endoftext|>") == 151643
    assert qwen.token_to_id("<|im_start|>") == 151644
    assert qwen.token_to_id("<think>") == 151667
    assert qwen.token_to_id("</think>") == 151668
    assert qwen.token_to_id("definitely not a token") is None
    assert qwen.eos_id == 151645 and qwen.pad_id == 151643
    assert {151643, 151644, 151645} <= qwen.special_ids
    assert 151667 not in qwen.special_ids and 151667 in qwen.added_ids  # <think> is added, not special
    assert len(qwen.added_ids) == 26


def test_every_digit_is_a_boundary(qwen):
    text = "$x^2+1=5$ and 2024 is 12345."
    ids, spans = qwen.encode_with_spans(text)
    data = text.encode()
    cuts = _boundaries(spans)
    digit_positions = [i for i, b in enumerate(data) if chr(b).isdigit()]
    assert digit_positions
    for i in digit_positions:
        assert i in cuts and i + 1 in cuts, f"digit at byte {i} is not its own token"
    assert [qwen.token_bytes(t) for t in ids if qwen.token_bytes(t).strip().isdigit()] == [
        bytes([data[i]]) for i in digit_positions
    ]


def test_space_before_digit_is_own_token_but_word_keeps_space(qwen):
    pieces = [qwen.token_bytes(i) for i in qwen.encode("Paris has 3 museums")]
    assert b" Paris" not in pieces  # first word has no leading space
    assert b" has" in pieces and b" museums" in pieces
    assert pieces[pieces.index(b"3") - 1] == b" "
    assert qwen.encode(" Paris") == [12095]


def _is_partial_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_spans_round_trip_on_every_corpus_document(qwen):
    table = qwen.token_bytes_table
    partial_ids = {i for i, piece in enumerate(table) if _is_partial_utf8(piece)}
    docs_with_split_char = 0
    n_docs = 0
    for path in (CHAMP, GSM8K):
        docs = _documents(path)
        for start in range(0, len(docs), 2048):
            batch = docs[start : start + 2048]
            for doc, (ids, spans) in zip(batch, qwen.encode_batch_with_spans(batch), strict=True):
                data = qwen.normalize(doc).encode()
                assert len(ids) == len(spans) > 0
                starts, ends = [s for s, _ in spans], [e for _, e in spans]
                # contiguous spans covering all bytes, each as long as its token, tokens spelling the text
                assert starts[0] == 0 and ends[-1] == len(data) and starts[1:] == ends[:-1]
                assert [e - s for s, e in spans] == [len(table[i]) for i in ids]
                assert b"".join(table[i] for i in ids) == data
                docs_with_split_char += not partial_ids.isdisjoint(ids)
                n_docs += 1
        # batch and single-text paths agree
        assert qwen.encode_with_spans(docs[-1]) == qwen.encode_batch_with_spans([docs[-1]])[0]
        assert qwen.encode_with_spans(docs[0])[0] == qwen.encode(docs[0])
    assert n_docs == 270 + 7473
    assert docs_with_split_char > 0, "expected a multi-byte character split across tokens in the corpora"


def test_multibyte_character_split_across_tokens(qwen):
    text = "x 龘 y"  # a rare CJK character that Qwen3 splits into two byte-level tokens
    ids, spans = qwen.encode_with_spans(text)
    data = text.encode()
    char_start = data.index("龘".encode())
    inside = [(s, e) for s, e in spans if char_start <= s and e <= char_start + 3]
    assert len(inside) == 2, spans  # 3 UTF-8 bytes, two tokens: a boundary inside the character
    assert b"".join(qwen.token_bytes(i) for i in ids) == data
    assert qwen.decode(ids) == text


def test_spans_refer_to_the_normalized_text(qwen):
    text = "cafe\u0301 2"  # decomposed e + combining accent; NFC composes it
    normalized = qwen.normalize(text)
    assert normalized == "caf\u00e9 2"
    ids, spans = qwen.encode_with_spans(text)
    assert spans[-1][1] == len(normalized.encode())
    assert b"".join(qwen.token_bytes(i) for i in ids) == normalized.encode()


def test_special_token_bytes_and_matching(qwen):
    assert qwen.token_bytes(151645) == b"<|im_end|>"
    assert qwen.token_bytes(151667) == b"<think>"
    assert qwen.token_bytes(151643) == b"<|endoftext|>"
    ids, spans = qwen.encode_with_spans("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 151644 and ids[-1] == 151645
    assert spans[0] == (0, len(b"<|im_start|>"))
    assert len(qwen.token_bytes_table) == qwen.vocab_size


def test_fingerprint_stable_across_load_paths_and_save(qwen, tmp_path):
    via_dir = Tokenizer.load(str(QWEN_DIR))  # the fixture loaded the file itself
    assert via_dir.fingerprint == qwen.fingerprint
    assert len(qwen.fingerprint) == 64
    saved = qwen.save(tmp_path / "copy")  # pretty-printed: other bytes than the shared file
    assert saved == tmp_path / "copy" / "tokenizer.json"
    reloaded = Tokenizer.load(tmp_path / "copy")
    assert reloaded.fingerprint == qwen.fingerprint
    assert reloaded.encode(KNOWN_TEXT) == KNOWN_IDS


def _tiny_byte_level(alphabet: str | None = None, merges: list[tuple[str, str]] | None = None):
    """A byte-level BPE over ``alphabet`` (default: all 256 byte characters) with given merges."""
    chars = list(alphabet) if alphabet is not None else list(bytes_to_unicode().values())
    merges = merges if merges is not None else [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    vocab = {c: i for i, c in enumerate(chars)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_base_vocab_fingerprint_ignores_added_tokens_and_merge_format():
    base = Tokenizer(_tiny_byte_level())
    assert [base.token_bytes(i) for i in base.encode("a the")] == [b"a", b" the"]
    extended_raw = _tiny_byte_level()
    extended_raw.add_special_tokens(["<|extra|>"])
    extended = Tokenizer(extended_raw)
    assert extended.vocab_size == base.vocab_size + 1
    assert extended.fingerprint != base.fingerprint
    assert extended.base_vocab_fingerprint == base.base_vocab_fingerprint

    data = json.loads(base.raw.to_str())
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]  # legacy "a b" merges
    legacy = Tokenizer(tokenizers.Tokenizer.from_str(json.dumps(data)))
    assert legacy.base_vocab_fingerprint == base.base_vocab_fingerprint

    other = Tokenizer(_tiny_byte_level(merges=[("Ġ", "t"), ("h", "e")]))
    assert other.base_vocab_fingerprint != base.base_vocab_fingerprint


def test_missing_byte_alphabet_is_detected_not_silently_wrong():
    # Without the full byte alphabet BPE silently drops unknown bytes; spans must refuse that.
    tok = Tokenizer(_tiny_byte_level(alphabet="abcdefghijklmnopqrstuvwxyzĠ", merges=[]))
    assert tok.encode_with_spans("a b")[1] == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(TokenSpanMismatch):
        tok.encode_with_spans("a é b")
    with pytest.raises(TokenSpanMismatch):
        tok.encode_batch_with_spans(["ok", "a 7"])


def test_non_byte_level_vocabulary_is_rejected():
    raw = tokenizers.Tokenizer(models.WordLevel({"hello": 0, "\n": 1, "[UNK]": 2}, unk_token="[UNK]"))
    with pytest.raises(RptError, match="byte-level"):
        Tokenizer(raw)


def test_load_errors_are_one_line_rpt_errors(tmp_path, monkeypatch):
    with pytest.raises(RptError, match="no tokenizer.json"):
        Tokenizer.load(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(RptError, match="cannot read tokenizer"):
        Tokenizer.load(bad)
    with pytest.raises(RptError, match="no such file"):
        Tokenizer.load(tmp_path / "nested" / "missing" / "tokenizer.json")


def test_hub_id_offline_is_rpt_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    # The hub reads HF_HUB_OFFLINE at import time, so patch the module constant as well as the env.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)  # so the id cannot accidentally be a local path
    with pytest.raises(RptError, match="Hugging Face hub") as info:
        Tokenizer.load("rpt-test-no-such-org/no-such-tokenizer")
    assert "\n" not in str(info.value)
