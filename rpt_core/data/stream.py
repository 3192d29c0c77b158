"""Streaming RPT shards for training: lazy, shuffled, rank-disjoint, multi-epoch and exactly resumable.

The unit of work is one Parquet row group ("unit"). Units are numbered in file order and unit ``u`` belongs
to rank ``u % world_size`` for every epoch, so ranks never read the same row. Each epoch a rank visits its
units in an order permuted with (seed, epoch), reads them one record batch at a time, and passes the rows
through a shuffle buffer (reservoir-style: once full, each arriving row evicts a random buffered row). The
buffer is drained at the end of each epoch, so every row is yielded exactly once per epoch and epochs never
mix.

Exact resume without replaying the data: the buffer's random choices depend only on how many rows have
arrived, never on their content. So the shuffle runs on *arrival indices* (position of a row in this
epoch's unit order) and rows are attached to indices as they are decoded. To resume, the index-level
shuffle is replayed up to the saved position (integer work only, 1-3 s per million rows), then only the row
groups that still have rows in the buffer are decoded, and reading continues at the next arrival. Whole
epochs are skipped arithmetically.

The state is just ``rows_yielded`` (plus a fingerprint of the shards), so it is the same on every rank when
ranks consume equal numbers of rows per step (the usual per-rank batch): rank 0's state resumes them all.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.data.shards import check_schema, corrupt_shard
from rpt_core.runtime.errors import RptError

STATE_VERSION = 1
_BATCH_ROWS = 1024  # decode granularity inside a row group; bounds memory for files with huge row groups


def _rng(*parts: Any) -> random.Random:
    """A generator seeded from ``parts`` independently of PYTHONHASHSEED and Python version."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


class BufferShuffle:
    """The shuffle buffer over arrival indices: ``push`` returns the index to emit (or None while filling).

    With ``size <= 1`` rows pass straight through. Pure integer logic, shared by reading and fast-forward.
    """

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng = size, rng
        self.buffer: list[int] = []

    def push(self, index: int) -> int | None:
        if self.size <= 1:
            return index
        if len(self.buffer) < self.size:
            self.buffer.append(index)
            return None
        j = int(self.rng.random() * self.size)  # 2x faster than randrange; the bias (< 2^-40) is irrelevant
        out, self.buffer[j] = self.buffer[j], index
        return out

    def pop(self) -> int:
        """Emit one buffered index at random (used to drain at the end of an epoch)."""
        j = int(self.rng.random() * len(self.buffer))
        self.buffer[j], self.buffer[-1] = self.buffer[-1], self.buffer[j]
        return self.buffer.pop()


@dataclass(frozen=True)
class _Unit:
    file: int  # index into paths
    row_group: int
    rows: int


