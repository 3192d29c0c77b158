"""Tokenizers built from GGUF metadata (rpt_core.text.gguf_tokenizer), on GGUFs written as llama.cpp does
(tests/helpers/gguf_files.py): a Qwen GGUF tokenizes the shipped corpora (GSM8K, CHAMP) exactly as Qwen3's own
tokenizer.json does, SmolLM's rule isolates digits as llama.cpp's does, the Llama-3 rule agrees with
transformers, and what cannot be built exactly is refused in one line. The real SmolLM2 file is checked
against transformers in test_convert.py."""

from __future__ import annotations

import json

import pytest
import transformers

from rpt_core.model.gguf import GgufFile
from rpt_core.runtime.errors import RptError
from rpt_core.text.gguf_tokenizer import tokenizer_config_from_gguf, tokenizer_from_gguf
from rpt_core.text.tokenizer import Tokenizer
from tests.conftest import CHAMP, GSM8K, QWEN3_TOKENIZER
from tests.helpers import truncated, write_gguf

KEEP = 8000  # BPE tokens kept from Qwen3's 151,643: every byte and the common merges, fast to read back


def corpus_texts() -> list[str]:
    texts = []
    for path in (GSM8K, CHAMP):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts.append(f"{record['problem']}\n\n{record['solution']}")
    return texts


@pytest.fixture(scope="module")
def qwen_pair(qwen3_raw_tokenizer, tmp_path_factory):
    """(the reference tokenizer, the GGUF written from it with llama.cpp's 'qwen2' pre-tokenizer name)."""
    reference = truncated(qwen3_raw_tokenizer, KEEP)
    template = json.loads((QWEN3_TOKENIZER.parent / "tokenizer_config.json").read_text())["chat_template"]
    path = write_gguf(
        tmp_path_factory.mktemp("gguf") / "qwen.gguf",
        tokenizer=reference,
        pre="qwen2",
        eos="<|im_end|>",
        chat_template=template,
    )
    return reference, GgufFile(path)


def test_qwen_gguf_tokenizes_the_corpora_like_its_tokenizer_json(qwen_pair):
    reference, f = qwen_pair
    ours, theirs = Tokenizer(tokenizer_from_gguf(f)), Tokenizer(reference)
    texts = corpus_texts()
    assert len(texts) == 7743  # every document of the two shipped corpora
    assert ours.encode_batch(texts) == theirs.encode_batch(texts)
    # Qwen's NFC normalizer, chat specials matched whole, the non-special added <think>, digits one by one.
    for text in [
        "Cafe\u0301 \u212b",
        "<|im_start|>user\n<think>x</think><|im_end|>",
        "  12345 x\u00b2 \u00bd\r\n",
    ]:
        assert ours.encode(text) == theirs.encode(text), text
    assert ours.eos_id == theirs.eos_id == KEEP + 2  # <|im_end|>
    assert ours.special_ids == theirs.special_ids and ours.added_ids == theirs.added_ids
    assert ours.token_bytes_table == theirs.token_bytes_table


def test_smollm_rule_isolates_digits_first_like_llama_cpp(qwen3_raw_tokenizer, tmp_path):
    """llama.cpp's 'smollm' pre-tokenizer splits every digit off, then applies GPT-2's regex to the rest,
    so the blank lines before a number stay one piece ('ĊĊ'); GPT-2's regex alone would cut them apart."""
    f = GgufFile(
        write_gguf(tmp_path / "s.gguf", tokenizer=truncated(qwen3_raw_tokenizer, KEEP), pre="smollm")
    )
    tok = tokenizer_from_gguf(f)
    assert tok.encode("so?\n\n15 of", add_special_tokens=False).tokens == [
        "so",
        "?",
        "ĊĊ",
        "1",
        "5",
        "Ġof",
    ]
    f = GgufFile(write_gguf(tmp_path / "g.gguf", tokenizer=truncated(qwen3_raw_tokenizer, KEEP), pre="gpt2"))
    gpt2 = tokenizer_from_gguf(f)
    assert gpt2.encode("so?\n\n15 of", add_special_tokens=False).tokens[2:4] == ["Ċ", "Ċ"]


def test_llama3_rule_tokenizes_like_transformers_gguf_loading(qwen3_raw_tokenizer, tmp_path):
    """No Llama-3 vocabulary here: Qwen's (truncated) under Llama-3's pre-tokenizer name, against
    transformers' tokenizer for the same GGUF, on every fourth corpus document (1,936)."""
    path = write_gguf(tmp_path / "t.gguf", tokenizer=truncated(qwen3_raw_tokenizer, KEEP), pre="llama-bpe")
    ours = Tokenizer(tokenizer_from_gguf(GgufFile(path)))
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name).backend_tokenizer
    texts = corpus_texts()[::4]
    assert ours.encode_batch(texts) == [e.ids for e in theirs.encode_batch(texts, add_special_tokens=False)]


def test_tokenizer_config_carries_the_chat_template_and_specials(qwen_pair):
    _, f = qwen_pair
    config = tokenizer_config_from_gguf(f)
    assert (
        config["chat_template"] == f.get("tokenizer.chat_template")
        and "<|im_start|>" in config["chat_template"]
    )
    assert config["eos_token"] == "<|im_end|>" and config["bos_token"] is None
    assert config["add_bos_token"] is False


@pytest.mark.parametrize(
    "kv, message",
    [
        ({"tokenizer.ggml.pre": "tekken"}, "pre-tokenizer 'tekken' is not supported"),
        ({"tokenizer.ggml.model": "llama"}, "tokenizer 'llama' is not supported"),
    ],
)
def test_tokenizers_we_cannot_build_exactly_are_refused(kv, message, qwen3_raw_tokenizer, tmp_path):
    path = write_gguf(tmp_path / "t.gguf", tokenizer=truncated(qwen3_raw_tokenizer, 300), pre="qwen2")
    f = GgufFile(path)
    f.get = lambda key, default=None, _get=f.get: kv.get(key, _get(key, default))  # override one key
    with pytest.raises(RptError, match=message):
        tokenizer_from_gguf(f)
