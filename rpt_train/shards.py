"""The RPT shard format: the one definition of the Parquet schema and manifest both packages share.

``rpt_data`` writes shards with ``write_shard``; the trainer and the evaluator read them with
``iter_rows`` (or ``rpt_train.stream`` for shuffled, rank-disjoint, resumable streaming). Users' own tools
can rely on the column names and types below; any incompatible change bumps ``SCHEMA_VERSION``.

Layout of a build directory::

    OUT/manifest.json                       schema version, resolved config, hashes, counts
    OUT/train/train-RRRRR-IIIII.parquet     rank RRRRR, shard index IIIII
    OUT/val/val-RRRRR-IIIII.parquet
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_train.errors import RptError
from rpt_train.io import atomic_path

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")

# One row = one position t of one document: predict the text that follows ``context``.
SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),  # stable id of the source record
        pa.field("position", pa.int32(), nullable=False),  # t: index of the first label token
        pa.field("context", pa.string(), nullable=False),  # document text before token t (valid UTF-8)
        pa.field("label", pa.binary(), nullable=False),  # bytes of tokens t..t+L-1
        pa.field("boundaries", pa.list_(pa.int32()), nullable=False),  # valid prefix lengths of label
        pa.field("entropy", pa.float32(), nullable=False),  # proxy top-k entropy at t, nats
        pa.field("n_context_tokens", pa.int32(), nullable=False),  # == position
        pa.field("token_id", pa.int32(), nullable=False),  # ground-truth token x_t
        pa.field("label_token_ids", pa.list_(pa.int32()), nullable=False),  # x_t..x_{t+L-1}
        pa.field("domain", pa.list_(pa.string()), nullable=True),
        pa.field("difficulty", pa.float32(), nullable=True),
        pa.field("source", pa.string(), nullable=True),
    ],
    metadata={b"rpt.schema_version": str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(SCHEMA.names)

# Row groups small enough that a streaming reader holds a few thousand rows at a time.
ROW_GROUP_SIZE = 1024


def shard_name(split: str, rank: int, index: int) -> str:
    """``train-00000-00003.parquet``: split, writer rank, shard index within that rank."""
    return f"{split}-{rank:05d}-{index:05d}.parquet"


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Build a table in ``SCHEMA`` from row dicts; missing nullable fields become null."""
    columns = {name: [r.get(name) for r in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_shard(path: str | Path, table: pa.Table) -> None:
    """Write one zstd Parquet shard atomically (temp file, then rename)."""
    if table.schema.names != SCHEMA.names:
        raise ValueError(f"table columns {table.schema.names} are not the RPT shard columns {SCHEMA.names}")
    try:
        # Casting normalises what Parquet round trips change (list item names, metadata) so the same rows
        # always write the same bytes; a real type mismatch fails here.
        table = table.cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"table does not match the RPT shard schema: {e}") from None
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)


def check_schema(path: str | Path) -> pa.Schema:
    """Read a shard's schema and refuse files of another schema version."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise RptError(f"{path}: not a readable Parquet shard ({e})") from None
    version = (schema.metadata or {}).get(b"rpt.schema_version", b"?").decode()
    if version != str(SCHEMA_VERSION):
        raise RptError(f"{path}: shard schema version {version}, this rpt reads version {SCHEMA_VERSION}")
    missing = [
        c
        for c in ("doc_id", "position", "context", "label", "boundaries", "entropy")
        if c not in schema.names
    ]
    if missing:
        raise RptError(f"{path}: missing shard columns {missing}")
    return schema


def list_shards(directory: str | Path, split: str | None = None) -> list[Path]:
    """Sorted shard paths of one split directory (``OUT/train``) or of ``OUT/<split>``."""
    directory = Path(directory)
    if split is not None and (directory / split).is_dir():
        directory = directory / split
    if not directory.is_dir():
        return []
    pattern = f"{split}-*.parquet" if split else "*.parquet"
    return sorted(p for p in directory.glob(pattern) if not p.name.startswith("."))


def iter_rows(
    paths: Iterable[str | Path], columns: Sequence[str] | None = None, batch_size: int = ROW_GROUP_SIZE
) -> Iterator[dict[str, Any]]:
    """Stream rows (as dicts) from shards in order, one record batch in memory at a time."""
    for path in paths:
        check_schema(path)
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
            yield from batch.to_pylist()


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The build's ``manifest.json`` (empty dict when the directory has none, e.g. hand-made shards)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RptError(f"{path}: invalid JSON ({e})") from None
