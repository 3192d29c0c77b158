"""Parity with transformers: same random weights give the same float32 logits (with and without left
padding), and checkpoints move both ways (we save -> transformers loads; transformers saves -> we load),
including a sharded save. The reference models are built from transformers' own config classes. RoPE
scaling (llama3, yarn) is compared at positions well past the original context it was scaled from.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import transformers

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM

ATOL = 1e-4
# Small shapes that still exercise GQA (4 query heads over 2 KV heads) and head_dim != hidden / heads.
BASE = dict(
    vocab_size=211,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    rope_theta=10_000.0,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)
CASES = {
    "qwen3-tied": ("Qwen3Config", dict(tie_word_embeddings=True)),
    "qwen3-untied-bias": ("Qwen3Config", dict(tie_word_embeddings=False, attention_bias=True)),
    "qwen2-tied": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen2-untied": ("Qwen2Config", dict(tie_word_embeddings=False, num_key_value_heads=1, head_dim=16)),
    "llama-untied": ("LlamaConfig", dict(tie_word_embeddings=False)),
    "llama-tied-bias": ("LlamaConfig", dict(tie_word_embeddings=True, attention_bias=True)),
}
# Scaled RoPE from an original context of 32 positions; the inputs below run to position 99.
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
ROPE_CASES = {
    "llama-llama3": ("LlamaConfig", dict(tie_word_embeddings=False, rope_theta=5e5, rope_scaling=LLAMA3)),
    "qwen3-yarn": ("Qwen3Config", dict(tie_word_embeddings=True, rope_scaling=YARN)),
    "qwen3-yarn-v5": ("Qwen3Config", dict(rope_parameters={**YARN, "rope_theta": 50_000.0})),
    # transformers-4 style key "type", and every optional YaRN knob away from its default.
    "qwen2-yarn-knobs": (
        "Qwen2Config",
        dict(
            rope_scaling={
                "type": "yarn",
                "factor": 3.0,
                "beta_fast": 16,
                "beta_slow": 2,
                "mscale": 0.8,
                "mscale_all_dim": 0.5,
                "truncate": False,
                "original_max_position_embeddings": 32,
            }
        ),
    ),
}
CASES.update(ROPE_CASES)


def make_reference(case: str):
    """A transformers model with random weights large enough that a wrong formula moves logits by >> ATOL."""
    cls_name, overrides = CASES[case]
    # transformers fills defaults into the RoPE dict it is given: hand it a copy.
    hf_config = getattr(transformers, cls_name)(**copy.deepcopy({**BASE, **overrides}))
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(
        hf_config, attn_implementation="eager", dtype=torch.float32
    )
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # non-trivial norm gains
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return hf.eval()


def ours_from(hf) -> Qwen3ForCausalLM:
    config = Qwen3Config.from_hf_dict(hf.config.to_dict())
    model = Qwen3ForCausalLM(config)
    model.load_state_dict(hf.state_dict(), strict=True)
    return model.eval()


def inputs(length: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, BASE["vocab_size"], (3, length), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding of different lengths
    mask[2, : length - 2] = 0
    return ids, mask


def hf_logits(hf, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        if mask is None:
            return hf(input_ids=ids).logits.float()
        # Real-token positions, as transformers' generate() passes them (RoPE is shift-invariant per row,
        # so this only fixes rounding, but it is the setting the trainer compares against).
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        return hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()


def ours_logits(model: Qwen3ForCausalLM, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, attention_mask=mask)


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    if mask is not None:
        a, b = a[mask.bool()], b[mask.bool()]  # padding positions carry no meaning
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case", [c for c in CASES if c not in ROPE_CASES])
def test_logits_match_transformers(case):
    hf = make_reference(case)
    ours = ours_from(hf)
    ids, mask = inputs()
    ref = hf_logits(hf, ids)
    assert ref.abs().max() > 0.5  # the comparison is not between near-zero tensors
    assert max_diff(ours_logits(ours, ids), ref) < ATOL
    assert max_diff(ours_logits(ours, ids, mask), hf_logits(hf, ids, mask), mask) < ATOL


@pytest.mark.parametrize("case", ["qwen3-tied", "qwen3-untied-bias", "qwen2-tied", "llama-untied"])
def test_checkpoints_exchange_both_ways(case, tmp_path):
    hf = make_reference(case)
    ids, mask = inputs()
    ref = hf_logits(hf, ids, mask)

    hf.save_pretrained(tmp_path / "from_hf")  # transformers saves -> we load
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path / "from_hf", device="cpu")
    assert ours.config.model_type == hf.config.model_type
    assert max_diff(ours_logits(ours, ids, mask), ref, mask) < ATOL

    ours.save_pretrained(tmp_path / "from_ours")  # we save -> transformers loads
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "from_ours", dtype=torch.float32, attn_implementation="eager"
    )
    assert type(back).__name__ == type(hf).__name__
    assert max_diff(hf_logits(back, ids, mask), ref, mask) < ATOL
    if hf.config.tie_word_embeddings:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight


@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_scaled_rope_matches_transformers_past_the_original_context(case):
    hf = make_reference(case)
    ours = ours_from(hf)
    assert ours.config.rope_scaling["rope_type"] == hf.config.rope_parameters["rope_type"]
    ids, mask = inputs(100)
    ref = hf_logits(hf, ids, mask)
    assert max_diff(ours_logits(ours, ids, mask), ref, mask) < ATOL
    # The scaling is not a no-op at these positions: plain RoPE with the same weights is far off.
    plain = Qwen3ForCausalLM(dataclasses.replace(ours.config, rope_scaling=None))
    plain.load_state_dict(ours.state_dict())
    assert max_diff(ours_logits(plain.eval(), ids, mask), ref, mask) > 100 * ATOL


@pytest.mark.parametrize("case", ["llama-llama3", "qwen3-yarn"])
def test_scaled_rope_checkpoints_exchange_both_ways(case, tmp_path):
    hf = make_reference(case)
    ids, mask = inputs(100)
    ref = hf_logits(hf, ids, mask)
    hf.save_pretrained(tmp_path / "from_hf")  # transformers saves -> we load
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path / "from_hf", device="cpu")
    assert ours.config.rope_scaling == Qwen3Config.from_hf_dict(hf.config.to_dict()).rope_scaling
    assert max_diff(ours_logits(ours, ids, mask), ref, mask) < ATOL
    ours.save_pretrained(tmp_path / "from_ours")  # we save -> transformers loads
    written = json.loads((tmp_path / "from_ours" / "config.json").read_text())
    assert written["rope_scaling"]["rope_type"] == written["rope_parameters"]["rope_type"] != "default"
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "from_ours", dtype=torch.float32, attn_implementation="eager"
    )
    assert back.config.rope_parameters == hf.config.rope_parameters
    assert max_diff(hf_logits(back, ids, mask), ref, mask) < ATOL


def test_sharded_save_reloads(tmp_path):
    hf = make_reference("qwen3-untied-bias")
    ours = ours_from(hf)
    ours.save_pretrained(tmp_path, max_shard_bytes=40_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    assert set(index["weight_map"]) == set(ours.state_dict())
    ids, mask = inputs()
    expected = ours_logits(ours, ids, mask)
    reloaded = Qwen3ForCausalLM.from_pretrained(tmp_path, device="cpu")
    assert torch.equal(ours_logits(reloaded, ids, mask), expected)
    by_hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager"
    )
    assert max_diff(hf_logits(by_hf, ids, mask), expected, mask) < ATOL


@pytest.mark.parametrize("cls_name", ["Qwen2Config", "LlamaConfig"])
def test_config_without_head_dim_means_hidden_over_heads(cls_name, tmp_path):
    """Qwen2.5-0.5B's config.json (hidden 896, 14 heads) has no head_dim: it is 896 / 14 = 64, not 128."""
    shape = {k: v for k, v in BASE.items() if k != "head_dim"}
    hf_config = getattr(transformers, cls_name)(**{**shape, "hidden_size": 96, "num_attention_heads": 6})
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("head_dim", None)  # as in the hub's Qwen2.5 / Llama-3 files, whatever this transformers writes
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path, device="cpu")
    assert ours.config.head_dim == 96 // 6 == 16
    ids, mask = inputs()
    assert max_diff(ours_logits(ours, ids, mask), hf_logits(hf, ids, mask), mask) < ATOL
