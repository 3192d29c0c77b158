"""Streaming corpus readers: a Hugging Face dataset id or local .jsonl/.json/.parquet files -> Documents.

Memory stays bounded by one record (jsonl, JSON arrays) or one record batch (Parquet), never by corpus
size. Every record read is either yielded or counted under a named skip reason in ``ReadStats``
(``documents_read == documents_yielded + sum(skipped.values())``); optional metadata of the wrong type is
nulled and counted in ``coerced`` instead (the document is kept). A file without records is counted in
``files_skipped["empty_file"]`` (it is not a record, so it stays out of the invariant above).

Input resolution (``resolve_inputs``): an existing path or a glob that matches is local (a directory means
every .jsonl/.json/.parquet file under it, recursively, sorted); a string with a known file suffix that
matches nothing, or that looks like a path, is an ``RptError``; anything else is a Hub dataset id.

Doc ids are ``<key>:<n>``: for a local file the key is its path relative to the input that named it,
without suffix (``champ`` for ``data/champ.jsonl``, ``sub/part1`` inside a directory input) and ``n`` is the
1-based line of a jsonl / JSON-lines file or the 0-based record index of a JSON array or Parquet file;
keys that collide get enough leading path components to be unique. For the Hub it is
``<dataset id>:<split>:<index>``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.data.corpus.documents import (
    DEFAULT_TEMPLATE,
    OPTIONAL_FIELDS,
    Document,
    FieldProblem,
    record_to_document,
    template_fields,
)
from rpt_core.data.corpus.inputs import DEFAULT_DATASET, DEFAULT_SPLIT, HubDataset, Source, resolve_inputs
from rpt_core.data.corpus.records import Skip, is_json_array, iter_raw
from rpt_core.data.corpus.spans import SPANS_FIELD
from rpt_core.runtime.errors import RptError

_COUNTERS = ("skipped", "coerced", "files_skipped")


@dataclass
class ReadStats:
    """Counts for one read; ``warnings`` holds at most ``max_warnings`` lines plus one suppression line."""

    files_read: int = 0
    documents_read: int = 0
    documents_yielded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    coerced: Counter[str] = field(default_factory=Counter)
    files_skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    warnings_suppressed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts (for a build manifest)."""
        counts = {k: getattr(self, k) for k in ("files_read", "documents_read", "documents_yielded")}
        return counts | {k: dict(sorted(getattr(self, k).items())) for k in _COUNTERS}

    def summary(self) -> str:
        """One line: ``270 documents from 1 file (272 read; skipped: malformed_json=2)``."""
        line = (
            f"{self.documents_yielded} documents from {self.files_read} file(s) ({self.documents_read} read"
        )
        for name in _COUNTERS:
            if counts := getattr(self, name):
                line += f"; {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        return line + ")"


# ---- documents ----------------------------------------------------------------------------------------


class _Reporter:
    """Counts problems, emits bounded warnings, raises in strict mode."""

    def __init__(self, stats: ReadStats, strict: bool, max_warnings: int, warn: Callable[[str], None]):
        self.stats, self.strict, self.max_warnings, self.warn = stats, strict, max_warnings, warn
        self.emitted = 0

    def problem(self, locator: str, reason: str, note: str = "") -> None:
        if self.strict:
            raise RptError(f"{locator}: {reason}{note} (strict mode stops at the first bad record)")
        if self.emitted < self.max_warnings:
            self._emit(f"{locator}: {reason}{note}")
        else:
            if self.stats.warnings_suppressed == 0:
                self._emit("... further warnings suppressed (the summary counts every skip)")
            self.stats.warnings_suppressed += 1
        self.emitted += 1

    def _emit(self, line: str) -> None:
        self.stats.warnings.append(line)
        self.warn(line)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def iter_documents(
    inputs: str | Sequence[str] = DEFAULT_DATASET,
    template: str = DEFAULT_TEMPLATE,
    split: str = DEFAULT_SPLIT,
    stats: ReadStats | None = None,
    strict: bool = False,
    max_warnings: int = 20,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Document]:
    """Stream documents from ``inputs``; inputs and template are checked now, records while iterating.

    Bad records are skipped and counted in ``stats`` with one warning line each (``file:line: reason``,
    sent to ``warn``, default stderr) up to ``max_warnings``; ``strict`` raises ``RptError`` at the first
    bad record, coerced field or empty file instead.
    """
    fields = template_fields(template)
    sources = resolve_inputs(inputs, split)
    stats = stats if stats is not None else ReadStats()
    reporter = _Reporter(stats, strict, max_warnings, warn or _stderr)
    wanted = list(dict.fromkeys([*fields, *OPTIONAL_FIELDS, SPANS_FIELD]))
    return _generate(sources, template, wanted, stats, reporter)


def _generate(
    sources: list[Source], template: str, wanted: list[str], stats: ReadStats, reporter: _Reporter
) -> Iterator[Document]:
    for source in sources:
        stats.files_read += 1
        n_records = 0
        for locator, suffix, record in iter_raw(source, wanted):
            n_records += 1
            stats.documents_read += 1
            try:
                if isinstance(record, Skip):
                    raise FieldProblem(record.reason)
                doc, coerced = record_to_document(record, f"{source.key}:{suffix}", template)
            except FieldProblem as p:
                stats.skipped[p.reason] += 1
                reporter.problem(locator, p.reason)
                continue
            for name in coerced:
                stats.coerced[f"coerced:{name}"] += 1
                reporter.problem(locator, f"coerced:{name}", " (wrong type, set to null)")
            stats.documents_yielded += 1
            yield doc
        if n_records == 0:
            stats.files_skipped["empty_file"] += 1
            reporter.problem(source.label, "empty_file")


def count_documents(inputs: str | Sequence[str], split: str = DEFAULT_SPLIT) -> int | None:
    """Records the inputs hold (an upper bound on documents yielded), or None when not cheap to know.

    Counts non-blank lines of JSON-lines files and Parquet metadata rows; JSON arrays and Hub datasets
    would need a full parse or a download, so their presence makes the total unknown.
    """
    total = 0
    for source in resolve_inputs(inputs, split):
        if isinstance(source, HubDataset):
            return None
        if is_json_array(source.path):
            return None
        if source.path.suffix.lower() == ".parquet":
            try:
                total += pq.ParquetFile(source.path).metadata.num_rows
            except (OSError, pa.ArrowException) as e:
                raise RptError(f"{source.path}: not a readable Parquet file ({e})") from None
            continue
        with open(source.path, "rb") as f:
            total += sum(1 for line in f if line.strip())
    return total
