"""GGUF checkpoints (llama.cpp's single-file format) of the llama, qwen2 and qwen3 architectures.

A GGUF holds the model's hyper-parameters as metadata under llama.cpp's key names, and its tensors under
llama.cpp's names, most of them quantized. This module turns the metadata into the ``config.json`` dict
``Qwen3Config.from_hf_dict`` reads (so the one config reader decides what is supported), and the tensors
into an HF-named float state dict, dequantized with the ``gguf`` package (``gguf.quants.dequantize``).
The tensor names come from ``gguf``'s own HF -> GGUF name map, applied to the names our model expects.

llama.cpp changes one layout on the way in, for llama only: its RoPE rotates adjacent pairs where HF's
rotates the two halves of a head, so its converter permutes the rows of the q and k projections (per
head: the rows ``[0, hd/2, 1, hd/2+1, ...]``). ``unpermute_qk`` puts them back. Qwen2 and Qwen3 use the
half-split ("NEOX") rotation in llama.cpp as well and are stored as they are.

Every metadata key of the model's architecture that changes the math is honoured or refused with one
line (an unknown key is refused: a silently different model is worse than none). The tokenizer half of
a GGUF is ``rpt_core.text.gguf_tokenizer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpt_core.runtime.errors import RptError, first_line
from rpt_core.runtime.hub import fetch_error, is_hub_id
from rpt_core.runtime.progress import Progress


@dataclass(frozen=True)
class GgufArch:
    """How one ``general.architecture`` maps onto our decoder."""

    model_type: str  # config.json model_type
    unpermute_qk: bool  # llama.cpp permuted the q/k rows for its interleaved RoPE


ARCHES = {
    "llama": GgufArch("llama", unpermute_qk=True),
    "qwen2": GgufArch("qwen2", unpermute_qk=False),
    "qwen3": GgufArch("qwen3", unpermute_qk=False),
}

# {arch}.<key> -> config.json key; the values are taken as they are.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
}
# Read below with their own rules, or harmless (they do not change the math).
_OTHER_KEYS = {
    "attention.key_length",
    "attention.value_length",
    "rope.dimension_count",
    "rope.scaling.finetuned",
}
# {arch}.rope.scaling.<key> -> the rope_scaling entry of config.json.
_ROPE_SCALING_KEYS = {
    "factor": "factor",
    "original_context_length": "original_max_position_embeddings",
    "yarn_beta_fast": "beta_fast",
    "yarn_beta_slow": "beta_slow",
}
_ROPE_THETA_DEFAULT = 10_000.0  # llama.cpp's value when a file has no rope.freq_base


class GgufFile:
    """An open GGUF file: its metadata by key, its tensors by name (memory-mapped, read on demand)."""

    def __init__(self, path: str | Path):
        import gguf

        self.path = Path(path)
        if not self.path.is_file():
            raise RptError(f"GGUF file not found: {self.path}")
        try:
            self.reader = gguf.GGUFReader(self.path)
        except Exception as e:  # the reader raises ValueError/struct errors/... for anything not a GGUF
            raise RptError(f"cannot read {self.path} as GGUF ({type(e).__name__}: {first_line(e)})") from None
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.architecture = str(self.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value (a number, bool, string or list), or ``default`` when absent."""
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def keys(self) -> list[str]:
        return list(self.reader.fields)

    def arch(self) -> GgufArch:
        if self.architecture not in ARCHES:
            raise RptError(
                f"{self.path}: GGUF architecture '{self.architecture}' is not supported "
                f"(supported: {', '.join(ARCHES)})"
            )
        return ARCHES[self.architecture]


