"""Proxy-model entropy: how uncertain a small model is about each token of a document.

RPT keeps the positions where a proxy is uncertain. For token ``x_t`` the score is the entropy (nats) of the
proxy's next-token distribution predicting ``x_t`` from ``x_<t``, computed over the ``k`` largest logits
renormalised with a softmax (top-16 by default). ``ProxyScorer.score`` returns, per document, a float32 array
aligned with the tokens: entry ``t`` is the entropy of the prediction *of* token ``t`` (made at position
``t - 1``); entry 0 is NaN because the first token has no context.

How the work is organised (all of it pure functions except ``ProxyScorer.score``):

* ``window_spans``: documents longer than the window are cut into overlapping windows; each window "owns"
  the targets that have at least ``overlap`` tokens of context inside it, so every target is scored once.
* ``pack_by_length``: windows are sorted longest first and packed into right-padded batches of at most
  ``batch_tokens`` padded tokens. Right padding needs no attention mask: under the causal mask a real
  position only attends to earlier positions, which are all real.
* ``topk_entropy``: the LM head runs on ``chunk_positions`` real positions at a time, so float logits for a
  whole batch (B * T * 151,936 floats) never exist; top-k uses a blocked search (``topk_values``) because
  ``torch.topk`` over a 151,936-wide row is as slow as the LM head matmul on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rpt_core.runtime.errors import RptError

TOPK_BLOCK = 128  # block width for the blocked top-k; 128 was fastest on CPU for V=151,936 (fp32 and bf16)


class ScorerConfigError(RptError, ValueError):
    """A bad scorer setting: an ``RptError`` for CLIs, a ``ValueError`` for library callers."""


# ---------------------------------------------------------------- pure math


def topk_values(logits: torch.Tensor, k: int, block: int = TOPK_BLOCK) -> torch.Tensor:
    """The ``k`` largest values of the last dim, sorted descending: same values as ``logits.topk(k)``.

    Blocked search: the block maxima's top-k blocks contain every top-k element (a block holding one has a
    maximum >= the k-th value, and at most k distinct blocks can), so only k * block candidates (plus the
    ragged tail) go through ``torch.topk``. Only the values are returned; which index wins a tie is moot.
    """
    V = logits.shape[-1]
    if k >= V:
        return logits.sort(dim=-1, descending=True).values
    G = V // block
    if G <= 4 * k:  # small vocabularies: the plain kernel is already cheap
        return logits.topk(k, dim=-1).values
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, V)  # (N, V)
    N = flat.shape[0]
    body = flat[:, : G * block].view(N, G, block)  # (N, G, block)
    best = body.amax(dim=-1).topk(k, dim=-1).indices  # (N, k)
    cand = body.gather(1, best[..., None].expand(N, k, block)).reshape(N, k * block)  # (N, k*block)
    if G * block < V:
        cand = torch.cat([cand, flat[:, G * block :]], dim=-1)  # (N, k*block + tail)
    return cand.topk(k, dim=-1).values.reshape(*lead, k)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax over the last dim, in float32; -inf logits contribute 0 (no NaN)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, 0.0)).sum(dim=-1)


def topk_entropy(logits: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Entropy (nats, float32) of the softmax over the ``k`` largest logits: (..., V) -> (...).

    ``k >= V`` gives the full entropy. Pure: no state, any device, any float dtype in.
    """
    if k < 1:
        raise ScorerConfigError(f"top_k must be >= 1, got {k}")
    return entropy_from_logits(topk_values(logits, k))


# ---------------------------------------------------------------- pure planning


@dataclass(frozen=True)
class Span:
    """One window of a document: tokens ``[start, stop)``, scoring targets ``[first_target, stop)``.

    The model input is ``tokens[start : stop - 1]`` (the last token predicts nothing); the logits at local
    position ``t - start - 1`` predict target ``t``.
    """

    start: int
    stop: int
    first_target: int

    @property
    def n_inputs(self) -> int:
        return self.stop - 1 - self.start


