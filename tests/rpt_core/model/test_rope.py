"""RoPE variants and the config.json fields around them: hand-checked formulas, bit-equality with
transformers' own frequency functions, both config spellings, and one-line refusals of what is not modelled.
(Logit parity of whole scaled models is in test_parity.py.)
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.rope import (
    default_inv_freq,
    normalize_scaling,
    rope_cos_sin,
    rope_frequencies,
    yarn_attention_factor,
)
from rpt_core.runtime.errors import RptError

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def frequencies(config: Qwen3Config) -> tuple[torch.Tensor, float]:
    return rope_frequencies(
        config.head_dim, config.rope_theta, config.rope_scaling, config.max_position_embeddings
    )


# ------------------------------------------------------------------------------------------ formulas


def test_default_frequencies_by_hand():
    assert default_inv_freq(4, 100.0).tolist() == [1.0, 0.10000000149011612]  # 100^0, 100^(-1/2)


def test_llama3_keeps_high_divides_low_and_blends_between():
    head_dim, theta = 16, 10_000.0
    plain = default_inv_freq(head_dim, theta)
    scaled, scale = rope_frequencies(head_dim, theta, normalize_scaling(LLAMA3, 256), 256)
    wavelen = 2 * math.pi / plain
    high, low = wavelen < 64 / 4, wavelen > 64 / 1  # the two ends of the band
    assert high.any() and low.any() and (~high & ~low).any()  # the test exercises all three regions
    assert torch.equal(scaled[high], plain[high])
    assert torch.allclose(scaled[low], plain[low] / 8)
    mid = ~high & ~low
    assert ((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8)).all()
    assert scale == 1.0


def test_yarn_attention_factor_by_hand():
    assert yarn_attention_factor(4.0) == pytest.approx(0.1 * math.log(4) + 1)  # 1.1386...
    assert yarn_attention_factor(1.0) == 1.0
    assert yarn_attention_factor(4.0, 1.0, 1.0) == 1.0  # equal mscales cancel
    _, scale = rope_frequencies(
        128, 1e6, normalize_scaling({**YARN, "attention_factor": 0.7}, 131072), 131072
    )
    assert scale == 0.7  # an explicit factor wins


def test_yarn_keeps_fast_dimensions_and_interpolates_slow_ones():
    plain = default_inv_freq(128, 1e6)
    scaled, _ = rope_frequencies(128, 1e6, normalize_scaling(YARN, 131072), 131072)
    assert torch.equal(scaled[:8], plain[:8])  # many rotations in 32k positions: extrapolated
    assert torch.allclose(scaled[-8:], plain[-8:] / 4)  # under one rotation: interpolated by the factor


def test_cos_sin_carry_the_attention_factor():
    inv_freq = default_inv_freq(8, 10_000.0)
    positions = torch.tensor([[0, 5, 99]])
    cos, sin = rope_cos_sin(positions, inv_freq, torch.float32, scaling=1.5)
    cos1, sin1 = rope_cos_sin(positions, inv_freq, torch.float32)
    assert cos.shape == (1, 3, 8)
    assert torch.allclose(cos, 1.5 * cos1) and torch.allclose(sin, 1.5 * sin1)
    assert torch.allclose(cos1[0, 0], torch.ones(8))  # position 0 is no rotation


HF_CONFIGS = {
    "llama3-3.2-shape": (
        "LlamaConfig",
        dict(
            hidden_size=2048,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rope_theta=5e5,
            rope_scaling={**LLAMA3, "factor": 32.0, "original_max_position_embeddings": 8192},
        ),
    ),
    "qwen3-yarn": (
        "Qwen3Config",
        dict(
            num_attention_heads=16,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rope_theta=1e6,
            rope_scaling=dict(YARN),
        ),
    ),
    "qwen2-yarn-knobs": (
        "Qwen2Config",
        dict(
            hidden_size=896,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=100_000,
            rope_scaling={
                "type": "yarn",
                "factor": 3.0,
                "beta_fast": 16,
                "beta_slow": 2,
                "mscale": 0.8,
                "mscale_all_dim": 0.5,
                "truncate": False,
                "original_max_position_embeddings": 4096,
            },
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_frequencies_equal_transformers_bit_for_bit(name):
    cls_name, kwargs = HF_CONFIGS[name]
    hf = getattr(transformers, cls_name)(**kwargs)
    ref_inv_freq, ref_scale = ROPE_INIT_FUNCTIONS[hf.rope_parameters["rope_type"]](hf)
    inv_freq, scale = frequencies(Qwen3Config.from_hf_dict(hf.to_dict()))
    assert torch.equal(inv_freq, ref_inv_freq)
    assert scale == ref_scale


# ------------------------------------------------------------------------------------- config.json


def test_both_spellings_read_the_same():
    v4 = Qwen3Config.from_hf_dict({"model_type": "qwen3", "rope_theta": 1e6, "rope_scaling": {**YARN}})
    v5 = Qwen3Config.from_hf_dict({"model_type": "qwen3", "rope_parameters": {**YARN, "rope_theta": 1e6}})
    old_style = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    old = Qwen3Config.from_hf_dict({"model_type": "qwen3", "rope_theta": 1e6, "rope_scaling": old_style})
    assert v4.rope_scaling == v5.rope_scaling == old.rope_scaling == YARN
    assert v4.rope_theta == v5.rope_theta == 1e6


def test_scaling_round_trips_through_config_json():
    cfg = Qwen3Config.from_hf_dict(
        {
            "model_type": "llama",
            "rope_theta": 5e5,
            "rope_scaling": dict(LLAMA3),
            "max_position_embeddings": 512,
        }
    )
    d = json.loads(json.dumps(cfg.to_hf_dict()))
    assert d["rope_scaling"] == LLAMA3 and d["rope_parameters"] == {**LLAMA3, "rope_theta": 5e5}
    back = Qwen3Config.from_hf_dict(d)
    assert back.to_hf_dict() == d and back.rope_scaling == cfg.rope_scaling
    plain = Qwen3Config.preset("tiny").to_hf_dict()
    assert plain["rope_scaling"] is None
    assert plain["rope_parameters"] == {"rope_type": "default", "rope_theta": 10_000.0}


def test_missing_original_context_means_max_positions_and_top_level_wins():
    yarn = {"rope_type": "yarn", "factor": 2.0}
    cfg = Qwen3Config.from_hf_dict({"max_position_embeddings": 4096, "rope_scaling": dict(yarn)})
    assert cfg.rope_scaling["original_max_position_embeddings"] == 4096
    top = Qwen3Config.from_hf_dict(
        {
            "max_position_embeddings": 4096,
            "original_max_position_embeddings": 1024,
            "rope_scaling": dict(yarn),
        }
    )
    assert top.rope_scaling["original_max_position_embeddings"] == 1024


@pytest.mark.parametrize("cls_name", ["Qwen3Config", "Qwen2Config", "LlamaConfig"])
def test_omitted_fields_take_transformers_defaults(cls_name):
    hf = getattr(transformers, cls_name)()
    ours = Qwen3Config.from_hf_dict({"model_type": hf.model_type})
    for name in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
    ):
        assert getattr(ours, name) == getattr(hf, name), name
    # Qwen2Config has no head_dim: its attention uses hidden / heads.
    assert ours.head_dim == getattr(hf, "head_dim", hf.hidden_size // hf.num_attention_heads)
    assert ours.rope_theta == hf.rope_parameters["rope_theta"] and ours.rope_scaling is None


REFUSED = {
    "rope type": ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "RoPE type 'linear'"),
    "dynamic v5": ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "RoPE type 'dynamic'"),
    "llama3 missing key": ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs high_freq"),
    "unknown yarn key": ({"rope_scaling": {**YARN, "short_factor": [1.0]}}, "unknown parameters short_"),
    "partial rotary": ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    "partial in rope": ({"rope_parameters": {**YARN, "partial_rotary_factor": 0.5}}, "partial"),
    "per-layer rope": ({"rope_parameters": {"full_attention": {"rope_type": "default"}}}, "per-layer"),
    "sliding window": (
        {"use_sliding_window": True, "num_hidden_layers": 4, "max_window_layers": 2},
        "sliding-window",
    ),
    "sliding layer types": ({"layer_types": ["full_attention", "sliding_attention"]}, "sliding_attention"),
    "mlp bias": ({"model_type": "llama", "mlp_bias": True}, "mlp_bias"),
    "activation": ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    "dropout": ({"attention_dropout": 0.1}, "attention_dropout=0.1"),
    "quantized": ({"quantization_config": {"quant_method": "gptq"}}, "quantized checkpoints .*gptq"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_fields_are_one_line_errors(name):
    fields, message = REFUSED[name]
    with pytest.raises(RptError, match=message) as info:
        Qwen3Config.from_hf_dict({"model_type": "qwen3", **fields})
    assert "\n" not in str(info.value)


def test_harmless_fields_are_accepted():
    cfg = Qwen3Config.from_hf_dict(
        {
            "model_type": "qwen2",
            "use_sliding_window": True,
            "num_hidden_layers": 4,
            "max_window_layers": 4,
            "layer_types": ["full_attention"] * 4,
            "hidden_act": "swish",
            "pretraining_tp": 2,
        }
    )  # (no layer reaches the window; swish is silu; tensor-parallel splits do not change math)
    assert cfg.model_type == "qwen2" and cfg.extra["pretraining_tp"] == 2


def test_rope_frequencies_stay_float32_on_a_bfloat16_model(tmp_path):
    config = Qwen3Config.preset("tiny", rope_scaling=dict(YARN), max_position_embeddings=131072)
    Qwen3ForCausalLM(config).save_pretrained(tmp_path)
    model = Qwen3ForCausalLM.from_pretrained(tmp_path, dtype="bfloat16", device="cpu").to(torch.bfloat16)
    assert model.rotary.inv_freq.dtype == torch.float32
    assert "rotary" not in " ".join(model.state_dict())  # nothing extra in checkpoints
    assert model(torch.tensor([[1, 2, 3]])).isfinite().all()
