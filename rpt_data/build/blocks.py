"""One block of ``rpt-data build``: documents -> token ids -> proxy entropies -> selected rows.

``process_block`` is the build's unit of work and of determinism: a block is tokenized and scored with
one ``ProxyScorer.score`` call, so the proxy's batches (and its numbers) depend only on the block, never
on which rank or run processes it. The orchestration around it (ranks, resume, manifest) is
``rpt_data.build.pipeline``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rpt_core.data.corpus.documents import Document, content_id
from rpt_core.data.corpus.spans import class_key
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_data.build.entropy import ProxyScorer
from rpt_data.build.positions import (
    SelectionRule,
    eligible_positions,
    make_rows,
    select_positions,
    stored_entropies,
)
from rpt_data.build.sink import Counts

ROW_CHUNK = 1024  # rows built (as Python dicts) at a time


def blocks(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """Consecutive blocks of ``size`` documents in corpus order (the last one may be shorter): block ``b``
    holds the same documents whatever the world size, which is what lets rank r take ``b % world == r``."""
    it = iter(docs)
    while block := list(itertools.islice(it, size)):
        yield block


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[tuple[list[int], list] | None]:
    """Token ids and byte spans per text; None for a text the tokenizer cannot represent byte-exactly."""
    try:
        return list(tokenizer.encode_batch_with_spans(texts))
    except (RptError, RuntimeError):
        pass  # find the culprit(s) one by one; the others keep their (identical) encodings
    out: list[tuple[list[int], list] | None] = []
    for text in texts:
        try:
            out.append(tokenizer.encode_with_spans(text))
        except (RptError, RuntimeError):
            out.append(None)
    return out


def process_block(
    docs: list[Document],
    tokenizer: Tokenizer,
    scorer: ProxyScorer,
    val_ids: frozenset[str],  # held-out content ids (``content_id``)
    rule: SelectionRule,
    labels_length: int,
    emit: Callable[[str, list[dict[str, Any]]], None],
    on_batch: Callable[[int], None] | None = None,
    max_context_tokens: int | None = None,
) -> Counts:
    """Tokenize a block, score it with one proxy call, select positions and ``emit(split, rows)``.

    Rows go out ``ROW_CHUNK`` at a time, each holding at most ``max_context_tokens`` context tokens, so a
    long document's rows take memory linear in its length and are never all materialised at once.
    """
    counts = Counts()
    usable = []
    for doc, enc in zip(docs, _encode(tokenizer, [d.text for d in docs]), strict=True):
        if enc is None:
            counts.documents_skipped["untokenizable"] += 1
        elif len(enc[0]) < 2:
            counts.documents_skipped["too_short"] += 1  # no position t >= 1 to predict
        else:
            usable.append((doc, *enc))
    entropies = scorer.score([ids for _, ids, _ in usable], on_batch) if usable else []
    for (doc, ids, spans), ent in zip(usable, entropies, strict=True):
        counts.tokens_scored += len(ids)
        data = tokenizer.normalize(doc.text).encode("utf-8")
        ent = stored_entropies(ent)
        eligible, skipped = eligible_positions(data, spans, ent)
        split = "val" if content_id(doc.text) in val_ids else "train"  # copies land on one side
        kept, filtered = select_positions(split, eligible, ent, rule)
        counts.positions_skipped.update(skipped + filtered)
        counts.positions_scored[split] += len(eligible)
        if len(kept) == 0:
            counts.documents_skipped["no_positions"] += 1
            continue
        counts.documents_used += 1
        counts.positions_kept[split] += len(kept)
        for i in range(0, len(kept), ROW_CHUNK):
            chunk = kept[i : i + ROW_CHUNK]
            rows = make_rows(doc, data, ids, spans, ent, chunk, labels_length, max_context_tokens)
            counts.kept_by_class.update((split, class_key(r["span_class"])) for r in rows)
            emit(split, rows)
    return counts
