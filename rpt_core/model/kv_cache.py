"""A preallocated KV cache for batched, left-padded decoding, and the attention masks that go with it.

The cache owns three pieces of state besides the keys and values: ``valid`` (which slots hold real tokens,
so left padding and finished rows are masked out), ``seen`` (per-row count of real tokens, i.e. the next
position id) and ``length`` (slots used). ``prepare`` turns a step's padding mask into the position ids and
the boolean attention mask every layer uses; the generator reads ``valid`` back as the completion mask.

Prefill once per prompt, then ``repeat_interleave(G)`` to give each of G samples its own copy: the prompt
is never recomputed G times. Decoding then goes one slot per step through ``decode_inputs`` / ``advance``
(the fixed-shape step of ``rpt_core.model.decode``), and ``keep_rows`` drops finished rows in place, so a
batch's work follows the rows still generating.
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
        # ``length`` on the device: the slot a decode step writes, so a captured step needs no host value.
        self.slot = torch.zeros(1, device=device, dtype=torch.long)  # (1,)
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
        self.slot.fill_(end)
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
        The copy goes straight from a broadcast view into the new arrays: no (n x) temporary.
        """
        new = KVCache.__new__(KVCache)
        used = self.length
        max_len = max_len or self.max_len
        if max_len < used:
            raise ValueError(f"max_len {max_len} < {used} slots already used")
        L, B, H, _, D = self.k.shape
        new.k = torch.zeros((L, B * n, H, max_len, D), device=self.k.device, dtype=self.k.dtype)
        new.v = torch.zeros_like(new.k)
        for dst, src in ((new.k, self.k), (new.v, self.v)):
            # (L, B, n, H, used, D) view of the destination <- (L, B, 1, H, used, D) broadcast source
            dst[:, :, :, :used].unflatten(1, (B, n)).copy_(src[:, :, None, :, :used])
        new.valid = torch.zeros(B * n, max_len, device=self.valid.device, dtype=torch.bool)
        new.valid[:, :used] = self.valid[:, :used].repeat_interleave(n, dim=0)
        new.seen = self.seen.repeat_interleave(n, dim=0)
        new.length = used
        new.slot = torch.full((1,), used, device=self.k.device, dtype=torch.long)
        new._window = (used, used)
        return new

    # ---- decoding one slot per step (rpt_core.model.decode) ----
    def decode_inputs(
        self, live: torch.Tensor, window: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decode step's inputs: (positions (B,), slot (1,), key_valid (B, W), k, v (L, B, n_kv, W, hd)).

        ``live`` (B,) bool marks rows whose token at this slot is real. The key window is the first
        ``window`` slots (at least the ones used so far plus this one; more lets a captured step keep its
        shape for several steps: slots past the current one are simply not valid yet).
        """
        slot = self.length
        if slot >= self.max_len:
            raise ValueError(f"KV cache overflow: slot {slot} of {self.max_len}")
        W = min(max(window, slot + 1), self.max_len)
        self.valid[:, slot] = live
        return self.seen, self.slot, self.valid[:, :W], self.k[:, :, :, :W], self.v[:, :, :, :W]

    def advance(self, live: torch.Tensor) -> None:
        """After a decode step: live rows saw one more real token; the next step writes the next slot."""
        self.seen += live
        self.length += 1
        self.slot += 1

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` ((n,) ascending indices), moved to the front in place.

        The arrays keep their storage (the batch dimension becomes a view of the first n rows), so the
        memory a captured decode step reads stays where it was; rows already in place are not copied, and
        the gather goes one layer at a time, so the temporary is one layer's worth.
        """
        n, used = keep.numel(), self.length
        in_place = keep == torch.arange(n, device=keep.device)  # (n,)
        first = n if bool(in_place.all()) else int(in_place.logical_not().nonzero()[0])
        src = keep[first:]
        for cache in (self.k, self.v):
            for layer in range(cache.shape[0]):
                cache[layer, first:n, :, :used] = cache[layer, src, :, :used]
        self.valid[first:n, :used] = self.valid[src, :used]
        self.k, self.v, self.valid = self.k[:, :n], self.v[:, :n], self.valid[:n]
        self.seen = self.seen[keep]
