"""Model configuration: one dataclass for the Qwen3 / Qwen2 / Llama decoder family, read from and written
to Hugging Face ``config.json``.

The three families share every module; they differ only in two switches:

* ``qk_norm``: per-head RMSNorm on queries and keys before RoPE (Qwen3).
* ``attention_bias``: biases on the q/k/v projections (Qwen2 always; Qwen3/Llama per config). Qwen2 never
  has an o_proj bias, Qwen3/Llama put one there exactly when ``attention_bias`` is set.

``from_hf_dict`` honours every ``config.json`` field that changes the math or refuses it with one line
(sliding windows, partial rotary, MLP bias, other activations, dropout, quantized weights, RoPE variants
other than default / llama3 / yarn). A field the file leaves out takes transformers' default for that
family (``HF_DEFAULTS``), so a sparse config means here what it means there. RoPE scaling is read from
transformers 4's ``rope_scaling`` or transformers 5's ``rope_parameters`` and written back in both.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpt_core.model.rope import normalize_scaling
from rpt_core.runtime.errors import RptError

MODEL_TYPES = ("qwen3", "qwen2", "llama")
_ARCH = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_ACTIVATIONS = ("silu", "swish")  # transformers maps both names to SiLU

# transformers' defaults for what a config.json may omit (its Qwen3Config / Qwen2Config / LlamaConfig).
# head_dim None means hidden_size // num_attention_heads; num_key_value_heads None means no grouping.
_QWEN_DEFAULTS: dict[str, Any] = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768, rope_theta=10_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False, attention_bias=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen3": {**_QWEN_DEFAULTS, "head_dim": 128},
    "qwen2": {**_QWEN_DEFAULTS, "head_dim": None},
    "llama": {
        **_QWEN_DEFAULTS, "vocab_size": 32000, "intermediate_size": 11008, "num_key_value_heads": None,
        "max_position_embeddings": 2048, "head_dim": None, "bos_token_id": 1, "eos_token_id": 2,
    },
}  # fmt: skip


@dataclass
class Qwen3Config:
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = 128  # None -> hidden_size // num_attention_heads
    max_position_embeddings: int = 40960
    rope_theta: float = 1_000_000.0
    # None = plain RoPE; else {"rope_type": "llama3" | "yarn", ...its parameters} (rpt_core.model.rope).
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    qk_norm: bool = True
    model_type: str = "qwen3"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = 151645
    pad_token_id: int | None = None
    torch_dtype: str = "bfloat16"
    # Keys of the source config.json we do not model, kept so a save round-trips them.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise RptError(
                f"unsupported model_type '{self.model_type}' (supported: {', '.join(MODEL_TYPES)})"
            )
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise RptError("num_attention_heads must be a multiple of num_key_value_heads")
        self.rope_scaling = normalize_scaling(self.rope_scaling, self.max_position_embeddings)

    @property
    def o_proj_bias(self) -> bool:
        return self.attention_bias and self.model_type != "qwen2"

    # ---- Hugging Face config.json ----
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> Qwen3Config:
        model_type = d.get("model_type", "qwen3")
        if model_type not in MODEL_TYPES:
            raise RptError(f"unsupported model_type '{model_type}' (supported: {', '.join(MODEL_TYPES)})")
        _refuse_unsupported(d)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "qk_norm", "model_type", "rope_scaling"}
        kwargs = {**HF_DEFAULTS[model_type], **{k: d[k] for k in names if k in d}}
        if kwargs["num_key_value_heads"] is None:
            kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
        # transformers 5 prefers rope_scaling when both spellings are present, and a rope_theta inside the
        # dict over the top-level one.
        rope = d.get("rope_scaling") or d.get("rope_parameters") or {}
        kwargs["rope_theta"] = float(rope.get("rope_theta", kwargs["rope_theta"]))
        scaling = dict(rope)
        scaled = scaling.get("rope_type", scaling.get("type", "default")) != "default"
        if scaled and "original_max_position_embeddings" in d:  # a top-level value wins, as in transformers
            scaling["original_max_position_embeddings"] = d["original_max_position_embeddings"]
        if "dtype" in d and "torch_dtype" not in d:
            kwargs["torch_dtype"] = d["dtype"]
        if model_type == "qwen2":
            kwargs["attention_bias"] = True
        known = names | _READ_ELSEWHERE
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(
            **kwargs, rope_scaling=scaling, model_type=model_type, qk_norm=model_type == "qwen3", extra=extra
        )

    def to_hf_dict(self) -> dict[str, Any]:
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("extra", "qk_norm", "rope_scaling")
        }
        d = {**self.extra, **d}
        d["architectures"] = [_ARCH[self.model_type]]
        d["hidden_act"] = "silu"
        # Both spellings: transformers 4 reads rope_theta + rope_scaling, transformers 5 rope_parameters.
        d["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
        rope = self.rope_scaling or {"rope_type": "default"}
        d["rope_parameters"] = {**rope, "rope_theta": self.rope_theta}
        d["attention_dropout"] = 0.0
        d["use_cache"] = True
        if self.model_type == "qwen2":
            d.pop("attention_bias")
            d.setdefault("use_sliding_window", False)
        if self.model_type == "llama":
            d.setdefault("mlp_bias", False)
        return d

    @classmethod
    def from_json_file(cls, path: str | Path) -> Qwen3Config:
        try:
            return cls.from_hf_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise RptError(f"cannot read model config {path}: {e}") from None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Qwen3Config:
        if name not in PRESETS:
            raise RptError(f"unknown model preset '{name}' (known: {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})


# Read by from_hf_dict (or checked by _refuse_unsupported) rather than copied into ``extra``.
_READ_ELSEWHERE = frozenset(
    {
        "model_type",
        "architectures",
        "rope_scaling",
        "rope_parameters",
        "original_max_position_embeddings",
        "dtype",
        "hidden_act",
        "attention_dropout",
        "use_cache",
        "partial_rotary_factor",
    }
)


def _refuse_unsupported(d: dict[str, Any]) -> None:
    """One RptError line for a config.json field whose math this model does not implement."""
    act = d.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise RptError(f"hidden_act '{act}' is not supported (only silu)")
    if d.get("mlp_bias"):
        raise RptError("mlp_bias=true is not supported (the MLP has no biases here)")
    if d.get("attention_dropout"):
        raise RptError(f"attention_dropout={d['attention_dropout']} is not supported (no dropout here)")
    if d.get("quantization_config"):
        method = d["quantization_config"].get("quant_method", "?")
        raise RptError(f"quantized checkpoints are not supported (quantization_config: {method})")
    layers = d.get("num_hidden_layers", 0)
    window_from = d.get("max_window_layers", 28)  # transformers: layers >= this one slide when enabled
    if d.get("use_sliding_window") and window_from < layers:
        raise RptError("sliding-window attention is not supported (use_sliding_window=true)")
    kinds = set(d.get("layer_types") or ()) - {"full_attention"}
    if kinds:
        raise RptError(f"layer types {sorted(kinds)} are not supported (only full_attention)")
    partial = d.get("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise RptError(f"partial rotary embeddings (partial_rotary_factor={partial}) are not supported")
    rope = d.get("rope_scaling") or d.get("rope_parameters") or {}
    if any(isinstance(v, dict) for v in rope.values()):
        raise RptError("per-layer-type RoPE parameters are not supported")


PRESETS: dict[str, dict[str, Any]] = {
    # The real Qwen3-0.6B shape.
    "qwen3-0.6b": dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1_000_000.0, tie_word_embeddings=True,
    ),
    # The debug shape used by tests and the offline demo (vocab is set from the tokenizer by callers).
    "tiny": dict(
        vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
        rope_theta=10_000.0, tie_word_embeddings=True, eos_token_id=None, torch_dtype="float32",
    ),
}  # fmt: skip
