"""Small GGUF files for tests, written the way llama.cpp's converter lays them out: its tensor names, its
q/k row permutation for llama, its metadata keys, and a tokenizer taken from a ``tokenizer.json``.

Written independently of ``rpt_core.model.gguf`` (names spelled out here, the permutation in llama.cpp's
forward direction), so a test that loads these files checks our reader against the format, not against
itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import tokenizers
import torch

from rpt_core.model import Qwen3ForCausalLM

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp token types

# HF parameter name (with {i} for the layer) -> llama.cpp tensor name.
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    "model.layers.{i}.self_attn.q_norm.weight": "blk.{i}.attn_q_norm.weight",
    "model.layers.{i}.self_attn.k_norm.weight": "blk.{i}.attn_k_norm.weight",
    **{
        f"model.layers.{{i}}.self_attn.{p}_proj.{kind}": f"blk.{{i}}.attn_{g}.{kind}"
        for p, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))
        for kind in ("weight", "bias")
    },
}


def gguf_name(hf_name: str) -> str:
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        i = parts[2]
        return NAMES[".".join([*parts[:2], "{i}", *parts[3:]])].format(i=i)
    return NAMES[hf_name]


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter for llama q/k: each head's halves (x..., y...) -> interleaved (x0, y0, ...)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_tokenizer(
    writer: gguf.GGUFWriter,
    tok: tokenizers.Tokenizer,
    pre: str,
    vocab_size: int | None = None,
    eos: str | None = None,
    bos: str | None = None,
    chat_template: str | None = None,
) -> None:
    """The ``tokenizer.ggml.*`` keys of a byte-level BPE, as llama.cpp writes them (holes: ``[PADi]``)."""
    data = json.loads(tok.to_str())
    by_id = {i: (t, NORMAL) for t, i in data["model"]["vocab"].items()}
    for a in data["added_tokens"]:
        by_id[a["id"]] = (a["content"], CONTROL if a["special"] else USER_DEFINED)
    size = max(vocab_size or 0, max(by_id) + 1)
    tokens = [by_id.get(i, (f"[PAD{i}]", UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([t for t, _ in tokens])
    writer.add_token_types([k for _, k in tokens])
    writer.add_token_merges(merges)
    if eos is not None:
        writer.add_eos_token_id(tok.token_to_id(eos))
    if bos is not None:
        writer.add_bos_token_id(tok.token_to_id(bos))
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def write_gguf(
    path: Path,
    model: Qwen3ForCausalLM | None = None,
    tokenizer: tokenizers.Tokenizer | None = None,
    arch: str | None = None,
    pre: str = "gpt2",
    qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32,
    extra_kv: dict[str, Any] | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
    **tokenizer_kwargs: Any,
) -> Path:
    """A GGUF of ``model`` (its config's architecture unless ``arch``) and/or ``tokenizer``; matrices in
    ``qtype`` (norms and biases stay F32, as llama.cpp keeps them)."""
    cfg = model.config if model is not None else None
    arch = arch or (cfg.model_type if cfg is not None else "qwen3")
    writer = gguf.GGUFWriter(str(path), arch)
    if cfg is not None:
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_context_length(cfg.max_position_embeddings)
        writer.add_embedding_length(cfg.hidden_size)
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_block_count(cfg.num_hidden_layers)
        writer.add_head_count(cfg.num_attention_heads)
        writer.add_head_count_kv(cfg.num_key_value_heads)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        writer.add_rope_dimension_count(cfg.head_dim)
        if arch == "qwen3":  # llama.cpp's Qwen3 converter writes the head size explicitly
            writer.add_key_length(cfg.head_dim)
            writer.add_value_length(cfg.head_dim)
    if tokenizer is not None:
        add_tokenizer(writer, tokenizer, pre, cfg.vocab_size if cfg else None, **tokenizer_kwargs)
    for key, value in (extra_kv or {}).items():
        writer.add_key_value(key, value, _value_type(value))
    tensors = dict(extra_tensors or {})
    if model is not None:
        state = model.state_dict()
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight")
        for name, t in state.items():
            w = t.detach().float().numpy()
            if arch == "llama" and ".q_proj." in name:
                w = llama_cpp_permute(w, cfg.num_attention_heads)
            elif arch == "llama" and ".k_proj." in name:
                w = llama_cpp_permute(w, cfg.num_key_value_heads)
            tensors[gguf_name(name)] = w
    for name, w in tensors.items():
        if w.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    return gguf.GGUFValueType.STRING


def dequantized(w: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> torch.Tensor:
    """What a reader gets back for ``w`` stored in ``qtype``."""
    q = gguf.quants.quantize(w.detach().float().numpy(), qtype)
    return torch.from_numpy(gguf.quants.dequantize(q, qtype).reshape(w.shape))


def truncated(tok: tokenizers.Tokenizer, n: int) -> tokenizers.Tokenizer:
    """``tok`` with only its first ``n`` BPE tokens (and the merges among them), its added tokens moved to
    follow: the same normalizer, pre-tokenizer and specials on a vocabulary small enough to read fast."""
    data = json.loads(tok.to_str())
    vocab = {t: i for t, i in data["model"]["vocab"].items() if i < n}
    pairs = [m.split(" ") if isinstance(m, str) else m for m in data["model"]["merges"]]
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = [p for p in pairs if p[0] in vocab and p[1] in vocab and p[0] + p[1] in vocab]
    for k, added in enumerate(sorted(data["added_tokens"], key=lambda a: a["id"])):
        added["id"] = n + k
    return tokenizers.Tokenizer.from_str(json.dumps(data))
