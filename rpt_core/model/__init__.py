"""The Qwen3 model family: config, modules and Hugging Face checkpoint I/O.

Public API: ``from rpt_core.model import Qwen3Config, Qwen3ForCausalLM``.
"""

from rpt_core.model.config import PRESETS, Qwen3Config
from rpt_core.model.hf_io import default_device, parse_dtype, resolve_model_dir
from rpt_core.model.qwen3 import Qwen3ForCausalLM

__all__ = ["PRESETS", "Qwen3Config", "Qwen3ForCausalLM", "default_device", "parse_dtype", "resolve_model_dir"]
