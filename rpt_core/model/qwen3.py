"""The Qwen3 decoder (also Qwen2 and Llama via two config switches), written from scratch in PyTorch.

Module and parameter names follow Hugging Face's so a ``state_dict`` maps 1:1 onto ``model.safetensors``.
The model knows nothing about parallelism or training loops: DDP/FSDP wrap it from outside, and the KV
cache is passed in by the caller (see ``rpt_core.model.kv_cache``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from rpt_core.model import gguf, hf_io
from rpt_core.model.config import Qwen3Config
from rpt_core.model.kv_cache import KVCache, attention_mask_for, positions_from_mask
from rpt_core.model.rope import RotaryEmbedding, apply_rope
from rpt_core.runtime.progress import Progress


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 and cast back before the weight, exactly as the reference does, so bf16
        # checkpoints give the same numbers here and in transformers. F.rms_norm is one fused op where
        # the reference's pow / mean / add / rsqrt / mul are five (decoding is launch-bound on a GPU).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.hd, cfg.hidden_size, bias=cfg.o_proj_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self,
        x: torch.Tensor,  # (B, T, hidden)
        cos: torch.Tensor,  # (B, T, hd)
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # (B, 1, T, K) bool, or None for plain causal
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd)
        if self.q_norm is not None:  # Qwen3 QK-norm, per head, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, n_kv, K, hd)
        if T == 1 and self.n_kv != self.n_heads:
            # Decoding: fold each KV head's query group into the query length, (B, n_kv, group, hd), so
            # attention is plain multi-head over n_kv heads: no repeated K/V and no GQA-specific kernel
            # (a masked GQA call can fall back to the slow math path on CUDA). One query sees every key.
            y = F.scaled_dot_product_attention(q.reshape(B, self.n_kv, -1, self.hd), k, v, attn_mask=mask)
        else:
            gqa = self.n_kv != self.n_heads
            if gqa and mask is not None:
                # A mask with enable_gqa sends CUDA SDPA to its math backend, which materialises a float32
                # (B, H, T, K) score tensor per layer (GB at training lengths); with K/V repeated to H heads
                # the memory-efficient kernel takes the mask (benchmarks/GPU.md counts both).
                k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)  # (B, H, K, hd)
                v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
                gqa = False
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
            )  # (B, H, T, hd)
        return self.o_proj(y.reshape(B, self.n_heads, T, self.hd).transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, kv_cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    """Embedding, decoder stack and final norm: returns hidden states (B, T, hidden)."""

    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen3ForCausalLM(nn.Module):
    """Causal LM: ``model(input_ids, attention_mask=None, position_ids=None, kv_cache=None)``.

    Returns float32 logits (B, T, V).
    """

    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.config = config
        self.model = Qwen3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.rope_scaling, config.max_position_embeddings
        )
        self.gradient_checkpointing = False
        # The dtype forward computes in when a wrapper casts the weights for it (FSDP2's mixed-precision
        # param_dtype, set by rpt_core.runtime.distributed.wrap_fsdp2); None: the weights' own dtype.
        self.compute_dtype: torch.dtype | None = None
        if self.lm_head.weight.is_meta:  # from_pretrained builds on meta and assigns the checkpoint's tensors
            self.tie_weights()
        else:
            self.init_weights()

    # ---- weights ----
    def init_weights(self, std: float = 0.02) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    # ---- forward ----
    def hidden_states(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T) 1 = real token, 0 = padding
        position_ids: torch.Tensor | None = None,  # (B, T)
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final-normed hidden states (B, T, hidden); callers that need only some logits start here."""
        B, T = input_ids.shape
        x = self.model.embed_tokens(input_ids)  # (B, T, hidden)
        if kv_cache is not None:
            positions, mask = kv_cache.prepare(T, attention_mask)
        elif attention_mask is not None and not bool(attention_mask.all()):
            positions = positions_from_mask(attention_mask)
            mask = attention_mask_for(attention_mask.bool(), 0, T)  # (B, 1, T, T)
        else:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
            mask = None  # plain causal: lets SDPA pick its fastest kernel
        if position_ids is not None:
            positions = position_ids
        cos, sin = self.rotary(positions, x.dtype)  # (B, T, hd) each
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, mask, None, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, kv_cache)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head in the model's dtype, returned as float32 (B, T, V)."""
        return self.lm_head(hidden).float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        return self.logits(self.hidden_states(input_ids, attention_mask, position_ids, kv_cache))

    def new_kv_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        """A cache for ``batch`` rows of ``max_len`` slots, in ``dtype`` (default: the weights' dtype)."""
        return KVCache.for_model(self.config, batch, max_len, self.device, dtype or self.dtype)

    # ---- checkpoints (Hugging Face format, or a GGUF file) ----
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        gguf_file: str | None = None,
    ) -> Qwen3ForCausalLM:
        """Build on the meta device and assign the checkpoint's tensors (no double allocation).

        ``dtype=None`` keeps the dtype stored in the checkpoint; ``device=None`` picks CUDA when present.
        ``gguf_file``: load that GGUF file of ``path`` (a directory or hub repo) instead, dequantized, as
        transformers does (``rpt_core.model.gguf``).
        """
        device = torch.device(device) if device is not None else hf_io.default_device()
        if gguf_file is not None:
            return cls.from_gguf(gguf.GgufFile(gguf.resolve_gguf(path, gguf_file)), dtype, device)
        model_dir = hf_io.resolve_model_dir(path)
        config = hf_io.read_config(model_dir)
        state = hf_io.load_state(model_dir, config, hf_io.parse_dtype(dtype), device)
        return cls._from_state(config, state, model_dir)

    @classmethod
    def from_gguf(
        cls,
        f: gguf.GgufFile,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str = "cpu",
        progress: Progress | None = None,
    ) -> Qwen3ForCausalLM:
        """The model of an open GGUF file; ``dtype=None``: ``gguf.stored_dtype`` (float32 when quantized)."""
        config = Qwen3Config.from_hf_dict(gguf.hf_config_dict(f))
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in cls(config).state_dict().items()}
        if config.tie_word_embeddings:
            shapes.pop("lm_head.weight")
        state = gguf.load_state(f, config, shapes, hf_io.parse_dtype(dtype), torch.device(device), progress)
        return cls._from_state(config, state, f.path)

    @classmethod
    def _from_state(
        cls, config: Qwen3Config, state: dict[str, torch.Tensor], source: Path
    ) -> Qwen3ForCausalLM:
        with torch.device("meta"):
            model = cls(config)
        expected = set(model.state_dict()) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
        hf_io.check_keys(source, expected, state)
        model.load_state_dict(state, strict=False, assign=True)
        model.tie_weights()
        model.config.torch_dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
        return model.eval()

    def save_pretrained(self, path: str | Path, max_shard_bytes: int = 5 * 1024**3) -> None:
        """``config.json`` + safetensors in Hugging Face format (``rpt_core.model.hf_io``)."""
        hf_io.save_pretrained(self.state_dict(), self.config, path, max_shard_bytes)
