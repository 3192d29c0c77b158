"""The Qwen3 model family: config, modules and Hugging Face checkpoint I/O.

Public API: ``from rpt_train.model import Qwen3Config, Qwen3ForCausalLM``.
"""

from rpt_train.model.config import PRESETS, Qwen3Config
from rpt_train.model.hf_io import default_device, parse_dtype, resolve_model_dir
from rpt_train.model.qwen3 import Qwen3ForCausalLM

__all__ = ["PRESETS", "Qwen3Config", "Qwen3ForCausalLM", "default_device", "parse_dtype", "resolve_model_dir"]
