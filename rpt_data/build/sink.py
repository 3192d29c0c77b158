"""Shard writing and resumable state for ``rpt-data build``: one ``ShardSink`` per rank, and OUT's checks.

Rows arrive block by block (``add``) and are buffered per split as Arrow tables; every ``rows_per_shard``
rows become one shard ``OUT/<split>/<split>-RRRRR-IIIII.parquet``. ``checkpoint`` records, atomically,
everything through the last finished block: the shards written so far, the counters, and the rows still
buffered (spilled to ``OUT/.state/rank-RRRRR.pending-SEQ-<split>.parquet``). A restarted rank loads that
state, refills its buffers from the spill files and re-processes only the blocks after it, so its shards
come out byte-identical to an uninterrupted run's (a shard written after the last checkpoint is simply
written again with the same bytes).

``prepare_out`` runs first: it compares OUT's recorded config (``OUT/.state/config.json``, else the
manifest's) and input fingerprints (``OUT/.state/inputs.json``, else the manifest's ``inputs``) with this
build's, refuses a mismatch unless ``overwrite`` (which removes only the entries a build owns:
``manifest.json``, ``.state``, ``train``, ``val``) and reports a complete build. ``discard_if_empty``
removes the state of a build that failed before any rank recorded progress, so a failed first attempt
leaves OUT as it found it; each rank also deletes what a killed run of it left behind (``remove_leftovers``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.data.corpus.fingerprint import input_changes
from rpt_core.data.corpus.spans import ordered_counts
from rpt_core.data.shards import (
    MANIFEST_NAME,
    SCHEMA,
    SPLITS,
    Manifest,
    rows_to_table,
    shard_name,
    write_shard,
)
from rpt_core.runtime import distributed as D
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import sha256_file, write_json_atomic

STATE_DIR = ".state"
INPUTS_NAME = "inputs.json"
ARROW_CHUNK = 4096  # row dicts gathered before one conversion to an Arrow table


def state_path(out: Path, rank: int) -> Path:
    return out / STATE_DIR / f"rank-{rank:05d}.json"


@dataclass
class Counts:
    """Per-rank build counters; ranks' counts add up to the manifest's ``counts``."""

    documents_used: int = 0
    documents_skipped: Counter = field(default_factory=Counter)
    positions_scored: Counter = field(default_factory=Counter)  # by split
    positions_kept: Counter = field(default_factory=Counter)  # by split
    positions_skipped: Counter = field(default_factory=Counter)  # by reason
    tokens_scored: int = 0
    kept_by_class: Counter = field(default_factory=Counter)  # by (split, span class or "none")

    def add(self, other: Counts) -> None:
        self.documents_used += other.documents_used
        self.tokens_scored += other.tokens_scored
        for name in (
            "documents_skipped",
            "positions_scored",
            "positions_kept",
            "positions_skipped",
            "kept_by_class",
        ):
            getattr(self, name).update(getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        splits = lambda c: {s: int(c.get(s, 0)) for s in SPLITS}
        return {
            "documents_used": self.documents_used,
            "documents_skipped": dict(sorted((k, v) for k, v in self.documents_skipped.items() if v)),
            "positions_scored": splits(self.positions_scored),
            "positions_kept": splits(self.positions_kept),
            "positions_skipped": dict(sorted((k, v) for k, v in self.positions_skipped.items() if v)),
            "tokens_scored": self.tokens_scored,
            "positions_kept_by_class": {
                s: ordered_counts({c: n for (split, c), n in self.kept_by_class.items() if split == s})
                for s in SPLITS
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counts:
        return cls(
            documents_used=d["documents_used"],
            documents_skipped=Counter(d["documents_skipped"]),
            positions_scored=Counter(d["positions_scored"]),
            positions_kept=Counter(d["positions_kept"]),
            positions_skipped=Counter(d["positions_skipped"]),
            tokens_scored=d["tokens_scored"],
            # A state written before classes were counted has none (its rows are missing from them).
            kept_by_class=Counter(
                {(s, c): n for s, by in d.get("positions_kept_by_class", {}).items() for c, n in by.items()}
            ),
        )


@dataclass
class RankState:
    """What one rank has finished: blocks before ``next_block``, ``shards``, and the spilled buffers."""

    rank: int
    next_block: int = 0
    seq: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)  # split -> spill file name in .state
    counts: Counts = field(default_factory=Counts)
    reader: dict[str, Any] | None = None  # ReadStats.as_dict() of the full read, once done
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "next_block": self.next_block,
            "seq": self.seq,
            "shards": self.shards,
            "pending": self.pending,
            "counts": self.counts.to_dict(),
            "reader": self.reader,
            "done": self.done,
        }

    @classmethod
    def load(cls, out: Path, rank: int) -> RankState | None:
        path = state_path(out, rank)
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                rank=d["rank"],
                next_block=d["next_block"],
                seq=d["seq"],
                shards=d["shards"],
                pending=d["pending"],
                counts=Counts.from_dict(d["counts"]),
                reader=d["reader"],
                done=d["done"],
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise RptError(f"{path}: unreadable build state ({e}); rerun with --overwrite") from None


class ShardSink:
    """Buffers one rank's rows per split, writes full shards, checkpoints its ``RankState``."""

    def __init__(self, out: Path, rank: int, rows_per_shard: int, state: RankState):
        self.out, self.rank, self.rows_per_shard, self.state = out, rank, rows_per_shard, state
        self.buffers: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self.rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}  # not yet converted to Arrow
        self.buffered = {s: 0 for s in SPLITS}  # rows in buffers + rows
        self.flushed = False  # a shard was written since the last checkpoint
        for split, name in state.pending.items():
            path = out / STATE_DIR / name
            try:
                # Parquet names list children "element"; cast back to SCHEMA's "item" for identical bytes.
                table = pq.read_table(path).cast(SCHEMA)
            except (OSError, pa.ArrowException) as e:
                raise RptError(f"{path}: unreadable pending rows ({e}); rerun with --overwrite") from None
            self._append(split, table)

    def _append(self, split: str, table: pa.Table) -> None:
        if table.num_rows:
            self.buffers[split].append(table)
            self.buffered[split] += table.num_rows

    def _convert(self, split: str) -> None:
        if self.rows[split]:
            table = rows_to_table(self.rows[split])
            self.rows[split] = []
            self.buffered[split] -= table.num_rows
            self._append(split, table)

    def add(self, split: str, rows: list[dict[str, Any]]) -> None:
        """Buffer ``rows`` of ``split``; write a shard each time ``rows_per_shard`` rows are waiting."""
        self.rows[split].extend(rows)
        self.buffered[split] += len(rows)
        # Converting a few thousand rows at once is much cheaper than many small tables.
        if len(self.rows[split]) >= ARROW_CHUNK or self.buffered[split] >= self.rows_per_shard:
            self._convert(split)
        while self.buffered[split] >= self.rows_per_shard:
            self._write(split, self.rows_per_shard)

    def finish(self) -> None:
        """Write what is left in the buffers as each split's last (short) shard."""
        for split in SPLITS:
            if self.buffered[split]:
                self._write(split, self.buffered[split])

    def _write(self, split: str, n: int) -> None:
        self._convert(split)
        table = pa.concat_tables(self.buffers[split]).combine_chunks()
        index = sum(1 for s in self.state.shards if s["split"] == split)
        rel = Path(split) / shard_name(split, self.rank, index)
        write_shard(self.out / rel, table.slice(0, n))
        rest = table.slice(n)
        self.buffers[split] = [rest] if rest.num_rows else []
        self.buffered[split] = rest.num_rows
        self.state.shards.append(
            {
                "path": rel.as_posix(),
                "split": split,
                "rank": self.rank,
                "index": index,
                "rows": n,
                "sha256": sha256_file(self.out / rel),
            }
        )
        self.flushed = True

    def checkpoint(self) -> None:
        """Spill the buffers, then atomically replace the state file, then drop the previous spills."""
        state_dir = self.out / STATE_DIR
        old = set(self.state.pending.values())
        self.state.seq += 1
        pending = {}
        for split in SPLITS:
            self._convert(split)
            if self.buffered[split]:
                name = f"rank-{self.rank:05d}.pending-{self.state.seq:06d}-{split}.parquet"
                write_shard(state_dir / name, pa.concat_tables(self.buffers[split]))
                pending[split] = name
        self.state.pending = pending
        write_json_atomic(state_path(self.out, self.rank), self.state.to_dict())
        for name in old - set(pending.values()):
            (state_dir / name).unlink(missing_ok=True)
        self.flushed = False


