"""The model on its own: KV-cache decoding equals a full forward pass (left padding, chunks, replicated
caches), gradient checkpointing leaves gradients unchanged, config.json round-trips, and loading errors
are one-line RptErrors.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.runtime.errors import RptError
from tests import helpers

ATOL = 1e-5


# The "tiny" preset at vocab 256, wider heads; std larger than the default so logits differences are visible.
tiny_model = partial(
    helpers.tiny_model, 256, hidden=64, intermediate=128, head_dim=24, positions=2048, std=0.1, eval=True
)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (3, 12), generator=g)  # (B, T)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :5] = False  # left padding
    mask[2, :10] = False
    return ids, mask


@torch.no_grad()
def decode(model, ids, mask, chunks: list[int]) -> torch.Tensor:
    """Logits (B, T, V) computed through the cache in chunks of the given widths."""
    cache = model.new_kv_cache(ids.shape[0], ids.shape[1])
    out, start = [], 0
    for width in chunks:
        sl = slice(start, start + width)
        out.append(model(ids[:, sl], attention_mask=mask[:, sl], kv_cache=cache))
        start += width
    assert start == ids.shape[1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("chunks", [[12], [7] + [1] * 5, [5, 4, 1, 2], [1] * 12])
def test_cached_decoding_matches_full_forward(chunks):
    model = tiny_model()
    ids, mask = padded_batch()
    with torch.no_grad():
        full = model(ids, attention_mask=mask)  # (B, T, V)
    cached = decode(model, ids, mask, chunks)
    assert full.abs().max() > 0.3
    assert (full - cached)[mask].abs().max() < ATOL


def test_unpadded_full_forward_matches_padded_row():
    model = tiny_model()
    ids, mask = padded_batch()
    with torch.no_grad():
        batch = model(ids, attention_mask=mask)
        alone = model(ids[2:3, 10:])  # row 2 without its padding: plain causal path
    assert (batch[2, 10:] - alone[0]).abs().max() < ATOL


def test_replicated_cache_matches_full_forward():
    model = tiny_model()
    ids, mask = padded_batch()
    prompt, nxt = ids[:, :9], ids[:, 9:]
    with torch.no_grad():
        cache = model.new_kv_cache(3, 9)  # sized for the prompts only
        model(prompt, attention_mask=mask[:, :9], kv_cache=cache)
        wide = cache.repeat_interleave(2, max_len=12)  # row i*2 + j <- row i
        assert wide.batch == 6 and wide.max_len == 12 and wide.length == 9
        step = model(
            nxt.repeat_interleave(2, 0), attention_mask=mask[:, 9:].repeat_interleave(2, 0), kv_cache=wide
        )
        full = model(ids, attention_mask=mask)[:, 9:].repeat_interleave(2, 0)
    assert (step - full).abs().max() < ATOL
    assert torch.equal(wide.valid[:, :12], mask.repeat_interleave(2, 0))
    with pytest.raises(ValueError, match="overflow"):
        model(nxt[:, :1].repeat_interleave(2, 0), kv_cache=wide)


def test_gradient_checkpointing_gives_same_gradients():
    ids, mask = padded_batch()

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = tiny_model(seed=1).train()
        model.gradient_checkpointing = checkpointing
        logits = model(ids, attention_mask=mask)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][mask[:, 1:]], ids[:, 1:][mask[:, 1:]])
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys()
    assert all(plain[n].abs().sum() > 0 for n in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_config_json_round_trip(tmp_path):
    cfg = Qwen3Config.preset("qwen3-0.6b", num_hidden_layers=3, extra={"custom_key": [1, 2]})
    d1 = cfg.to_hf_dict()
    back = Qwen3Config.from_hf_dict(json.loads(json.dumps(d1)))
    assert back.to_hf_dict() == d1  # stable after one round trip
    for name in ("hidden_size", "num_hidden_layers", "head_dim", "rope_theta", "eos_token_id", "qk_norm"):
        assert getattr(back, name) == getattr(cfg, name)
    assert back.extra["custom_key"] == [1, 2]

    model = tiny_model(tie_word_embeddings=False, attention_bias=True)
    model.save_pretrained(tmp_path)
    loaded = Qwen3ForCausalLM.from_pretrained(tmp_path, device="cpu")
    assert loaded.config.to_hf_dict() == model.config.to_hf_dict()
    ids, mask = padded_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask), model(ids, attention_mask=mask))


def test_loaded_weights_are_64_byte_aligned(tmp_path):
    """safetensors packs tensors right after its header; a CPU view at such an offset is copied."""
    tiny_model(tie_word_embeddings=False).save_pretrained(tmp_path)
    model = Qwen3ForCausalLM.from_pretrained(tmp_path, device="cpu")
    misaligned = [n for n, p in model.named_parameters() if p.data_ptr() % 64]
    assert not misaligned


def test_load_as_bfloat16(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    model = Qwen3ForCausalLM.from_pretrained(tmp_path, dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and model.config.torch_dtype == "bfloat16"
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model(torch.tensor([[1, 2, 3]])).dtype == torch.float32


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RptError, match="model not found"):
        Qwen3ForCausalLM.from_pretrained(tmp_path / "no_such_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RptError, match="config"):
        Qwen3ForCausalLM.from_pretrained(tmp_path / "empty")


def test_unknown_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the environment at import time; patch the live values too.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(RptError, match="cannot fetch 'rpt-tests/no-such-model'"):
        Qwen3ForCausalLM.from_pretrained("rpt-tests/no-such-model")


def test_bad_config_values_are_clear_errors():
    with pytest.raises(RptError, match="model_type"):
        Qwen3Config.from_hf_dict({"model_type": "gpt2"})
    with pytest.raises(RptError, match="multiple"):
        Qwen3Config.preset("tiny", num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(RptError, match="preset"):
        Qwen3Config.preset("huge")
    with pytest.raises(RptError, match="RoPE type 'longrope'"):  # transformers 4 layout
        Qwen3Config.from_hf_dict({"model_type": "qwen3", "rope_scaling": {"rope_type": "longrope"}})
    with pytest.raises(RptError, match="RoPE type 'linear'"):  # transformers 5 layout
        Qwen3Config.from_hf_dict({"model_type": "qwen3", "rope_parameters": {"rope_type": "linear"}})
    plain = Qwen3Config.from_hf_dict({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}})
    assert plain.rope_theta == 5e5


def test_masked_attention_never_asks_for_grouped_query_heads(monkeypatch):
    """A mask with ``enable_gqa`` falls to CUDA's math backend (a float32 (B, H, T, T) per layer): padded
    training forwards, padded prefill and chunked cache forwards repeat K/V instead. The numbers do not
    change (the other tests here compare them); only the kernel SDPA may pick does."""
    model = tiny_model(num_attention_heads=4, num_key_value_heads=2)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False, **kw):
        calls.append((attn_mask is not None, enable_gqa or k.shape[1] != q.shape[1]))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=enable_gqa, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ids, mask = padded_batch()
    with torch.no_grad():
        model(ids, attention_mask=mask)  # padded training / log-prob forward
        model(ids[:, :6])  # unpadded: plain causal, grouped heads allowed
    decode(model, ids, mask, [7, 3, 2])  # padded prefill, then cache forwards of several tokens
    assert (False, True) in calls, "the unmasked causal path keeps enable_gqa"
    assert all(not gqa for masked, gqa in calls if masked), calls
