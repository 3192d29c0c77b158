"""Hugging Face checkpoint I/O: ``config.json`` + ``model.safetensors`` (single or sharded with an index).

Works on configs and state dicts, not on model classes (``Qwen3ForCausalLM.from_pretrained`` /
``save_pretrained`` call in here; nothing here imports the model), so a gathered FSDP state dict is saved
the same way as a live model's. A local directory is used as is; a hub id (``rpt_core.runtime.hub``) is
fetched with huggingface_hub (served from the local cache when offline). Saves are atomic per file and
loadable by transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rpt_core.model.config import Qwen3Config
from rpt_core.runtime.errors import RptError, first_line
from rpt_core.runtime.files import atomic_path, sha256_bytes, sha256_file, write_json_atomic
from rpt_core.runtime.hub import fetch_error, is_hub_id

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise RptError(f"unknown dtype '{dtype}' (use float32 or bfloat16)")
    return _DTYPES[dtype]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_model_dir(
    path_or_id: str | Path, allow_patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.jinja")
) -> Path:
    """A local directory as is, else a hub snapshot (downloaded once, then read from the cache)."""
    local = Path(path_or_id)
    if local.is_dir():
        return local
    if not is_hub_id(path_or_id):
        raise RptError(
            f"model not found: {path_or_id} "
            "(expected an HF-format directory or a hub id like Qwen/Qwen3-0.6B)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path_or_id), allow_patterns=list(allow_patterns)))
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise fetch_error("model", str(path_or_id), e) from None


def _weight_files(model_dir: Path) -> list[Path]:
    if (model_dir / WEIGHTS_NAME).is_file():
        return [model_dir / WEIGHTS_NAME]
    if (model_dir / INDEX_NAME).is_file():
        try:
            index = json.loads((model_dir / INDEX_NAME).read_text())
            return [model_dir / f for f in sorted(set(index["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise RptError(f"{model_dir / INDEX_NAME}: not a safetensors index ({first_line(e)})") from None
    raise RptError(f"{model_dir}: no {WEIGHTS_NAME} or {INDEX_NAME}")


def weights_sha256(model_dir: str | Path) -> str:
    """Identity of a checkpoint's weights: the sha256 of model.safetensors, or of the ``name sha256`` lines
    of all its shards."""
    files = _weight_files(Path(model_dir))
    if len(files) == 1:
        return sha256_file(files[0])
    return sha256_bytes("".join(f"{f.name} {sha256_file(f)}\n" for f in files).encode())


def read_config(model_dir: Path) -> Qwen3Config:
    return Qwen3Config.from_json_file(Path(model_dir) / CONFIG_NAME)


def load_state(
    model_dir: Path, config: Qwen3Config, dtype: torch.dtype | None, device: torch.device
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors on ``device`` in ``dtype`` (None: as stored), tied LM head dropped."""
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(model_dir):
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for key in f.keys():
                    state[key] = f.get_tensor(key)
        except (SafetensorError, OSError) as e:  # truncated, overwritten, not safetensors at all
            raise RptError(
                f"{file}: not a readable safetensors file ({first_line(e)}); the checkpoint is "
                "truncated or corrupt: re-download or re-save it"
            ) from None
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    elif "lm_head.weight" not in state:
        raise RptError(f"{model_dir}: untied model without lm_head.weight")
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if not state:
        raise RptError(f"{model_dir}: the checkpoint holds no tensors")
    stored = next(iter(state.values())).dtype
    return {k: _aligned(v.to(dtype or stored)) for k, v in state.items()}


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, copied when it is a CPU view into the memory-mapped file at an offset that is not 64-byte
    aligned (safetensors packs tensors after its header): vector loads from misaligned weights made CPU
    decoding ~25% slower."""
    return t.clone() if t.device.type == "cpu" and t.data_ptr() % 64 else t


def check_keys(model_dir: Path, expected: set[str], state: dict[str, torch.Tensor]) -> None:
    """One line naming a few missing / unexpected tensors when a checkpoint does not fit its config."""
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise RptError(
            f"{model_dir}: checkpoint does not match the config "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def save_pretrained(
    state: dict[str, torch.Tensor], config: Qwen3Config, path: str | Path, max_shard_bytes: int = 5 * 1024**3
) -> None:
    """Write config.json and safetensors (sharded above ``max_shard_bytes``), each file atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: transformers expects it absent
    state = {k: v.cpu() if v.device.type != "cpu" else v for k, v in state.items()}
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.clone() if _shares_storage(tensor, state, key) else tensor
        size += nbytes
    hf_config = config.to_hf_dict()
    hf_config["torch_dtype"] = str(dtype).removeprefix("torch.")
    write_json_atomic(path / CONFIG_NAME, hf_config)
    if len(shards) == 1:
        with atomic_path(path / WEIGHTS_NAME) as tmp:
            save_file(shards[0], str(tmp), metadata={"format": "pt"})
        stale = path / INDEX_NAME
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            with atomic_path(path / name) as tmp:
                save_file(shard, str(tmp), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
            total += sum(t.numel() * t.element_size() for t in shard.values())
        write_json_atomic(path / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
        stale = path / WEIGHTS_NAME
    if stale.exists():  # a previous save in the other layout would shadow this one
        os.remove(stale)


def _shares_storage(tensor: torch.Tensor, state: dict[str, torch.Tensor], key: str) -> bool:
    ptr = tensor.untyped_storage().data_ptr()
    return any(k != key and v.untyped_storage().data_ptr() == ptr for k, v in state.items())