def resolve_gguf(path_or_id: str | Path, gguf_file: str) -> Path:
    """``gguf_file`` inside a local directory, else ``gguf_file`` as a path, else fetched from a hub repo."""
    local = Path(path_or_id).expanduser()
    if local.is_dir():
        if (local / gguf_file).is_file():
            return local / gguf_file
        if not Path(gguf_file).expanduser().is_file():
            raise RptError(f"{local}: no GGUF file '{gguf_file}'")
    if Path(gguf_file).expanduser().is_file():
        return Path(gguf_file).expanduser()
    if not is_hub_id(str(path_or_id)):
        raise RptError(f"GGUF file not found: '{gguf_file}' in {path_or_id}")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(path_or_id), gguf_file))
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise fetch_error(f"GGUF file {gguf_file}", str(path_or_id), e) from None


def hf_config_dict(f: GgufFile) -> dict[str, Any]:
    """The ``config.json`` dict of the model in ``f`` (architecture, shapes, RoPE, special token ids)."""
    arch = f.arch()
    prefix = f"{f.architecture}."
    model_keys = {k[len(prefix) :] for k in f.keys() if k.startswith(prefix)}
    known = set(_CONFIG_KEYS) | _OTHER_KEYS | {"rope.scaling.type"}
    known |= {f"rope.scaling.{k}" for k in _ROPE_SCALING_KEYS}
    unknown = sorted(model_keys - known)
    if unknown:
        raise RptError(
            f"{f.path}: GGUF metadata {', '.join(prefix + k for k in unknown[:4])} is not supported"
        )
    d: dict[str, Any] = {"model_type": arch.model_type, "hidden_act": "silu"}
    for key, name in _CONFIG_KEYS.items():
        value = f.get(prefix + key)
        if isinstance(value, list):  # llama.cpp writes per-layer arrays for models with varying layers
            raise RptError(f"{f.path}: per-layer {prefix}{key} is not supported")
        if value is not None:
            d[name] = value
    required = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "rms_norm_eps",
    )
    missing = [k for k in required if k not in d]
    if missing:
        raise RptError(f"{f.path}: GGUF metadata has no {', '.join(missing)}")
    d.setdefault("num_key_value_heads", d["num_attention_heads"])
    d.setdefault("rope_theta", _ROPE_THETA_DEFAULT)
    if "vocab_size" not in d:  # older files: the vocabulary is the embedding's row count
        d["vocab_size"] = int(f.tensors["token_embd.weight"].shape[-1])
    d["head_dim"] = _head_dim(f, d)
    d.update(_rope_scaling(f))
    d["tie_word_embeddings"] = "output.weight" not in f.tensors
    d["attention_bias"] = "blk.0.attn_q.bias" in f.tensors
    for name, key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        d[name] = f.get(f"tokenizer.ggml.{key}_token_id")
    if "qwen" in arch.model_type:
        d["use_sliding_window"] = False
    return d


