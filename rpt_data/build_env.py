"""The environment of ``rpt-data build``: torchrun ranks and devices, and the proxy model + tokenizer.

``init_distributed`` reads the torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and, for
more than one rank, joins a process group (NCCL on CUDA, gloo on CPU) used only for barriers.
``load_proxy`` loads the tokenizer and the proxy and refuses a tokenizer whose byte-level vocabulary is
not the proxy's: the entropies would belong to other tokens than the rows' labels.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as torch_dist

from rpt_train.errors import RptError
from rpt_train.io import sha256_file
from rpt_train.model import Qwen3Config, Qwen3ForCausalLM, default_device, parse_dtype, resolve_model_dir
from rpt_train.model.checkpoint import weights_sha256
from rpt_train.tokenizer import TOKENIZER_FILE, Tokenizer, resolve_tokenizer_file

# Ranks meet only at the start and the end; a slow rank may reach the final barrier hours after the rest.
BARRIER_TIMEOUT = datetime.timedelta(hours=24)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise RptError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str | None) -> Dist:
    """This process's rank, world size and device; joins the torchrun process group when there is one."""
    world, local = _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if device is None:
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else default_device()
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise RptError(f"invalid --device {device!r} ({e})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RptError(f"--device {device}: CUDA is not available")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return Dist(0, 1, dev, False)
    owns = False
    if not torch_dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
        owns = True
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), dev, owns)


@dataclass
class ProxyBundle:
    model: Qwen3ForCausalLM
    model_dir: Path
    tokenizer: Tokenizer
    tokenizer_file: Path
    tokenizer_sha256: str
    dtype: str


def check_vocab(
    tokenizer: Tokenizer, model_vocab: int, proxy_tokenizer: Tokenizer | None, proxy: str
) -> None:
    """RptError unless the tokenizer's ids and byte-level vocabulary are the proxy's."""
    if tokenizer.vocab_size > model_vocab:
        raise RptError(
            f"tokenizer {tokenizer.source} has {tokenizer.vocab_size} tokens but the proxy {proxy} embeds "
            f"only {model_vocab}: it is not the proxy's vocabulary"
        )
    if (
        proxy_tokenizer is not None
        and proxy_tokenizer.base_vocab_fingerprint != tokenizer.base_vocab_fingerprint
    ):
        raise RptError(
            f"tokenizer {tokenizer.source} has a different base vocabulary from the proxy's own "
            f"{proxy_tokenizer.source}: the proxy's entropies would not belong to these tokens"
        )


def load_proxy(proxy: str, tokenizer: str | None, dtype: str | None, device: torch.device) -> ProxyBundle:
    """Tokenizer (default: the proxy's own ``tokenizer.json``) and proxy model in eval mode on ``device``."""
    model_dir = resolve_model_dir(proxy)
    own_file = model_dir / TOKENIZER_FILE
    own = Tokenizer.load(own_file) if own_file.is_file() else None
    if tokenizer is None and own is None:
        raise RptError(f"proxy {proxy} has no {TOKENIZER_FILE}; pass --tokenizer")
    tok = Tokenizer.load(tokenizer) if tokenizer is not None else own
    tok_file = resolve_tokenizer_file(tokenizer) if tokenizer is not None else own_file
    config = Qwen3Config.from_json_file(model_dir / "config.json")
    check_vocab(tok, config.vocab_size, own if tokenizer is not None else None, proxy)  # type: ignore[arg-type]
    resolved = parse_dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=resolved, device=device)
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
        "config_sha256": sha256_file(model_dir / "config.json"),
        "weights_sha256": weights_sha256(model_dir),
    }
