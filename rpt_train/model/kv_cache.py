"""A preallocated KV cache for batched, left-padded decoding, and the attention masks that go with it.

The cache owns three pieces of state besides the keys and values: ``valid`` (which slots hold real tokens,
so left padding and finished rows are masked out), ``seen`` (per-row count of real tokens, i.e. the next
position id) and ``length`` (slots used). ``prepare`` turns a step's padding mask into the position ids and
the boolean attention mask every layer uses; the generator reads ``valid`` back as the completion mask.

Prefill once per prompt, then ``repeat_interleave(G)`` to give each of G samples its own copy: the prompt
is never recomputed G times.
"""

from __future__ import annotations

import torch


def attention_mask_for(key_valid: torch.Tensor, q_start: int, q_len: int) -> torch.Tensor:
    """Boolean mask (B, 1, q_len, K) for queries at slots q_start..q_start+q_len-1 over K key slots.

    A query sees valid keys at or before its own slot. A query on a padding slot would see nothing, which
    makes softmax NaN; it is allowed to see its own slot (its output is never used).
    """
    B, K = key_valid.shape
    device = key_valid.device
    q_slots = torch.arange(q_start, q_start + q_len, device=device)  # (q_len,)
    k_slots = torch.arange(K, device=device)  # (K,)
    causal = k_slots[None, :] <= q_slots[:, None]  # (q_len, K)
    own = k_slots[None, :] == q_slots[:, None]  # (q_len, K)
    mask = (key_valid[:, None, :] & causal[None]) | own[None]  # (B, q_len, K)
    return mask[:, None]  # (B, 1, q_len, K)


def positions_from_mask(attention_mask: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Position ids (B, T) counting only real tokens, so left padding does not shift RoPE."""
    pos = attention_mask.long().cumsum(-1) - 1  # (B, T)
    if offset is not None:
        pos = pos + offset[:, None]
    return pos.clamp_min(0)


class KVCache:
    """Keys/values of every layer: (n_layers, B, n_kv_heads, max_len, head_dim)."""

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch, max_len, device=device, dtype=torch.bool)  # (B, max_len)
        self.seen = torch.zeros(batch, device=device, dtype=torch.long)  # (B,)
        self.length = 0
        self._window = (0, 0)

    @classmethod
    def for_model(cls, config, batch: int, max_len: int, device, dtype) -> KVCache:
        return cls(
            config.num_hidden_layers,
            batch,
            config.num_key_value_heads,
            config.head_dim,
            max_len,
            device,
            dtype,
        )

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def prepare(
        self, T: int, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reserve T slots for the next forward.

        Returns (position_ids (B, T), attention mask (B, 1, T, length + T)); the mask is None for an
        unpadded first forward, which is plain causal attention.
        """
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} slots needed, {self.max_len} allocated")
        if attention_mask is None:
            new_valid = torch.ones(self.batch, T, dtype=torch.bool, device=self.valid.device)
        else:
            new_valid = attention_mask.to(dtype=torch.bool, device=self.valid.device)  # (B, T)
        self.valid[:, start:end] = new_valid
        positions = positions_from_mask(new_valid, self.seen)  # (B, T)
        if start == 0 and bool(new_valid.all()):
            mask = None  # an unpadded first forward is plain causal: SDPA picks its fastest kernel
        else:
            mask = attention_mask_for(self.valid[:, :end], start, T)  # (B, 1, T, end)
        self.seen += new_valid.sum(-1)
        self.length = end
        self._window = (start, end)
        return positions, mask

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, n_kv, T, hd) for ``layer``.

        Returns all keys and values so far, (B, n_kv, end, hd) each.
        """
        start, end = self._window
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def repeat_interleave(self, n: int, max_len: int | None = None) -> KVCache:
        """A new cache whose row i*n+j is a copy of row i (j < n): one prefill serves n samples.

        ``max_len`` lets the prefill cache be sized for the prompt alone and the copy for prompt + decode.
        """
        new = KVCache.__new__(KVCache)
        used = self.length
        max_len = max_len or self.max_len
        if max_len < used:
            raise ValueError(f"max_len {max_len} < {used} slots already used")
        shape = list(self.k.shape)
        shape[1] *= n
        shape[3] = max_len
        new.k = torch.zeros(shape, device=self.k.device, dtype=self.k.dtype)
        new.v = torch.zeros(shape, device=self.v.device, dtype=self.v.dtype)
        new.k[:, :, :, :used] = self.k[:, :, :, :used].repeat_interleave(n, dim=1)
        new.v[:, :, :, :used] = self.v[:, :, :, :used].repeat_interleave(n, dim=1)
        new.valid = torch.zeros(shape[1], max_len, device=self.valid.device, dtype=torch.bool)
        new.valid[:, :used] = self.valid[:, :used].repeat_interleave(n, dim=0)
        new.seen = self.seen.repeat_interleave(n, dim=0)
        new.length = used
        new._window = (used, used)
        return new
