"""The documented import path of the model: ``from rpt_train.model import Qwen3Config, Qwen3ForCausalLM``.

The model lives in ``rpt_core.model`` (both packages use it); this module re-exports its public API.
"""

from rpt_core.model import (
    PRESETS,
    Qwen3Config,
    Qwen3ForCausalLM,
    default_device,
    parse_dtype,
    resolve_model_dir,
)

__all__ = ["PRESETS", "Qwen3Config", "Qwen3ForCausalLM", "default_device", "parse_dtype", "resolve_model_dir"]
