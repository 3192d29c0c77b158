"""The pass-rate side file and the choice of training positions from it (``rpt-train run --pass-rates``).

``rpt-train passrate`` writes ``passrates.parquet``: one row per scored position, keyed by the shard row's
identity ``(doc_id, position)`` (unique within a split; checked), with ``token_id`` and the scores. Its
Parquet metadata (``rpt.passrate``) records the split, the samples per position ``k`` and the split's
fingerprint: a hash of every ``(doc_id, position, token_id)`` of the split, scored or not. A run reads the
side file back only for shards with the same fingerprint, so scores of other (or rebuilt) shards are
refused rather than silently joined.

``Selection`` is what the trainer uses: the set of ``(doc_id, position)`` kept by a ``Band`` and the counts
of what was dropped and why. Positions of the training split that were not scored (``--max-samples``) are
dropped and counted as ``unscored``: selection trains only on positions whose pass rate is known.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.data.shards import iter_rows, shard_paths
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import atomic_path, sha256_file, write_json_atomic
from rpt_train.passrate.estimate import Band

SIDE_FILE = "passrates.parquet"
SELECTION = "selection.json"  # in the run directory
META_KEY = b"rpt.passrate"
KEY_COLUMNS = ("doc_id", "position", "token_id")
SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("entropy", pa.float32(), nullable=False),
        pa.field("span_class", pa.string(), nullable=True),  # when the shards carry one
        pa.field("p_true", pa.float64(), nullable=False),  # softmax probability of token_id after the context
        pa.field("ntp", pa.bool_(), nullable=False),  # the greedy next token is token_id
        pa.field("greedy", pa.bool_(), nullable=False),  # the greedy training rollout earns the reward
        pa.field("n_correct", pa.int32(), nullable=False),  # of k sampled training rollouts
        pa.field("k", pa.int32(), nullable=False),
        pa.field("pass1", pa.float64(), nullable=False),  # n_correct / k
        pa.field("passk", pa.float64(), nullable=False),  # pass@k: at least one of the k is right
    ]
)


def split_fingerprint(keys: Iterable[tuple[str, int, int]]) -> str:
    """Hash of a split's ``(doc_id, position, token_id)`` rows, in any order; duplicates are an error."""
    items = sorted(keys)
    for a, b in zip(items, items[1:], strict=False):
        if a[:2] == b[:2]:
            raise RptError(f"two shard rows share doc_id {a[0]!r} and position {a[1]}: rows are not unique")
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def shard_keys(shards: str, split: str) -> Iterator[tuple[str, int, int]]:
    """The ``(doc_id, position, token_id)`` of every row of a split, in file order."""
    for r in iter_rows(shard_paths(shards, split), KEY_COLUMNS):
        yield r["doc_id"], int(r["position"]), int(r["token_id"])


