"""Sample selection for ``rpt-data build``: which documents are held out, which positions become rows.

Pure functions over one document's bytes, token spans and proxy entropies, so tests can hand-check them.

Policy (the choices the build documents in its manifest):

* **Held-out documents.** ``choose_val_docs`` takes the ``k`` distinct contents whose
  ``sha256("{seed}:{content_id}")`` is smallest (``content_id``: a hash of the normalised text, so the
  copies of a document, under other ids, go to the same side) and holds out every document with one of
  them. It depends only on the texts and the seed (not on corpus order or on the proxy), needs one pass
  with a heap of ``k`` entries plus a set of 8-byte digests (to count duplicates: about 100 bytes per
  distinct text in Python), and whole documents go to validation so no validation context ever appears
  in a training row.
* **Eligible positions.** Position ``t`` (1 <= t < n) is eligible when token ``t`` starts on a UTF-8
  character boundary (else it is counted ``split_char``: its context would not be valid text) and the
  proxy scored it (a NaN entropy is counted ``truncated``).
* **Train filters**, in this order (a position is counted under the first filter it fails):
  ``n_context >= min_context_tokens`` (``short_context``; None/0 = off), ``entropy >= entropy_threshold``
  (``below_threshold``; None = off), then at most ``max_samples_per_doc`` rows per document
  (``over_cap``): the highest-entropy positions are kept (ties: the earlier position), emitted in
  position order. Entropy-ranked capping keeps the positions the proxy finds hardest, which is what RPT
  trains on, and is deterministic because the entropies are. ``min_context_tokens`` compares the
  position (the tokens before it in the document), not the stored context, which ``make_rows`` caps at
  ``max_context_tokens`` (left-truncated).
* **Validation filters.** Every eligible position with ``entropy >= VAL_MIN_ENTROPY`` (0.5, the lower
  edge of the evaluation's "easy" bucket) is kept whatever the training threshold, so the evaluation can
  report every bucket. ``min_context_tokens`` does apply: it decides which positions are well-posed
  prediction problems at all, for evaluation as much as for training. The per-document cap does not
  apply (validation is already limited to ``val_docs`` whole documents).

Entropies are compared as the float32 values stored in the shard (widened to float64), so a reader that
re-applies a threshold to the ``entropy`` column gets exactly the same rows.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rpt_core.data.corpus.documents import Document
from rpt_core.data.corpus.spans import byte_spans, token_class

VAL_MIN_ENTROPY = 0.5
Span = tuple[int, int]


def val_key(seed: int, key: str) -> bytes:
    """The sort key that decides held-out documents: ``sha256("{seed}:{content_id}")``."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8", errors="surrogatepass")).digest()


@dataclass(frozen=True)
class ValChoice:
    """The held-out contents, every document that has one (copies included) and the corpus's duplicates."""

    content_ids: frozenset[str] = frozenset()
    doc_ids: frozenset[str] = frozenset()
    documents: int = 0
    duplicates: int = 0  # documents whose content an earlier document already had


def choose_val_docs(docs: Iterable[tuple[str, str]], k: int, seed: int) -> ValChoice:
    """Hold out the ``k`` distinct contents with the smallest ``val_key`` from ``(doc_id, content_id)``
    pairs (all of them when there are fewer), with every document that has one of them."""
    seen: set[bytes] = set()
    heap: list[tuple[bytes, str]] = []  # a max-heap of the k smallest keys: (inverted key, content)
    ids: dict[str, list[str]] = {}  # the doc ids of the contents in the heap
    n = duplicates = 0
    for doc_id, content in docs:
        n += 1
        short = bytes.fromhex(content[:16])
        if short in seen:
            duplicates += 1
            if content in ids:  # a copy of a content still in the heap; a dropped one never returns
                ids[content].append(doc_id)
            continue
        seen.add(short)
        if k <= 0:
            continue
        entry = (bytes(255 - b for b in val_key(seed, content)), content)
        if len(heap) < k:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:  # a smaller key than the largest kept (the content breaks ties)
            del ids[heapq.heapreplace(heap, entry)[1]]
        else:
            continue
        ids[content] = [doc_id]
    doc_ids = frozenset(d for group in ids.values() for d in group)
    return ValChoice(frozenset(ids), doc_ids, n, duplicates)


def stored_entropies(entropies: Sequence[float] | np.ndarray) -> np.ndarray:
    """Entropies rounded to the float32 the shard stores, as float64 for comparisons."""
    return np.asarray(entropies, dtype=np.float32).astype(np.float64)


def eligible_positions(
    data: bytes, spans: Sequence[Span], entropies: np.ndarray
) -> tuple[np.ndarray, Counter]:
    """Positions t >= 1 whose token starts a character and has a finite entropy; counts of the others.

    ``data`` is the normalized document's UTF-8 bytes, ``spans`` each token's byte span in it and
    ``entropies`` one value per token (entry 0 is never used).
    """
    n = len(spans)
    if len(entropies) != n:
        raise ValueError(f"{len(entropies)} entropies for {n} tokens")
    if n < 2:
        return np.zeros(0, dtype=np.int64), Counter()
    starts = np.fromiter((s for s, _ in spans[1:]), dtype=np.int64, count=n - 1)  # (n-1,)
    raw = np.frombuffer(data, dtype=np.uint8)
    at_char = (raw[starts] & 0xC0) != 0x80  # a UTF-8 continuation byte is 10xxxxxx
    finite = np.isfinite(entropies[1:])
    positions = np.arange(1, n, dtype=np.int64)
    skipped = Counter({"split_char": int((~at_char).sum()), "truncated": int((at_char & ~finite).sum())})
    return positions[at_char & finite], +skipped


