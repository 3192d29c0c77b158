"""Accuracy by span class: the evaluated positions of each entropy bucket regrouped by where they sit.

A row of ``eval.json`` with a ``class`` key covers the positions of its ``bucket`` whose shard rows carry
that ``span_class`` (``rpt_core.data.corpus.spans``: ``given``, ``computed_op``, ``computed``, ``text``): the
same positions, the same verdicts, no new choice, so the class rows of a bucket add up to it (less the
positions without a class, which get no row). The hard bucket's class rows answer the question the
buckets cannot: are the hard positions that RL improved operand digits (irreducibly random) or results
thinking can compute? The intervals and paired differences are the buckets' (``rpt_train.eval.stats``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rpt_core.data.corpus.spans import CLASSES, class_key, ordered_counts
from rpt_train.eval.score import BUCKETS, row_buckets

CLASS_KEY = "class"  # the eval.json key that marks a class row (bucket rows have none)
Group = tuple[str, str | None]  # (bucket, class); class None: the whole bucket


def classes_present(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The classes some evaluated row carries, in report order (none for shards without classes)."""
    found = {r.get("span_class") for r in rows}
    return [c for c in CLASSES if c in found]


def groups(rows: Sequence[dict[str, Any]]) -> list[Group]:
    """Every bucket (as today), then every bucket x present class: the order of eval.json's rows."""
    return [(b, None) for b in BUCKETS] + [(b, c) for b in BUCKETS for c in classes_present(rows)]


def group_verdicts(rows: Sequence[dict[str, Any]], verdicts: Sequence[float]) -> dict[Group, list[float]]:
    """{(bucket, class or None): verdicts of the rows in it}, in row order (so two models pair up)."""
    out: dict[Group, list[float]] = {g: [] for g in groups(rows)}
    for row, v in zip(rows, verdicts, strict=True):
        cls = row.get("span_class")
        for bucket in row_buckets(row):
            out[(bucket, None)].append(float(v))
            if cls in CLASSES:
                out[(bucket, cls)].append(float(v))
    return out


def positions_by_class(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{bucket: {class: positions}} (``none``: positions without a class), for eval_summary.json."""
    counts = {bucket: Counter() for bucket in BUCKETS}
    for r in rows:
        for bucket in row_buckets(r):
            counts[bucket][class_key(r.get("span_class"))] += 1
    return {bucket: ordered_counts(c) for bucket, c in counts.items()}


def bucket_rows(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of eval.json as they were before classes: one per model, mode and bucket."""
    return [r for r in table if CLASS_KEY not in r]