def _head_dim(f: GgufFile, d: Mapping[str, Any]) -> int:
    """``attention.key_length`` (Qwen3 writes it), else the RoPE dimension (llama), else hidden / heads."""
    prefix = f"{f.architecture}."
    key, value = f.get(prefix + "attention.key_length"), f.get(prefix + "attention.value_length")
    rope_dim = f.get(prefix + "rope.dimension_count")
    head_dim = int(key or rope_dim or d["hidden_size"] // d["num_attention_heads"])
    if value is not None and int(value) != head_dim:
        raise RptError(f"{f.path}: key length {head_dim} != value length {value} is not supported")
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise RptError(f"{f.path}: partial RoPE ({rope_dim} of {head_dim} dims per head) is not supported")
    return head_dim


def _rope_scaling(f: GgufFile) -> dict[str, Any]:
    """``{"rope_scaling": {...}}`` from ``rope.scaling.*`` (whether it is supported is the config's call)."""
    prefix = f"{f.architecture}.rope.scaling."
    kind = f.get(prefix + "type")
    if "rope_freqs.weight" in f.tensors:  # llama3-style scaling baked into per-frequency factors
        raise RptError(
            f"{f.path}: RoPE frequency factors (rope_freqs.weight, Llama-3.1-style scaling) cannot be "
            "mapped back to rope_scaling; convert the original Hugging Face checkpoint instead"
        )
    if kind in (None, "none"):
        return {}
    scaling = {"rope_type": kind}
    for key, name in _ROPE_SCALING_KEYS.items():
        if f.get(prefix + key) is not None:
            scaling[name] = f.get(prefix + key)
    return {"rope_scaling": scaling}


def stored_dtype(f: GgufFile) -> torch.dtype:
    """The dtype of the file's weights: float16 / bfloat16 when every matrix is stored so, else float32
    (a dequantized block format is exact in float32 only)."""
    kinds = {t.tensor_type.name for t in f.tensors.values() if len(t.shape) > 1}
    if len(kinds) == 1 and kinds <= {"F16", "BF16"}:
        return torch.float16 if kinds == {"F16"} else torch.bfloat16
    return torch.float32


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: rows (out, ...) of ``n_heads`` heads, each stored as
    interleaved pairs ``(x0, y0, x1, y1, ...)``, back to HF's halves ``(x0, x1, ..., y0, y1, ...)``."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise RptError(f"q/k projection with {rows} rows does not split into {n_heads} heads of pairs")
    per_head = w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])  # (H, hd/2, 2, ...)
    return per_head.swapaxes(1, 2).reshape(w.shape)  # (H, 2, hd/2, ...) -> (out, ...)


def gguf_names(f: GgufFile, hf_names: list[str], num_layers: int) -> dict[str, str]:
    """GGUF tensor name -> HF name, for the HF names the model expects (``gguf``'s own name map)."""
    import gguf

    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == f.architecture)
    name_map = gguf.get_tensor_name_map(arch_id, num_layers)
    out = {}
    for hf_name in hf_names:
        base, _, suffix = hf_name.rpartition(".")
        gguf_name = name_map.get_name(base)
        if gguf_name is None:
            raise RptError(f"{f.path}: no GGUF name for tensor {hf_name}")
        out[f"{gguf_name}.{suffix}"] = hf_name
    return out


def load_state(
    f: GgufFile,
    config: Any,  # Qwen3Config (not imported: this module sits below the config layer's users)
    expected: Mapping[str, torch.Size],
    dtype: torch.dtype | None,
    device: torch.device,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """The file's tensors dequantized, renamed to HF names and un-permuted, as ``dtype`` on ``device``
    (None: ``stored_dtype``). ``expected`` is the model's state dict shapes (tied LM head left out)."""
    from gguf.quants import dequantize

    arch = f.arch()
    names = gguf_names(f, list(expected), config.num_hidden_layers)
    unexpected = sorted(set(f.tensors) - set(names))
    if unexpected:
        raise RptError(f"{f.path}: GGUF tensors the model has no place for: {', '.join(unexpected[:5])}")
    dtype = dtype or stored_dtype(f)
    state: dict[str, torch.Tensor] = {}
    for gguf_name, hf_name in names.items():
        if gguf_name not in f.tensors:
            continue  # the caller's key check names what is missing
        t = f.tensors[gguf_name]
        w = dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))  # (out, in) / (n,)
        if arch.unpermute_qk and ".attn_q." in gguf_name:
            w = unpermute_qk(w, config.num_attention_heads)
        elif arch.unpermute_qk and ".attn_k." in gguf_name:
            w = unpermute_qk(w, config.num_key_value_heads)
        if tuple(w.shape) != tuple(expected[hf_name]):
            raise RptError(
                f"{f.path}: tensor {gguf_name} has shape {tuple(w.shape)}, the config implies "
                f"{tuple(expected[hf_name])}"
            )
        w = np.require(w, np.float32, ["C", "W"])  # mmap views of F32 tensors are read-only
        state[hf_name] = torch.from_numpy(w).to(device=device, dtype=dtype)
        if progress is not None:
            progress.update(1, params=w.size)
    return state
