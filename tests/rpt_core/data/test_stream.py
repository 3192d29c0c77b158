"""ShardStream: epochs, seeded shuffling, rank partition and exact resume on tiny hand-made shards."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from rpt_core.data import shards, stream
from rpt_core.data.stream import BufferShuffle, ShardStream
from rpt_core.runtime.errors import RptError

SIZES = (30, 17, 45, 8, 22)  # rows per shard; row groups of 7 give uneven units (5 + 3 + 7 + 2 + 4 = 21)
N = sum(SIZES)


def _row(i: int) -> dict:
    return dict(
        doc_id=f"d{i}",
        position=i,
        context=f"context {i}",
        label=b"x",
        boundaries=[1],
        entropy=0.5,
        n_context_tokens=i,
        token_id=1,
        label_token_ids=[1],
        domain=["math"],
        difficulty=None,
        source="test",
    )


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "ROW_GROUP_SIZE", 7)
    out, i = [], 0
    for s, size in enumerate(SIZES):
        path = tmp_path / "train" / shards.shard_name("train", 0, s)
        shards.write_shard(path, shards.rows_to_table([_row(i + k) for k in range(size)]))
        out.append(path)
        i += size
    return out


def _ids(rows) -> list[int]:
    return [r["position"] for r in rows]


def _take(st: ShardStream, n: int) -> list[int]:
    it = iter(st)
    return [next(it)["position"] for _ in range(n)]


def test_every_row_once_per_epoch_and_epochs_differ(paths):
    st = ShardStream(paths, seed=3, shuffle_buffer=16, epochs=3)
    assert st.rows_per_epoch == N and len(st.units) == 21
    ids = _ids(st)
    assert len(ids) == 3 * N and st.rows_yielded == 3 * N and st.epoch == 3
    epochs = [ids[e * N : (e + 1) * N] for e in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(N))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != sorted(epochs[0])  # actually shuffled


def test_seed_determinism(paths):
    a = _ids(ShardStream(paths, seed=1, shuffle_buffer=32, epochs=2))
    b = _ids(ShardStream(paths, seed=1, shuffle_buffer=32, epochs=2))
    c = _ids(ShardStream(paths, seed=2, shuffle_buffer=32, epochs=2))
    assert a == b and a != c


def test_infinite_when_epochs_none(paths):
    st = ShardStream(paths, shuffle_buffer=4)
    ids = _take(st, 4 * N + 5)
    assert Counter(ids[: 4 * N]) == Counter({i: 4 for i in range(N)})
    assert st.epoch == 4


def test_no_buffer_keeps_row_group_contents_contiguous(paths):
    st = ShardStream(paths, shuffle_buffer=0, epochs=1)
    ids = _ids(st)
    # Without a buffer the only shuffling is the row-group order: each unit's rows stay consecutive.
    runs = sum(1 for a, b in zip(ids[:-1], ids[1:], strict=True) if b != a + 1) + 1
    assert sorted(ids) == list(range(N)) and runs <= 21 and ids != list(range(N))


@pytest.mark.parametrize("world_size", [2, 3, 21])
def test_rank_partition_disjoint_and_covering(paths, world_size):
    parts = [
        set(_ids(ShardStream(paths, rank=r, world_size=world_size, epochs=1))) for r in range(world_size)
    ]
    assert all(parts)
    assert sum(len(p) for p in parts) == N and set().union(*parts) == set(range(N))
    # Partition is per row group: unit u belongs to rank u % world_size.
    units = ShardStream(paths).units
    for r in range(world_size):
        assert ShardStream(paths, rank=r, world_size=world_size).units == units[r::world_size]


def test_too_few_row_groups_for_ranks(paths):
    with pytest.raises(RptError, match="too few row groups"):
        ShardStream(paths, world_size=22)
    with pytest.raises(RptError, match="invalid rank"):
        ShardStream(paths, rank=2, world_size=2)


@pytest.mark.parametrize("buffer", [0, 8, 1000])
@pytest.mark.parametrize("k", [0, 1, 6, 50, N - 1, N, N + 3, 2 * N + 7])
def test_exact_resume(paths, buffer, k):
    full = _ids(ShardStream(paths, seed=5, shuffle_buffer=buffer, epochs=3))
    first = ShardStream(paths, seed=5, shuffle_buffer=buffer, epochs=3)
    head = _take(first, k)
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
    resumed = ShardStream(paths, seed=5, shuffle_buffer=buffer, epochs=3)
    resumed.load_state_dict(state)
    assert resumed.rows_yielded == k and resumed.epoch == k // N
    assert head + _ids(resumed) == full


def test_resume_twice_and_reiterate(paths):
    full = _take(ShardStream(paths, seed=9, shuffle_buffer=10), 3 * N)
    st = ShardStream(paths, seed=9, shuffle_buffer=10)
    got = _take(st, 40)
    got += _take(st, 30)  # a new iterator continues where the last one stopped
    st2 = ShardStream(paths, seed=9, shuffle_buffer=10)
    st2.load_state_dict(st.state_dict())
    got += _take(st2, 3 * N - 70)
    assert got == full


def test_rank_zero_state_resumes_other_ranks(paths):
    """Ranks consuming equal row counts share one state: rank 0's resumes rank 1 exactly."""
    full1 = _take(ShardStream(paths, seed=4, shuffle_buffer=6, rank=1, world_size=2), 200)
    r0 = ShardStream(paths, seed=4, shuffle_buffer=6, rank=0, world_size=2)
    _take(r0, 77)
    r1 = ShardStream(paths, seed=4, shuffle_buffer=6, rank=1, world_size=2)
    r1.load_state_dict(r0.state_dict())
    assert _take(r1, 123) == full1[77:]


def test_resume_decodes_only_what_it_needs(paths, monkeypatch):
    """Fast-forward skips whole row groups: resuming deep into epoch 3 decodes at most one unit."""
    decoded = []
    real = pq.ParquetFile.iter_batches

    def counting(self, *a, **kw):
        for batch in real(self, *a, **kw):
            decoded.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    st = ShardStream(paths, shuffle_buffer=0)
    st.load_state_dict({**st.state_dict(), "rows_yielded": 2 * N + 40})
    next(iter(st))
    assert sum(decoded) <= 7


def test_state_mismatch_is_refused(paths, tmp_path):
    st = ShardStream(paths, seed=1)
    state = st.state_dict()
    with pytest.raises(RptError, match="seed"):
        ShardStream(paths, seed=2).load_state_dict(state)
    with pytest.raises(RptError, match="world_size"):
        ShardStream(paths, seed=1, world_size=2).load_state_dict(state)
    with pytest.raises(RptError, match="shard files changed"):
        ShardStream(paths[:-1], seed=1).load_state_dict(state)


def test_columns_and_bad_files(paths, tmp_path):
    rows = list(ShardStream(paths, columns=["position", "context"], epochs=1))
    assert set(rows[0]) == {"position", "context"} and len(rows) == N
    with pytest.raises(RptError, match="not in the shard"):
        ShardStream(paths, columns=["nope"])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(RptError, match="not a readable Parquet shard"):
        ShardStream([*paths, bad])


def test_buffer_shuffle_is_a_permutation():
    import random

    sh = BufferShuffle(5, random.Random(0))
    out = [o for i in range(20) if (o := sh.push(i)) is not None]
    out += [sh.pop() for _ in range(len(sh.buffer))]
    assert sorted(out) == list(range(20)) and out != list(range(20))
    assert stream.BufferShuffle(1, random.Random(0)).push(7) == 7