def write_side_file(path: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write the scored positions atomically, with ``meta`` (split, k, fingerprint, model) as metadata."""
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_side_file(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, metadata) of a side file, or of ``DIR/passrates.parquet``; a bad file is one RptError line."""
    path = Path(path)
    if path.is_dir():
        path = path / SIDE_FILE
    if not path.is_file():
        raise RptError(f"{path}: no pass-rate file (write one with `rpt-train passrate`)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise RptError(f"{path}: not a readable pass-rate file ({e})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    missing = [c for c in SCHEMA.names if c not in table.schema.names]
    if raw is None or missing:
        raise RptError(
            f"{path}: not a pass-rate file of `rpt-train passrate` (missing {missing or 'metadata'})"
        )
    return table.to_pylist(), {**json.loads(raw), "sha256": sha256_file(path)}


@dataclass
class Selection:
    """The training positions kept by a band: ``keeps(row)``, and ``counts`` of what was dropped and why."""

    kept: set[tuple[str, int]]
    counts: dict[str, int] = field(default_factory=dict)
    band: Band = field(default_factory=Band)
    source: dict[str, Any] = field(default_factory=dict)  # the side file's metadata and sha256

    def keeps(self, row: dict[str, Any]) -> bool:
        return (row["doc_id"], int(row["position"])) in self.kept

    def filter(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The rows of ``rows`` that are kept (a stream's position still counts every row it read)."""
        return (r for r in rows if self.keeps(r))

    def record(self) -> dict[str, Any]:
        """What ``selection.json`` in the run directory holds."""
        return {"band": vars(self.band), "counts": self.counts, "source": self.source}


def select(scored: list[dict[str, Any]], split_keys: list[tuple[str, int, int]], band: Band) -> Selection:
    """Keep the scored positions of ``split_keys`` that ``band`` admits; count every other row's reason
    (``below_band``, ``above_band``, ``margin``, ``unscored``)."""
    by_key = {(r["doc_id"], int(r["position"])): r for r in scored}
    counts: Counter[str] = Counter()
    kept = set()
    for doc_id, position, token_id in split_keys:
        row = by_key.get((doc_id, position))
        if row is None:
            counts["unscored"] += 1
            continue
        if int(row["token_id"]) != token_id:
            raise RptError(
                f"pass rates of ({doc_id!r}, {position}) were scored for token {row['token_id']}, "
                f"the shard's is {token_id}: score these shards again"
            )
        verdict = band.verdict(float(row["pass1"]), float(row["p_true"]))
        counts[verdict] += 1
        if verdict == "kept":
            kept.add((doc_id, position))
    names = ("kept", "below_band", "above_band", "margin", "unscored")
    return Selection(kept, {"rows": len(split_keys), **{n: counts[n] for n in names}}, band)


def load_selection(side: str, shards: str, band: Band, split: str = "train") -> Selection:
    """The selection for a run on ``shards`` from the side file ``side``; scores of other shards (another
    split fingerprint) or of another split are refused, and so is a selection that keeps nothing."""
    scored, meta = read_side_file(side)
    keys = list(shard_keys(shards, split))
    if meta.get("split") != split:
        raise RptError(
            f"{side}: pass rates of the {meta.get('split')} split; selection needs the {split} split"
        )
    if meta.get("fingerprint") != split_fingerprint(keys):
        raise RptError(
            f"{side}: pass rates of other shards than {shards}/{split} (their rows differ); "
            "score these shards with `rpt-train passrate`"
        )
    selection = select(scored, keys, band)
    selection.source = meta
    if not selection.kept:
        c = selection.counts
        raise RptError(
            f"--pass-rates keeps no training position ({c['rows']} rows: {c['below_band']} at or "
            f"below the band, {c['above_band']} at or above it, {c['margin']} under the margin, "
            f"{c['unscored']} unscored); widen the band or lower the margin"
        )
    return selection


def selected_rows(
    cfg: Any,
    rows: Iterable[dict[str, Any]],
    run_dir: Path,
    resumed: bool,
    log: Callable[[str], None],
    main: bool = True,
) -> Iterator[dict[str, Any]]:
    """The training rows a run keeps under ``--pass-rates`` (``cfg`` is its ``TrainConfig``).

    Records the band, the counts and the side file's hash in ``RUN/selection.json`` (the ``main`` rank
    writes it); a resumed run must find the same side file there (its options are refused by the resume
    check when they change)."""
    selection = load_selection(cfg.data.pass_rates, cfg.io.shards, cfg.band())
    path = run_dir / SELECTION
    if resumed and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8")).get("source", {}).get("sha256")
        if saved != selection.source["sha256"]:
            raise RptError(
                f"--resume: {cfg.data.pass_rates} changed since the run started (its hash is not "
                f"{path}'s); resume with the same file, or train into another --out"
            )
    if main:
        write_json_atomic(path, selection.record())
    c = selection.counts
    log(
        f"pass-rate selection: {c['kept']} of {c['rows']} training positions kept ({c['below_band']} at or "
        f"below {selection.band.above}, {c['above_band']} at or above {selection.band.below}, {c['margin']} "
        f"under the margin, {c['unscored']} unscored)"
    )
    return selection.filter(rows)
