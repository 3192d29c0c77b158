"""The RPT shard format: the one definition of the Parquet schema and the manifest both packages share.

``rpt_data`` writes shards with ``write_shard`` and the ``Manifest`` last; the trainer and the evaluator
find shards with ``shard_paths``, read them with ``iter_rows`` (or ``rpt_core.data.stream`` for shuffled,
rank-disjoint, resumable streaming) and check that they were built with the policy's tokenizer with
``check_tokenizer``. Users' own tools can rely on the column names and types below; any incompatible
change bumps ``SCHEMA_VERSION``.

Layout of a build directory::

    OUT/manifest.json                       schema version, resolved config, hashes, counts
    OUT/train/train-RRRRR-IIIII.parquet     rank RRRRR, shard index IIIII
    OUT/val/val-RRRRR-IIIII.parquet
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.runtime.errors import RptError, first_line
from rpt_core.runtime.files import atomic_path, sha256_file, write_json_atomic
from rpt_core.runtime.progress import Progress

if TYPE_CHECKING:
    from rpt_core.text.tokenizer import Tokenizer

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
        pa.field("n_context_tokens", pa.int32(), nullable=False),  # min(position, max_context_tokens)
        pa.field("token_id", pa.int32(), nullable=False),  # ground-truth token x_t
        pa.field("label_token_ids", pa.list_(pa.int32()), nullable=False),  # x_t..x_{t+L-1}
        pa.field("domain", pa.list_(pa.string()), nullable=True),
        pa.field("difficulty", pa.float32(), nullable=True),
        pa.field("source", pa.string(), nullable=True),
        # Where token t sits (rpt_core.data.corpus.spans: given, computed_op, computed, text); null when the
        # corpus has no spans. Added after version 1 was released: older shards lack it (OPTIONAL_COLUMNS).
        pa.field("span_class", pa.string(), nullable=True),
    ],
    metadata={b"rpt.schema_version": str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(SCHEMA.names)
# Columns a version-1 shard may lack (written before they existed): readers asking for one get nulls.
OPTIONAL_COLUMNS = ("span_class",)

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


def shard_paths(shards_dir: str | Path, split: str, required: bool = True) -> list[Path]:
    """Sorted shards of ``SHARDS/<split>/``, or of ``SHARDS/`` itself when it has no split directories.

    A single ``.parquet`` file is accepted as is; hidden files (atomic-write temps) are never shards.
    With ``required`` an empty result is an ``RptError`` naming what is missing, else ``[]``.
    """
    shards_dir = Path(shards_dir)
    if shards_dir.is_file():
        if shards_dir.suffix != ".parquet":
            raise RptError(f"{shards_dir}: not a .parquet shard or a shard directory")
        return [shards_dir]
    split_dirs = [s for s in SPLITS if (shards_dir / s).is_dir()]
    if (shards_dir / split).is_dir():
        directory = shards_dir / split
    elif split_dirs or not shards_dir.is_dir():
        if not required:
            return []
        if not shards_dir.is_dir():
            raise RptError(f"no {split}/ shards under {shards_dir} (no such directory)")
        raise RptError(f"no {split}/ shards under {shards_dir} (found: {', '.join(split_dirs)})")
    else:
        directory = shards_dir
    paths = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    if not paths and required:
        raise RptError(f"no {split}/ shards under {shards_dir} ({directory} holds no .parquet files)")
    return paths


def corrupt_shard(path: str | Path, e: BaseException, where: str = "") -> RptError:
    """The one-line error for a shard whose data cannot be decoded (its footer may be intact)."""
    return RptError(f"{path}: corrupt Parquet data{where} ({first_line(e)}); rebuild or restore this shard")


def iter_rows(
    paths: Iterable[str | Path], columns: Sequence[str] | None = None, batch_size: int = ROW_GROUP_SIZE
) -> Iterator[dict[str, Any]]:
    """Stream rows (as dicts) from shards in order, one record batch in memory at a time.

    A requested ``OPTIONAL_COLUMNS`` column that an older shard lacks reads as null in every row.
    """
    for path in paths:
        names = check_schema(path).names
        absent = [c for c in columns or () if c in OPTIONAL_COLUMNS and c not in names]
        wanted = [c for c in columns if c not in absent] if columns else None
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=batch_size, columns=wanted)
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as e:
                raise corrupt_shard(path, e) from None
            if batch is None:
                break
            for row in batch.to_pylist():
                yield {**row, **dict.fromkeys(absent)} if absent else row


def find_corrupt(paths: Iterable[str | Path]) -> RptError | None:
    """The error for the first shard whose data does not decode, or None (every row group reads)."""
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
            for g in range(pf.num_row_groups):
                pf.read_row_group(g)
        except (OSError, pa.ArrowException) as e:
            return corrupt_shard(path, e)
    return None


def verify_shards(
    shards_dir: str | Path, paths: Sequence[Path], manifest: Manifest, quiet: bool = False
) -> list[Path]:
    """Check ``paths`` against the sha256 that ``manifest`` records for them; return the unlisted ones.

    A shard whose bytes differ is an ``RptError`` (corrupt or modified since the build), and so is a
    listed shard of the same splits that is missing. A manifest that lists no shards (hand-made
    directories) verifies nothing. Hashing is one pass over the shards, with a progress line when long.
    """
    root = Path(shards_dir)
    listed = {(root / s["path"]).resolve(): s for s in manifest.shards if "path" in s}
    if not listed:
        return []
    splits = {p.resolve().parent.name for p in paths}
    missing = [p for p, s in listed.items() if s.get("split") in splits and not p.is_file()]
    if missing:
        raise RptError(f"{missing[0]} is listed in {root / MANIFEST_NAME} but missing; restore it or rebuild")
    known = [p for p in paths if p.resolve() in listed]
    total = sum(p.stat().st_size for p in known)
    with Progress(total >> 20, unit="MiB", desc="verify shards", quiet=quiet or total < (256 << 20)) as bar:
        for path in known:
            want = listed[path.resolve()].get("sha256")
            if want and sha256_file(path) != want:
                raise RptError(
                    f"{path}: its sha256 differs from the one {root / MANIFEST_NAME} records (corrupt or "
                    "modified since the build); rebuild or restore this shard"
                )
            bar.update(path.stat().st_size >> 20)
    return [p for p in paths if p.resolve() not in listed]


def checked_manifest(
    shards_dir: str | Path, paths: Sequence[Path], warn: Callable[[str], None], quiet: bool = False
) -> Manifest | None:
    """``shards_dir``'s manifest after verifying ``paths`` against it, for a run or an evaluation to use.

    Warns (once, through ``warn``) when there is no manifest (then neither the tokenizer nor the shards'
    checksums can be checked) and when some shards are not listed in it.
    """
    manifest = Manifest.read(shards_dir)
    if manifest is None:
        warn(f"{shards_dir} has no {MANIFEST_NAME}: the shards' tokenizer and checksums cannot be checked")
        return None
    unlisted = verify_shards(shards_dir, paths, manifest, quiet)
    if unlisted:
        warn(
            f"{len(unlisted)} shard(s) are not listed in {Path(shards_dir) / MANIFEST_NAME} and were not "
            f"verified (first: {unlisted[0]})"
        )
    return manifest


@dataclass
class Manifest:
    """``manifest.json`` of a build, written last (its presence marks a complete build).

    Every field but ``schema_version`` has a default so that hand-made shard directories may carry a
    partial manifest (a tokenizer fingerprint alone, say); unknown keys of a newer writer are kept in
    ``extra`` and written back unchanged.
    """

    schema_version: int = SCHEMA_VERSION
    created_by: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the resolved build config
    inputs: list[dict[str, Any]] | None = None  # fingerprint per input (rpt_core.data.corpus.fingerprint)
    tokenizer: str | None = None  # path of the tokenizer.json the build used
    tokenizer_sha256: str | None = None
    tokenizer_fingerprint: str | None = None
    tokenizer_base_vocab_fingerprint: str | None = None  # what check_tokenizer compares
    proxy: dict[str, Any] = field(default_factory=dict)  # id, config and weights hashes, dtype
    top_k: int | None = None
    entropy_threshold: float | None = None
    min_context_tokens: int | None = None
    max_context_tokens: int | None = None  # a row's context holds at most this many tokens (left-truncated)
    max_samples_per_doc: int | None = None
    labels_length: int | None = None
    val_min_entropy: float | None = None
    world_size: int = 1
    counts: dict[str, Any] = field(default_factory=dict)  # documents and positions read/used/skipped
    shards: list[dict[str, Any]] = field(default_factory=list)  # split, rank, index, path, rows, sha256
    val_doc_ids: list[str] | None = None  # the documents held out for validation (a baseline skips them)
    val_content_ids: list[str] | None = None  # their texts' content_id (a baseline skips every copy)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        if not isinstance(d, dict):
            raise RptError(f"{source}: a manifest must be a JSON object")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise RptError(
                f"{source}: shard schema version {version}, this rpt reads version {SCHEMA_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **d}

    @classmethod
    def read(cls, out_dir: str | Path) -> Manifest | None:
        """The build's manifest, or None when the directory has none (e.g. hand-made shards)."""
        path = Path(out_dir) / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except json.JSONDecodeError as e:
            raise RptError(f"{path}: invalid JSON ({e})") from None

    def write(self, out_dir: str | Path) -> None:
        write_json_atomic(Path(out_dir) / MANIFEST_NAME, self.to_dict())