class ShardStream:
    """Iterate row dicts of RPT shards; infinite when ``epochs`` is None.

    One iterator at a time: ``iter()`` continues from the current position (``rows_yielded``), so
    ``state_dict()`` taken after receiving row n resumes with row n+1.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        seed: int = 0,
        shuffle_buffer: int = 4096,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        columns: Sequence[str] | None = None,
    ):
        if not paths:
            raise RptError("no shards to stream")
        if world_size < 1 or not 0 <= rank < world_size:
            raise RptError(f"invalid rank {rank} for world size {world_size}")
        if epochs is not None and epochs < 1:
            raise RptError(f"epochs must be >= 1 (got {epochs})")
        self.paths = [Path(p) for p in paths]
        self.seed, self.shuffle_buffer, self.rank, self.world_size = seed, shuffle_buffer, rank, world_size
        self.epochs = epochs
        self.columns = list(columns) if columns else None
        self._metadata = []
        units: list[_Unit] = []
        for i, path in enumerate(self.paths):
            schema = check_schema(path)
            missing = [c for c in self.columns or () if c not in schema.names]
            if missing:
                raise RptError(f"{path}: requested columns {missing} are not in the shard")
            md = pq.read_metadata(path)
            self._metadata.append(md)
            units += [_Unit(i, g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
        units = [u for u in units if u.rows > 0]
        if len(units) < world_size:
            raise RptError(
                f"the shards have too few row groups ({len(units)}) for {world_size} ranks; "
                "write more or smaller shards, or use fewer ranks"
            )
        self.units = units[rank::world_size]  # unit u -> rank u % world_size
        self.rows_per_epoch = sum(u.rows for u in self.units)
        self.total_rows = sum(u.rows for u in units)
        self._fingerprint = hashlib.sha256(
            repr(
                [(p.name, u.file, u.row_group, u.rows) for u in units for p in [self.paths[u.file]]]
            ).encode()
        ).hexdigest()[:16]
        self.rows_yielded = 0

    # ---- position ----
    @property
    def epoch(self) -> int:
        """Epoch (0-based) of the next row: the number of this rank's epochs completed so far."""
        return self.rows_yielded // self.rows_per_epoch

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "rows_yielded": self.rows_yielded,
            "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer,
            "world_size": self.world_size,
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise RptError(f"data stream state version {state.get('version')} is not {STATE_VERSION}")
        for key in ("seed", "shuffle_buffer", "world_size"):
            if state[key] != getattr(self, key):
                raise RptError(
                    f"cannot resume the data stream exactly: {key} was {state[key]}, now {getattr(self, key)}"
                )
        if state["fingerprint"] != self._fingerprint:
            raise RptError(
                "cannot resume the data stream exactly: the shard files changed since the checkpoint"
            )
        self.rows_yielded = int(state["rows_yielded"])

    # ---- iteration ----
    def __iter__(self) -> Iterator[dict]:
        while self.epochs is None or self.epoch < self.epochs:
            epoch = self.epoch
            for row in self._epoch_rows(epoch, self.rows_yielded - epoch * self.rows_per_epoch):
                self.rows_yielded += 1
                yield row

    def epoch_order(self, epoch: int) -> list[_Unit]:
        """This rank's units in the order epoch ``epoch`` reads them."""
        order = list(self.units)
        _rng("units", self.seed, epoch).shuffle(order)
        return order

    def _epoch_rows(self, epoch: int, skip: int) -> Iterator[dict]:
        """Rows of one epoch after the first ``skip`` (fast-forwarded on indices, not decoded)."""
        order = self.epoch_order(epoch)
        starts = [0]
        for u in order:
            starts.append(starts[-1] + u.rows)
        shuffle = BufferShuffle(self.shuffle_buffer, _rng("buffer", self.seed, epoch, self.rank))
        arrival, emitted = 0, 0
        while emitted < skip and arrival < self.rows_per_epoch:
            if shuffle.push(arrival) is not None:
                emitted += 1
            arrival += 1
        while emitted < skip:
            shuffle.pop()
            emitted += 1
        rows = self._read_indices(order, starts, shuffle.buffer)
        for index, row in self._arrivals(order, starts, arrival):
            rows[index] = row
            out = shuffle.push(index)
            if out is not None:
                yield rows.pop(out)
        while shuffle.buffer:
            yield rows.pop(shuffle.pop())

    def _arrivals(self, order: list[_Unit], starts: list[int], start: int) -> Iterator[tuple[int, dict]]:
        """(arrival index, row) from arrival ``start`` to the end of the epoch."""
        if start >= starts[-1]:
            return
        first = bisect.bisect_right(starts, start) - 1
        index = starts[first]
        for unit in order[first:]:
            for batch in self._batches(unit):
                if index + batch.num_rows <= start:  # whole batch before the resume point
                    index += batch.num_rows
                    continue
                for row in batch.to_pylist():
                    if index >= start:
                        yield index, row
                    index += 1

    def _batches(self, unit: _Unit) -> Iterator[pa.RecordBatch]:
        """The record batches of one unit; undecodable data is an ``RptError`` naming the shard."""
        path = self.paths[unit.file]
        try:
            with pq.ParquetFile(path, metadata=self._metadata[unit.file]) as pf:
                yield from pf.iter_batches(_BATCH_ROWS, row_groups=[unit.row_group], columns=self.columns)
        except (OSError, pa.ArrowException) as e:
            raise corrupt_shard(path, e, f" in row group {unit.row_group}") from None

    def _read_indices(self, order: list[_Unit], starts: list[int], indices: list[int]) -> dict[int, dict]:
        """Decode just the rows at ``indices`` (a resumed buffer), one row group read per unit touched."""
        by_unit: dict[int, list[int]] = {}
        for index in indices:
            by_unit.setdefault(bisect.bisect_right(starts, index) - 1, []).append(index)
        rows: dict[int, dict] = {}
        for pos, wanted in sorted(by_unit.items()):
            unit = order[pos]
            path = self.paths[unit.file]
            try:
                with pq.ParquetFile(path, metadata=self._metadata[unit.file]) as pf:
                    table = pf.read_row_group(unit.row_group, columns=self.columns)
            except (OSError, pa.ArrowException) as e:
                raise corrupt_shard(path, e, f" in row group {unit.row_group}") from None
            picked = table.take([i - starts[pos] for i in wanted]).to_pylist()
            rows.update(zip(wanted, picked, strict=True))
        return rows