def window_spans(n: int, max_window: int, overlap: int) -> list[Span]:
    """Cover targets 1..n-1 of an n-token document exactly once with windows of at most ``max_window``.

    Windows start every ``max_window - overlap`` tokens; the last one is moved back to end at ``n`` (it is a
    full window, so it gives its targets more context than a short one would). A window owns the targets
    past the previous window's end, which sit at least ``overlap`` tokens into it.
    """
    if (
        overlap < 1 or overlap >= max_window
    ):  # overlap 0 would leave each window's first token without context
        raise ScorerConfigError(
            f"window_overlap must be in [1, max_window), got {overlap} with max_window {max_window}"
        )
    if n <= max_window:
        return [Span(0, n, 1)] if n >= 2 else []
    stride = max_window - overlap
    spans = [Span(0, max_window, 1)]
    while spans[-1].stop < n:
        start = min(spans[-1].start + stride, n - max_window)
        stop = start + max_window
        spans.append(Span(start, stop, spans[-1].stop))
    return spans


def pack_by_length(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches, longest first, each with B * max_len <= batch_tokens.

    Ties keep index order so the plan (and hence the numbers) depends only on the input list. A single
    item longer than ``batch_tokens`` gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        # Longest first: the batch's padded length is its first item's length.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# ---------------------------------------------------------------- the scorer


class ProxyScorer:
    """Scores documents with a proxy ``Qwen3ForCausalLM`` (``hidden_states`` + ``lm_head``).

    ``autocast=None`` uses bfloat16 autocast exactly when the model is on CUDA; on CPU the model runs in its
    own dtype (convert it with ``model.to(torch.bfloat16)`` to use bf16 there). Entropies are float32.

    Determinism: the same input list gives bit-identical results run to run on the same device and thread
    count (the batch plan depends only on the lengths, and the kernels used are deterministic). A document
    scored in a *different* batch (other neighbours, other padded length) can differ in the last bits,
    because matmul/attention kernels may block a different shape differently.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        top_k: int = 16,
        batch_tokens: int = 16384,
        max_window: int | None = None,
        window_overlap: int = 256,
        chunk_positions: int = 1024,
        autocast: bool | None = None,
    ):
        max_pos = int(model.config.max_position_embeddings)
        max_window = max_pos if max_window is None else int(max_window)
        for name, value, low in (
            ("top_k", top_k, 1),
            ("batch_tokens", batch_tokens, 1),
            ("chunk_positions", chunk_positions, 1),
            ("max_window", max_window, 2),
            ("window_overlap", window_overlap, 1),
        ):
            if value < low:
                raise ScorerConfigError(f"{name} must be >= {low}, got {value}")
        if max_window > max_pos:
            raise ScorerConfigError(
                f"max_window {max_window} exceeds the proxy's max_position_embeddings {max_pos}"
            )
        if window_overlap >= max_window:
            raise ScorerConfigError(
                f"window_overlap ({window_overlap}) must be smaller than max_window ({max_window})"
            )
        self.model = model
        self.top_k, self.batch_tokens, self.chunk_positions = top_k, batch_tokens, chunk_positions
        self.max_window, self.window_overlap = max_window, window_overlap
        self.vocab_size = int(model.lm_head.weight.shape[0])
        self.device = next(model.parameters()).device
        self.autocast = self.device.type == "cuda" if autocast is None else autocast
        self.tokens_scored = 0  # real tokens forwarded through the model
        self.forward_seconds = 0.0  # wall time in the model and the entropy, results copied back

    def score(
        self, docs: Sequence[Sequence[int]], on_batch: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """Per document (caller's order) a float32 array of len(doc): entry t = entropy predicting token t.

        Entry 0 is NaN (no context); an empty document gives an empty array. ``on_batch(n_tokens)`` is
        called after each batch with the real tokens it forwarded (for a progress display).
        """
        ids = [self._check_ids(i, d) for i, d in enumerate(docs)]
        out = [np.full(len(a), np.nan, dtype=np.float32) for a in ids]
        pieces = [
            (d, s)
            for d, a in enumerate(ids)
            for s in window_spans(len(a), self.max_window, self.window_overlap)
        ]
        plan = pack_by_length([s.n_inputs for _, s in pieces], self.batch_tokens)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            for batch in plan:
                chosen = [pieces[i] for i in batch]
                t0 = time.perf_counter()
                ent = self._score_batch([ids[d] for d, _ in chosen], [s for _, s in chosen])
                self.forward_seconds += time.perf_counter() - t0
                n_tokens = sum(s.n_inputs for _, s in chosen)
                self.tokens_scored += n_tokens
                at = 0
                for d, s in chosen:
                    n_targets = s.stop - s.first_target
                    out[d][s.first_target : s.stop] = ent[at : at + n_targets]
                    at += n_targets
                if on_batch is not None:
                    on_batch(n_tokens)
        return out

    def _check_ids(self, index: int, doc: Sequence[int]) -> np.ndarray:
        try:
            a = np.asarray(doc.cpu() if isinstance(doc, torch.Tensor) else doc, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise RptError(f"document {index}: token ids must be integers ({e})") from None
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise RptError(
                f"document {index}: token id {bad} is outside the proxy's vocabulary (size {self.vocab_size})"
            )
        return a

    def _score_batch(self, docs: list[np.ndarray], spans: list[Span]) -> np.ndarray:
        """Entropies of every owned target of every span, concatenated in span order (float32)."""
        B, T = len(spans), spans[0].n_inputs  # longest first, so spans[0] sets the padded length
        # Pad id 0 is arbitrary: right padding never reaches a real position under the causal mask.
        ids = np.zeros((B, T), dtype=np.int64)  # (B, T)
        rows, cols = [], []
        for r, (doc, s) in enumerate(zip(docs, spans, strict=True)):
            ids[r, : s.n_inputs] = doc[s.start : s.stop - 1]
            # Target t is predicted at local position t - start - 1.
            cols.append(np.arange(s.first_target - s.start - 1, s.n_inputs))
            rows.append(np.full(len(cols[-1]), r))
        hidden = self.model.hidden_states(torch.from_numpy(ids).to(self.device))  # (B, T, H)
        rows_t = torch.from_numpy(np.concatenate(rows)).to(self.device)  # (N,)
        cols_t = torch.from_numpy(np.concatenate(cols)).to(self.device)  # (N,)
        N = rows_t.shape[0]
        ent = torch.empty(N, dtype=torch.float32, device=self.device)  # (N,)
        for c0 in range(0, N, self.chunk_positions):
            c1 = min(c0 + self.chunk_positions, N)
            h = hidden[rows_t[c0:c1], cols_t[c0:c1]]  # (c, H)
            logits = self.model.lm_head(h)  # (c, V) in the compute dtype; only this chunk exists
            ent[c0:c1] = topk_entropy(logits, self.top_k)
        return ent.cpu().numpy()


def score_documents(model: torch.nn.Module, docs: Sequence[Sequence[int]], **options) -> list[np.ndarray]:
    """One-shot ``ProxyScorer(model, **options).score(docs)``.

    Convention: for a document of n tokens the result has n float32 entries; entry ``t`` (t >= 1) is the
    top-k entropy of the proxy's distribution *for* token ``t`` given tokens ``0..t-1`` (i.e. computed
    from the logits at position ``t - 1``), and entry 0 is NaN. High entry t = the proxy found token t
    hard to predict, which is what RPT selects on.
    """
    return ProxyScorer(model, **options).score(docs)


def expected_tokens(lengths: Sequence[int], max_window: int, overlap: int) -> int:
    """Real tokens ``score`` forwards for documents of these lengths (for ETA estimates)."""
    return sum(s.n_inputs for n in lengths for s in window_spans(n, max_window, overlap))


__all__ = [
    "ProxyScorer",
    "ScorerConfigError",
    "Span",
    "entropy_from_logits",
    "expected_tokens",
    "pack_by_length",
    "score_documents",
    "topk_entropy",
    "topk_values",
    "window_spans",
]
