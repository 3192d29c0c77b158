"""rpt_core.text.pairing: a tokenizer and a model that do not belong together stop with one line."""

from __future__ import annotations

import shutil

import pytest

from rpt_core.model import Qwen3Config
from rpt_core.runtime.errors import RptError
from rpt_core.text.pairing import check_pair, own_tokenizer
from rpt_core.text.tokenizer import Tokenizer
from tests.rpt_core.text.test_chat import QWEN_DIR
from tests.rpt_core.text.test_chat_template import smollm2_dir


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer.load(QWEN_DIR)


def qwen3_config(**overrides) -> Qwen3Config:
    return Qwen3Config.preset("qwen3-0.6b", **overrides)  # vocab 151936, eos 151645 = <|im_end|>


def test_real_pairs_pass(qwen):
    check_pair(qwen, qwen3_config(), "Qwen3-0.6B")
    check_pair(qwen, qwen3_config(bos_token_id=151643, eos_token_id=[151645, 151643]), "Qwen2.5")
    check_pair(qwen, qwen3_config(bos_token_id=None, eos_token_id=None), "no declared ids")


def test_more_tokens_than_embedding_rows(qwen):
    with pytest.raises(RptError, match="151669 tokens but SmolLM2 embeds only 49152"):
        check_pair(qwen, qwen3_config(vocab_size=49152, eos_token_id=2), "SmolLM2")


def test_declared_ids_outside_the_tokenizer(tmp_path):
    small = Tokenizer.load(smollm2_dir(tmp_path))  # a few dozen tokens, ChatML specials at 0-2
    with pytest.raises(
        RptError, match="eos_token_id 151645 but tokenizer .* has only 3\\d tokens: .*families"
    ):
        check_pair(small, qwen3_config(), "Qwen3-0.6B")


def test_declared_ids_that_are_ordinary_text(qwen):
    llama = qwen3_config(bos_token_id=128000, eos_token_id=[128001, 128009])
    with pytest.raises(RptError, match="bos_token_id 128000, which .* ordinary text") as info:
        check_pair(qwen, llama, "Llama-3.2-1B")
    assert "\n" not in str(info.value)


def test_model_dirs_own_tokenizer_must_match(qwen, tmp_path):
    model_dir = smollm2_dir(tmp_path)  # holds its own tokenizer.json
    own = own_tokenizer(model_dir, qwen)
    assert own is not None
    with pytest.raises(RptError, match="different base vocabulary from SmolLM2's own"):
        check_pair(qwen, qwen3_config(eos_token_id=None), "SmolLM2", own)
    assert own_tokenizer(model_dir, Tokenizer.load(model_dir)) is None  # the same file
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert own_tokenizer(model_dir, Tokenizer.load(copy)) is None  # identical bytes: nothing to compare
    assert own_tokenizer(tmp_path / "nowhere", qwen) is None
