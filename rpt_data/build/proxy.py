"""The proxy of ``rpt-data build``: the model whose top-k entropy scores positions, and its tokenizer.

``load_proxy`` loads the tokenizer and the proxy and refuses a tokenizer that does not belong to the proxy
(``rpt_core.text.pairing``, the trainer's and evaluator's check too): the entropies would belong to other
tokens than the rows' labels. Ranks and devices come from ``rpt_core.runtime.distributed.init_distributed``,
shared with the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rpt_core.model import Qwen3ForCausalLM, parse_dtype, resolve_model_dir
from rpt_core.model.hf_io import CONFIG_NAME, weights_sha256
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import sha256_file
from rpt_core.text.pairing import load_checked
from rpt_core.text.tokenizer import TOKENIZER_FILE, Tokenizer, resolve_tokenizer_file


@dataclass
class ProxyBundle:
    model: Qwen3ForCausalLM
    model_dir: Path
    tokenizer: Tokenizer
    tokenizer_file: Path
    tokenizer_sha256: str
    dtype: str


def load_proxy(
    proxy: str, tokenizer: str | None, dtype: str | None, device: torch.device, top_k: int | None = None
) -> ProxyBundle:
    """Tokenizer (default: the proxy's own ``tokenizer.json``) and proxy model in eval mode on ``device``;
    ``top_k`` (the entropy's) must not exceed the proxy's vocabulary."""
    model_dir = resolve_model_dir(proxy)
    own_file = model_dir / TOKENIZER_FILE
    if tokenizer is None and not own_file.is_file():
        raise RptError(f"proxy {proxy} has no {TOKENIZER_FILE}; pass --tokenizer")
    tok = Tokenizer.load(tokenizer if tokenizer is not None else own_file)
    tok_file = resolve_tokenizer_file(tokenizer) if tokenizer is not None else own_file
    resolved = parse_dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = load_checked(
        model_dir, tok, f"the proxy {proxy}", dtype=resolved, device=device, top_k=top_k, role="proxy"
    )
    model.requires_grad_(False)
    return ProxyBundle(
        model,
        model_dir,
        tok,
        tok_file,
        sha256_file(tok_file),
        str(resolved).removeprefix("torch."),  # type: ignore[arg-type]
    )


def proxy_hashes(model_dir: Path) -> dict[str, str]:
    """sha256 of config.json and of the weights (the file, or the ``name sha256`` lines of all shards)."""
    return {
        "config_sha256": sha256_file(model_dir / CONFIG_NAME),
        "weights_sha256": weights_sha256(model_dir),
    }
