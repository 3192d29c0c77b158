"""GGUF loading on small random models written the way llama.cpp writes them (tests/helpers/gguf_files.py):
exact round trips for llama (its q/k permutation undone), qwen2 and qwen3, parity with transformers' own
GGUF loading of the same file, and one-line refusals of what the reader does not support.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
import transformers

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.gguf import GgufFile, hf_config_dict, unpermute_qk
from rpt_core.runtime.errors import RptError
from tests.helpers import dequantized, llama_cpp_permute, write_gguf

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rope_theta=10_000.0,
    rms_norm_eps=1e-6,
    eos_token_id=None,
    torch_dtype="float32",
)
CASES = {
    "llama-tied": dict(model_type="llama", qk_norm=False, head_dim=16, tie_word_embeddings=True),
    "llama-untied": dict(model_type="llama", qk_norm=False, head_dim=16, tie_word_embeddings=False),
    # llama.cpp permutes q/k biases like the weights; transformers drops llama biases from GGUF, so this
    # case is checked by the exact round trip only.
    "llama-bias": dict(
        model_type="llama", qk_norm=False, head_dim=16, tie_word_embeddings=True, attention_bias=True
    ),
    "qwen2-untied": dict(
        model_type="qwen2", qk_norm=False, head_dim=16, tie_word_embeddings=False, attention_bias=True
    ),
    # transformers takes no head_dim from a qwen3 GGUF (it assumes Qwen3's 128): the round trip checks
    # that we read attention.key_length.
    "qwen3-tied": dict(model_type="qwen3", qk_norm=True, head_dim=128, tie_word_embeddings=True),
    "qwen3-hd32": dict(model_type="qwen3", qk_norm=True, head_dim=32, tie_word_embeddings=False),
}
TRANSFORMERS_CASES = [c for c in CASES if c not in ("llama-bias", "qwen3-hd32")]


def random_model(case: str) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**SHAPE, **CASES[case]))
    with torch.no_grad():
        for name, p in model.named_parameters():  # non-trivial norms and biases, so a swap shows
            p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.1 * torch.randn_like(p))
    return model.eval()


def ids() -> torch.Tensor:
    return torch.randint(0, SHAPE["vocab_size"], (2, 13), generator=torch.Generator().manual_seed(1))


def test_unpermute_qk_is_the_inverse_of_llama_cpp_permutation_by_hand():
    # One head of dim 4 over 1 input: HF rows (x0, x1, y0, y1); llama.cpp stores (x0, y0, x1, y1).
    hf = np.array([[10.0], [11.0], [20.0], [21.0]])
    stored = llama_cpp_permute(hf, 1)
    assert stored[:, 0].tolist() == [10.0, 20.0, 11.0, 21.0]
    assert np.array_equal(unpermute_qk(stored, 1), hf)
    two_heads = np.arange(16.0).reshape(8, 2)
    assert np.array_equal(unpermute_qk(llama_cpp_permute(two_heads, 2), 2), two_heads)


@pytest.mark.parametrize("case", list(CASES))
def test_float32_gguf_round_trips_exactly(case, tmp_path):
    model = random_model(case)
    path = write_gguf(tmp_path / "m.gguf", model)
    loaded = Qwen3ForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", device="cpu")
    assert loaded.config.model_type == model.config.model_type
    assert loaded.config.head_dim == model.config.head_dim
    assert loaded.config.tie_word_embeddings == model.config.tie_word_embeddings
    assert loaded.dtype == torch.float32
    ours, theirs = loaded.state_dict(), model.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "the llama q/k rows must be un-permuted"
    assert Qwen3ForCausalLM.from_pretrained(path.parent / "elsewhere", gguf_file=str(path), device="cpu")


@pytest.mark.parametrize("case", TRANSFORMERS_CASES)
def test_quantized_gguf_logits_match_transformers_gguf_loading(case, tmp_path):
    model = random_model(case)
    qtype = gguf.GGMLQuantizationType.Q8_0
    write_gguf(tmp_path / "m.gguf", model, qtype=qtype)
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", device="cpu")
    # The dequantized matrix is what was written, read back through the block format.
    assert torch.equal(
        ours.model.layers[1].mlp.up_proj.weight, dequantized(model.model.layers[1].mlp.up_proj.weight, qtype)
    )
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert type(hf).__name__ == ours.config.to_hf_dict()["architectures"][0]
    x = ids()
    with torch.no_grad():
        ref = hf(input_ids=x).logits.float()
        diff = (ours(x) - ref).abs().max().item()
    assert ref.abs().max() > 0.5 and diff < 1e-4


def test_config_comes_from_the_metadata(tmp_path):
    model = random_model("qwen3-hd32")
    d = hf_config_dict(GgufFile(write_gguf(tmp_path / "m.gguf", model)))
    assert (
        d["model_type"] == "qwen3"
        and d["head_dim"] == 32 != SHAPE["hidden_size"] // SHAPE["num_attention_heads"]
    )
    assert (d["num_hidden_layers"], d["num_key_value_heads"], d["vocab_size"]) == (2, 2, 96)
    assert d["tie_word_embeddings"] is False and d["attention_bias"] is False
    assert d["rope_theta"] == 10_000.0 and d["max_position_embeddings"] == 256


@pytest.mark.parametrize(
    "kv, tensors, message",
    [
        ({"general.architecture": "gemma2"}, {}, "architecture 'gemma2' is not supported"),
        ({"llama.expert_count": 8}, {}, "llama.expert_count is not supported"),
        ({}, {"rope_freqs.weight": np.ones(8, np.float32)}, "RoPE frequency factors"),
        (
            {},
            {"blk.0.attn_extra.weight": np.ones((2, 2), np.float32)},
            "no place for: blk.0.attn_extra.weight",
        ),
    ],
)
def test_unsupported_files_are_refused_in_one_line(kv, tensors, message, tmp_path):
    model = random_model("llama-tied")
    arch = kv.pop("general.architecture", None)
    write_gguf(tmp_path / "m.gguf", model, arch=arch, extra_kv=kv, extra_tensors=tensors)
    with pytest.raises(RptError, match=message) as e:
        Qwen3ForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", device="cpu")
    assert "\n" not in str(e.value)


def test_missing_file_and_non_gguf_are_one_line_errors(tmp_path):
    with pytest.raises(RptError, match="no GGUF file 'absent.gguf'"):
        Qwen3ForCausalLM.from_pretrained(tmp_path, gguf_file="absent.gguf", device="cpu")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(RptError, match="cannot read .*bad.gguf as GGUF"):
        Qwen3ForCausalLM.from_pretrained(tmp_path, gguf_file="bad.gguf", device="cpu")
