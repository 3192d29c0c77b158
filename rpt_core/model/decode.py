"""The decode step of batched generation: one token per row against a ``KVCache``, with shapes fixed by
(rows B, key window W) so that ``torch.compile`` and CUDA graphs can capture it.

``decode_step`` runs the model's own ``hidden_states`` on a (B, 1) batch with a ``DecodeWindow`` as its
cache: every input is a tensor (the slot to write is a device tensor, written with ``index_copy_``), and
attention reads a key window of W slots whose validity mask already hides padding, finished rows and the
slots not written yet. So the same function is the eager step (W = the slots used so far) and the
captured one (W rounded up to a bucket, B to a row bucket): a shape changes only when a bucket does.

``Decoder`` runs the steps of one ``generate()`` call in one of three modes (``DecodeOptions``):

* eager (the default): exact windows, any batch size; nothing to warm up;
* ``compile``: ``torch.compile(decode_step, fullgraph=True, dynamic=True)``: one compilation serves every
  bucket (inductor kernels: fused norms, RoPE and casts);
* ``cuda_graphs`` (CUDA only; on by default with ``compile``): one CUDA graph per (B, W) bucket, captured
  on first use and replayed after copying the step's three small inputs into its static buffers. A graph
  reads the cache arrays in place (``KVCache.keep_rows`` compacts without moving their storage), so graphs
  live as long as the call's cache.

Sampling stays outside the step (it draws from a ``torch.Generator``), so the captured part is the model.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from rpt_core.model.kv_cache import KVCache
from rpt_core.runtime.errors import RptError

ROW_BUCKET_MIN = 8  # captured steps never shrink below this many rows (finished rows ride along, masked)
WINDOW_BUCKET = 128  # captured steps grow their key window this many slots at a time
CUDA_CHECK_EVERY = 16  # CUDA: host reads of the stop state once per this many steps


@dataclass(frozen=True)
class DecodeOptions:
    """How ``generate`` runs its decode loop (the sampled tokens do not depend on it, up to rounding).

    check_every: steps between the host's look at which rows finished (a device sync on CUDA); it ends
      the loop when every row is done and drives compaction. 0 = every step on CPU (free there),
      ``CUDA_CHECK_EVERY`` on CUDA.
    compact: drop finished rows from the batch (KV cache and running state) at a check when at least
      ``min_dead_fraction`` of the batch (and one row) is finished, so work follows the live rows.
    compile / cuda_graphs: the captured step (module docstring); ``cuda_graphs=None`` means "with
      compile, on CUDA".
    static_shapes: bucketed (B, W) shapes; None = when something is captured (an eager step gains
      nothing from them, but they can be checked eagerly this way).
    """

    check_every: int = 0
    compact: bool = True
    min_dead_fraction: float = 1 / 16
    compile: bool = False
    cuda_graphs: bool | None = None
    static_shapes: bool | None = None

    def __post_init__(self) -> None:
        if self.check_every < 0:
            raise RptError(f"check_every must be >= 0 (0 = automatic), got {self.check_every}")
        if not 0.0 <= self.min_dead_fraction <= 1.0:
            raise RptError(f"min_dead_fraction must be in [0, 1], got {self.min_dead_fraction}")


def row_bucket(n: int) -> int:
    """Rows a captured step runs for n live rows: n rounded up to 4 sizes per power of two, at least
    ``ROW_BUCKET_MIN`` (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...), so padding stays under 25%."""
    if n <= ROW_BUCKET_MIN:
        return ROW_BUCKET_MIN
    step = 1 << max(0, n.bit_length() - 3)
    return -(-n // step) * step


class DecodeWindow:
    """The cache a decode step hands the model: ``prepare`` gives the step's positions and mask, ``update``
    writes each layer's k, v at the slot and returns the whole window (B, n_kv, W, hd)."""

    def __init__(self, positions, slot, key_valid, k, v):
        self.positions, self.slot, self.key_valid, self.k, self.v = positions, slot, key_valid, k, v

    def prepare(self, T: int, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        del T, attention_mask  # one token per row; validity is in key_valid
        # Additive mask in the cache's (= attention's) dtype, built once per step: attention would convert
        # a boolean mask itself, once per layer.
        mask = torch.zeros(self.key_valid.shape, dtype=self.k.dtype, device=self.k.device)
        mask.masked_fill_(~self.key_valid, float("-inf"))  # (B, W)
        return self.positions[:, None], mask[:, None, None, :]  # (B, 1), (B, 1, 1, W)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k_all, v_all = self.k[layer], self.v[layer]  # (B, n_kv, W, hd) views of the cache
        # Cast to the cache's dtype: under autocast the qk-norm's float32 weight leaves k in float32 while
        # the cache holds autocast's dtype, and index_copy_ (not an autocast op) refuses a mix.
        k_all.index_copy_(2, self.slot, k.to(k_all.dtype))  # k: (B, n_kv, 1, hd) at the slot (a device index)
        v_all.index_copy_(2, self.slot, v.to(v_all.dtype))
        return k_all, v_all


LM_HEAD_CHUNK = 8  # rows per W h^T product on a CPU (see lm_head_rows)


def lm_head_rows(lm_head: torch.nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (B, V) of hidden states (B, H): ``lm_head(hidden)``, as (W h^T)^T for float32 on a CPU.

    Asked for h W^T (what F.linear asks), MKL's float32 GEMM re-reads the (V, H) weight for small or odd
    B; asked for W h^T, a few rows at a time, it streams it once per product. Measured on the development
    machine (V = 151,936, H = 256), F.linear vs this: B = 2 22 vs 3.5 ms, B = 12 23 vs 12 ms, B = 16 24 vs
    16.5 ms. A single row is a matrix-vector product either way (12 ms), so it goes in twice. bfloat16
    (oneDNN) and CUDA keep F.linear, which is already the fast form there.
    """
    if hidden.device.type != "cpu" or hidden.dtype != torch.float32 or lm_head.bias is not None:
        return lm_head(hidden)
    weight = lm_head.weight  # (V, H)
    out = torch.empty(hidden.shape[0], weight.shape[0], dtype=hidden.dtype)  # (B, V)
    for lo in range(0, hidden.shape[0], LM_HEAD_CHUNK):
        h = hidden[lo : lo + LM_HEAD_CHUNK]  # (c, H)
        n = h.shape[0]
        out[lo : lo + n] = torch.mm(weight, (h.expand(2, -1) if n == 1 else h).t()).t()[:n]
    return out


def decode_step(
    model,
    tokens: torch.Tensor,  # (B,) long: each row's newest token
    positions: torch.Tensor,  # (B,) long: its position id (real tokens before it)
    slot: torch.Tensor,  # (1,) long: the cache slot it is written to
    key_valid: torch.Tensor,  # (B, W) bool: keys each row may attend to (its own slot included)
    k: torch.Tensor,  # (L, B, n_kv, W, hd): the cache window, written at ``slot``
    v: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """Next-token logits x ``scale`` (B, V) in the model's (or autocast's) dtype; every shape is fixed by
    (B, W). ``scale`` (1 / temperature) multiplies the hidden state before the LM head."""
    window = DecodeWindow(positions, slot, key_valid, k, v)
    hidden = model.hidden_states(tokens[:, None], kv_cache=window)  # (B, 1, H)
    return lm_head_rows(model.lm_head, hidden[:, 0] * scale)


class Decoder:
    """The decode steps of one ``generate()`` call over ``cache``: ``decoder(tokens, live) -> logits``
    (times ``scale``, the sampling temperature's inverse)."""

    def __init__(self, model, cache: KVCache, options: DecodeOptions, scale: float = 1.0):
        device = cache.k.device
        graphs = options.compile if options.cuda_graphs is None else options.cuda_graphs
        if graphs and device.type != "cuda":
            if options.cuda_graphs:
                raise RptError("cuda_graphs needs a CUDA device")
            graphs = False
        self.cache, self.graphs = cache, graphs
        captured = options.compile or graphs  # fixed shapes pay off only when something is captured
        self.static = captured if options.static_shapes is None else options.static_shapes
        step = functools.partial(decode_step, model, scale=scale)
        self.step = torch.compile(step, fullgraph=True, dynamic=True) if options.compile else step
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, tuple, torch.Tensor]] = {}
        self._pool = None

    def rows_for(self, n_live: int) -> int:
        """Batch rows after compacting to ``n_live`` live rows (exact when eager, a bucket when captured)."""
        return row_bucket(n_live) if self.static else n_live

    def window_for(self, slots: int) -> int:
        return -(-slots // WINDOW_BUCKET) * WINDOW_BUCKET if self.static else slots

    def __call__(self, tokens: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (B,) (``live`` (B,) bool: real tokens) and return the next logits (B, V)."""
        cache = self.cache
        inputs = (tokens, *cache.decode_inputs(live, self.window_for(cache.length + 1)))
        logits = self._replay(inputs) if self.graphs else self.step(*inputs)
        cache.advance(live)
        return logits

    # ---- CUDA graphs ----
    def _replay(self, inputs: tuple) -> torch.Tensor:
        tokens, positions, slot, key_valid, k, v = inputs
        key = tuple(key_valid.shape)  # (B, W)
        if key not in self._graphs:
            # B only shrinks and W only grows within a call, so a bucket left behind never comes back:
            # drop its graph (and its memory) before capturing the next.
            self._graphs.clear()
            self._graphs[key] = self._capture(inputs)
        graph, static, out = self._graphs[key]
        for buf, value in zip(static, (tokens, positions, slot), strict=True):
            buf.copy_(value)
        graph.replay()
        return out

    def _capture(self, inputs: tuple) -> tuple[torch.cuda.CUDAGraph, tuple, torch.Tensor]:
        """Capture the step for this (B, W); the window and cache arrays are read where they are.

        The warm-up runs the real step (it writes this slot's k, v, which the replay writes again, with
        the same values), on a side stream as capture requires. Autocast is re-entered with its weight
        cache off, which graph capture requires.
        """
        tokens, positions, slot, key_valid, k, v = inputs
        static = (tokens.clone(), positions.clone(), slot.clone())
        args = (*static, key_valid, k, v)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), _graph_autocast():
            self.step(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # One memory pool for the call's graphs: one graph is alive at a time.
        with torch.cuda.graph(graph, pool=self._pool), _graph_autocast():
            out = self.step(*args)
        return graph, static, out


def _graph_autocast():
    if not torch.is_autocast_enabled("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)
