"""``rpt-train convert gguf``: a GGUF file (llama, qwen2 or qwen3) -> a Hugging Face model directory.

The directory holds ``config.json`` and ``model.safetensors`` (the dequantized weights, un-permuted where
llama.cpp permuted them: ``rpt_core.model.gguf``), ``tokenizer.json`` built from the GGUF vocabulary and
merges and ``tokenizer_config.json`` with the special tokens and the model's chat template
(``rpt_core.text.gguf_tokenizer``). It is loadable by ``Qwen3ForCausalLM.from_pretrained``, by every
``rpt-data`` / ``rpt-train`` command and by transformers, and is written atomically.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.model.gguf import GgufFile
from rpt_core.runtime.config import check, option
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import atomic_dir, write_json_atomic
from rpt_core.runtime.progress import Progress
from rpt_core.text.gguf_tokenizer import tokenizer_config_from_gguf, tokenizer_from_gguf
from rpt_core.text.tokenizer import Tokenizer

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ConvertGgufConfig:
    gguf: str = option("", "The .gguf file.", argument=True, required=True)
    out: str = option("", "Output directory (Hugging Face format).", argument=True, required=True)
    dtype: str = option(
        "float32", "Weights dtype (float32 keeps dequantized values exactly).", choices=DTYPES
    )
    overwrite: bool = option(False, "Replace OUT if it exists.")
    quiet: bool = option(False, "No summary line.")

    def __post_init__(self) -> None:
        check(self)


def convert_gguf(cfg: ConvertGgufConfig) -> dict[str, Any]:
    """Write ``cfg.out`` from ``cfg.gguf``; returns a summary (architecture, parameters, tensor types)."""
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise RptError(f"{out} exists (pass --overwrite to replace it)")
    start = time.perf_counter()
    f = GgufFile(cfg.gguf)
    tok = Tokenizer(tokenizer_from_gguf(f), source=str(f.path))
    progress = Progress(len(f.tensors), unit="tensors", desc="convert", quiet=cfg.quiet)
    model = Qwen3ForCausalLM.from_gguf(f, dtype=cfg.dtype, device="cpu", progress=progress)
    progress.close()
    if tok.vocab_size > model.config.vocab_size:
        raise RptError(
            f"{f.path}: the tokenizer has {tok.vocab_size} tokens but the model embeds "
            f"{model.config.vocab_size}"
        )
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tok.save(tmp)
            write_json_atomic(tmp / "tokenizer_config.json", tokenizer_config_from_gguf(f))
    except OSError as e:  # the temp directory beside OUT is the first write: name OUT, not the temp
        raise RptError(f"{out}: cannot write the converted model ({e.strerror or e})") from None
    return {
        "architecture": f.architecture,
        "parameters": model.num_parameters(),
        "tensor_types": dict(Counter(t.tensor_type.name for t in f.tensors.values())),
        "vocab_size": tok.vocab_size,
        "chat_template": f.get("tokenizer.chat_template") is not None,
        "seconds": round(time.perf_counter() - start, 1),
        "out": str(out),
    }