def check_context_cap(manifest: Manifest | None, max_prompt_tokens: int, warn) -> None:
    """Say once when the shards' contexts were capped below ``--max-prompt-tokens`` at build time: prompts
    then hold fewer tokens than the setting allows (the build's cap binds, not this setting)."""
    cap = manifest.max_context_tokens if manifest is not None else None
    if cap is not None and max_prompt_tokens > cap:
        warn(
            f"--max-prompt-tokens {max_prompt_tokens}: the shards' contexts hold at most {cap} tokens "
            "(max_context_tokens of their build); prompts are no longer than that"
        )


def check_tokenizer(manifest: Manifest | None, tokenizer: Tokenizer, who: str = "this tokenizer") -> None:
    """Shards built with another base vocabulary have labels on other token boundaries: refuse them.

    The one compatibility check, used by the trainer and the evaluator. Shards without a manifest (or
    with no fingerprint in it) cannot be checked and pass (``checked_manifest`` warns about them).
    """
    want = manifest.tokenizer_base_vocab_fingerprint if manifest is not None else None
    if want and want != tokenizer.base_vocab_fingerprint:
        raise RptError(
            f"the shards were built with another tokenizer: their base vocab fingerprint is {want[:12]}..., "
            f"{who}'s is {tokenizer.base_vocab_fingerprint[:12]}...; pass the matching tokenizer or rebuild"
        )
