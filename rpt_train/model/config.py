"""Model configuration: one dataclass for the Qwen3 / Qwen2 / Llama decoder family, read from and written
to Hugging Face ``config.json``.

The three families share every module; they differ only in two switches:

* ``qk_norm``: per-head RMSNorm on queries and keys before RoPE (Qwen3).
* ``attention_bias``: biases on the q/k/v projections (Qwen2 always; Qwen3/Llama per config). Qwen2 never
  has an o_proj bias, Qwen3/Llama put one there exactly when ``attention_bias`` is set.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpt_train.errors import RptError

MODEL_TYPES = ("qwen3", "qwen2", "llama")
_ARCH = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}


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

    @property
    def o_proj_bias(self) -> bool:
        return self.attention_bias and self.model_type != "qwen2"

    # ---- Hugging Face config.json ----
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> Qwen3Config:
        model_type = d.get("model_type", "qwen3")
        if model_type not in MODEL_TYPES:
            raise RptError(f"unsupported model_type '{model_type}' (supported: {', '.join(MODEL_TYPES)})")
        scaling = d.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise RptError(f"rope_scaling {scaling} is not supported")
        if d.get("use_sliding_window"):
            raise RptError("sliding-window attention is not supported (use_sliding_window=true)")
        if d.get("mlp_bias"):
            raise RptError("mlp_bias=true is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise RptError(f"hidden_act '{d['hidden_act']}' is not supported (only silu)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "qk_norm", "model_type"}
        kwargs = {k: d[k] for k in names if k in d}
        # transformers derives head_dim as hidden / heads when config.json has none (Qwen2, Llama).
        kwargs["head_dim"] = d.get("head_dim")
        rope = d.get("rope_parameters") or {}
        if rope.get("rope_type", "default") not in (None, "default"):  # transformers >= 5 puts YaRN etc. here
            raise RptError(f"rope_parameters {rope} are not supported (only default RoPE)")
        if "rope_theta" not in kwargs and "rope_theta" in rope:  # transformers >= 5 nests it
            kwargs["rope_theta"] = rope["rope_theta"]
        if "dtype" in d and "torch_dtype" not in d:
            kwargs["torch_dtype"] = d["dtype"]
        if model_type == "qwen2":
            kwargs["attention_bias"] = True
        known = names | {"model_type", "architectures", "rope_parameters", "dtype", "hidden_act"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, model_type=model_type, qk_norm=model_type == "qwen3", extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("extra", "qk_norm")
        }
        d = {**self.extra, **d}
        d["architectures"] = [_ARCH[self.model_type]]
        d["hidden_act"] = "silu"
        d["rope_scaling"] = None
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