def _existing_inputs(out: Path) -> list[dict[str, Any]] | None:
    """Input fingerprints recorded by the build in OUT (None when it predates them)."""
    path = out / STATE_DIR / INPUTS_NAME
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RptError(f"{path}: invalid JSON ({e}); rerun with --overwrite") from None
    manifest = Manifest.read(out)
    return manifest.inputs if manifest is not None and manifest.inputs is not None else None


def check_inputs(out: Path, inputs: list[dict[str, Any]], complete: bool) -> None:
    """Refuse to continue (or to call complete) a build whose inputs changed since it started."""
    recorded = _existing_inputs(out)
    if recorded is None:
        print(
            f"note: {out} records no input fingerprints (an older build): cannot tell whether the "
            "inputs changed since it started",
            file=sys.stderr,
        )
        return
    changes = input_changes(recorded, inputs)
    if changes:
        when = "completed" if complete else "started"
        raise RptError(
            f"{out}: the input {changes[0]} since this build {when}"
            f"{f' (and {len(changes) - 1} more)' if len(changes) > 1 else ''}; "
            "rerun with --overwrite to rebuild"
        )


def _existing_identity(out: Path) -> dict[str, Any] | None:
    for path, key in ((out / STATE_DIR / "config.json", None), (out / MANIFEST_NAME, "config")):
        if path.is_file():
            try:
                d = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise RptError(f"{path}: invalid JSON ({e}); rerun with --overwrite") from None
            return {**d[key], "world_size": d["world_size"]} if key else d
    return None