def _threshold(
    positions: np.ndarray, entropies: np.ndarray, min_entropy: float | None, min_context: int | None
) -> tuple[np.ndarray, Counter]:
    skipped: Counter = Counter()
    if min_context:
        keep = positions >= min_context  # n_context_tokens == position
        skipped["short_context"] = int((~keep).sum())
        positions = positions[keep]
    if min_entropy is not None:
        keep = entropies[positions] >= min_entropy
        skipped["below_threshold"] = int((~keep).sum())
        positions = positions[keep]
    return positions, +skipped


def cap_positions(positions: np.ndarray, entropies: np.ndarray, cap: int | None) -> np.ndarray:
    """At most ``cap`` positions: the highest entropies (ties: earlier position), in position order."""
    if cap is None or len(positions) <= cap:
        return positions
    order = np.lexsort((positions, -entropies[positions]))  # last key is primary: entropy descending
    return np.sort(positions[order[:cap]])


def select_train(
    positions: np.ndarray,
    entropies: np.ndarray,
    entropy_threshold: float | None,
    min_context_tokens: int | None,
    max_samples_per_doc: int | None,
) -> tuple[np.ndarray, Counter]:
    """Training positions of one document (see the module docstring for the order of the filters)."""
    kept, skipped = _threshold(positions, entropies, entropy_threshold, min_context_tokens)
    capped = cap_positions(kept, entropies, max_samples_per_doc)
    if len(capped) < len(kept):
        skipped["over_cap"] += len(kept) - len(capped)
    return capped, skipped


def select_val(
    positions: np.ndarray, entropies: np.ndarray, min_context_tokens: int | None
) -> tuple[np.ndarray, Counter]:
    """Validation positions of one held-out document: entropy >= 0.5 and the context minimum."""
    return _threshold(positions, entropies, VAL_MIN_ENTROPY, min_context_tokens)


@dataclass(frozen=True)
class SelectionRule:
    """The build's filter settings (``None`` = filter off)."""

    entropy_threshold: float | None = None
    min_context_tokens: int | None = None
    max_samples_per_doc: int | None = None


def _train(positions: np.ndarray, entropies: np.ndarray, rule: SelectionRule) -> tuple[np.ndarray, Counter]:
    return select_train(
        positions, entropies, rule.entropy_threshold, rule.min_context_tokens, rule.max_samples_per_doc
    )


def _val(positions: np.ndarray, entropies: np.ndarray, rule: SelectionRule) -> tuple[np.ndarray, Counter]:
    return select_val(positions, entropies, rule.min_context_tokens)


SELECTORS = {"train": _train, "val": _val}


def select_positions(
    split: str, positions: np.ndarray, entropies: np.ndarray, rule: SelectionRule
) -> tuple[np.ndarray, Counter]:
    """The positions of one document that become rows of ``split``, and counts of the filtered ones."""
    return SELECTORS[split](positions, entropies, rule)


def make_rows(
    doc: Document,
    data: bytes,
    ids: Sequence[int],
    spans: Sequence[Span],
    entropies: np.ndarray,
    positions: Iterable[int],
    labels_length: int,
    max_context_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Shard rows (``rpt_core.data.shards.SCHEMA``) for the chosen positions of one document.

    ``context`` is the text of the (at most ``max_context_tokens``) tokens before token t, left-truncated
    at a character boundary, so a row's size is bounded whatever the document's length (whole contexts
    made a document's rows quadratic in it); ``n_context_tokens`` counts them. ``label`` holds the bytes
    of tokens t..t+L-1 (fewer at the end of the document) and ``boundaries`` the byte length of every
    token-boundary prefix of ``label``.
    ``span_class`` is the class of token t (``rpt_core.data.corpus.spans.token_class``), null when the
    document has no spans.
    """
    n = len(ids)
    domain = list(doc.domain) if doc.domain is not None else None
    classes = class_spans(doc, data)
    rows = []
    for t in positions:
        t = int(t)
        start = spans[t][0]
        first = max(0, t - max_context_tokens) if max_context_tokens else 0
        begin = spans[first][0] if first else 0
        while begin < start and data[begin] & 0xC0 == 0x80:  # a token may start mid-character
            begin += 1
        stop = min(t + labels_length, n)
        cls = token_class(start, spans[t][1], classes) if classes is not None else None
        rows.append(
            {
                "doc_id": doc.doc_id,
                "position": t,
                "context": data[begin:start].decode("utf-8"),
                "label": data[start : spans[stop - 1][1]],
                "boundaries": [spans[j][1] - start for j in range(t, stop)],
                "entropy": float(entropies[t]),
                "n_context_tokens": t - first,
                "token_id": int(ids[t]),
                "label_token_ids": [int(i) for i in ids[t:stop]],
                "domain": domain,
                "difficulty": doc.difficulty,
                "source": doc.source,
                "span_class": cls,
            }
        )
    return rows


def class_spans(doc: Document, data: bytes) -> list[tuple[int, int, str]] | None:
    """The document's class spans in bytes of ``data`` (its text as tokenized), or None without spans.

    A tokenizer whose normalizer changed the text (NFC, lowercasing...) moved the characters the spans
    point at, so such a document's rows get no class rather than a wrong one.
    """
    if doc.spans is None or data != doc.text.encode("utf-8"):
        return None
    return byte_spans(doc.text, doc.spans)