def _owned_entries(out: Path) -> list[Path]:
    return [p for p in (out / MANIFEST_NAME, out / STATE_DIR, *(out / s for s in SPLITS)) if p.exists()]


def _holds_files(entry: Path) -> bool:
    """An owned entry with more in it than temp files (``.NAME.*.tmp``) of atomic writes cut short."""
    return entry.is_file() or any(p.is_file() and not p.name.startswith(".") for p in entry.rglob("*"))


def remove_leftovers(out: Path, rank: int, state: RankState | None) -> None:
    """Delete what a killed run of ``rank`` left behind: temp files of writes cut short (atomic writes
    commit by rename, so they are never read) and spill files its state does not name (a kill between
    writing the state and deleting the previous spills, or between writing spills and the state)."""
    keep = set(state.pending.values()) if state is not None else set()
    state_dir = out / STATE_DIR
    found = [*state_dir.glob(f"rank-{rank:05d}.pending-*"), *state_dir.glob(f".rank-{rank:05d}.*.tmp")]
    found += [p for s in SPLITS for p in (out / s).glob(f".{s}-{rank:05d}-*.tmp")]
    if rank == 0:  # rank 0 alone writes the config and the manifest
        found += [*state_dir.glob(".config.json.*.tmp"), *out.glob(f".{MANIFEST_NAME}.*.tmp")]
    for p in found:
        if p.name not in keep:
            p.unlink(missing_ok=True)


def prepare_out(
    out: Path, identity: dict[str, Any], inputs: list[dict[str, Any]], overwrite: bool, dist: D.DistInfo
) -> tuple[bool, int]:
    """Refuse an OUT built with another config or from other inputs, clear it on ``overwrite``.

    Returns whether OUT already holds the complete build, and the tokens its rank states have scored.
    """
    if out.exists() and not out.is_dir():
        raise RptError(f"--out {out} exists and is not a directory")
    if overwrite:
        if dist.rank == 0:
            for p in _owned_entries(out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    else:
        existing = _existing_identity(out)
        if existing is None and any(_holds_files(p) for p in _owned_entries(out)):
            raise RptError(f"{out} holds shards but no build state; use --overwrite to start afresh")
        if existing is not None and existing != identity:
            keys = sorted(k for k in existing.keys() | identity.keys() if existing.get(k) != identity.get(k))
            diff = ", ".join(f"{k}: {existing.get(k)!r} -> {identity.get(k)!r}" for k in keys)
            raise RptError(f"{out} holds a build with a different config ({diff}); use --overwrite")
        complete = existing is not None and (out / MANIFEST_NAME).is_file()
        if existing is not None:
            D.on_main_rank(lambda: check_inputs(out, inputs, complete))
        if complete:
            return True, 0
    D.barrier()
    if dist.rank == 0:
        write_json_atomic(out / STATE_DIR / "config.json", identity)
        write_json_atomic(out / STATE_DIR / INPUTS_NAME, inputs)
    # Read before the barrier that lets the ranks start, so no rank has checkpointed this run yet.
    states = [RankState.load(out, r) for r in range(dist.world_size)]
    remove_leftovers(out, dist.rank, states[dist.rank])
    D.barrier()
    return False, sum(s.counts.tokens_scored for s in states if s is not None)


def discard_if_empty(out: Path) -> None:
    """After a failed build: remove ``.state`` when it holds no rank's progress (only the config and input
    records this attempt wrote), so OUT does not look like a build that was started."""
    state_dir = out / STATE_DIR
    if not state_dir.is_dir() or any(state_dir.glob("rank-*")) or any((out / s).exists() for s in SPLITS):
        return
    for name in ("config.json", INPUTS_NAME):
        (state_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state_dir.rmdir()
