"""Summaries of a shard build (``rpt-data inspect OUT``): sizes, entropy distribution, sample rows.

Reads ``OUT/<split>/*.parquet`` lazily with polars, so only the aggregated numbers and the few printed
rows are materialised, whatever the build's size; a shard whose data does not decode is named in one
error line. The formatting helpers are pure functions of plain
values so tests can check them by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpt_core.data.shards import SPLITS, Manifest, check_schema, find_corrupt, shard_paths
from rpt_core.runtime.config import check, option
from rpt_core.runtime.errors import RptError, first_line

QUANTILES = (
    ("min", 0.0),
    ("10%", 0.10),
    ("25%", 0.25),
    ("50%", 0.50),
    ("75%", 0.75),
    ("90%", 0.90),
    ("max", 1.0),
)
BIN_WIDTH = 0.25  # nats
BAR_WIDTH = 40
CONTEXT_CHARS = 60


@dataclass
class SplitSummary:
    split: str
    shards: int
    rows: int
    documents: int
    quantiles: dict[str, float] = field(default_factory=dict)
    histogram: list[tuple[float, int]] = field(default_factory=list)  # (bin start in nats, rows)
    non_finite: int = 0  # NaN/inf entropies, left out of quantiles and histogram
    kept: tuple[int, int] | None = None  # (positions kept, positions scored) from the manifest
    samples: list[dict[str, Any]] = field(default_factory=list)


def escape(text: str) -> str:
    """Repr-style escapes for non-printable characters (``\\n``, ``\\t``, ``\\x00``), the rest as is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def split_label(label: bytes, boundaries: Sequence[int]) -> list[str]:
    """The label cut at its valid boundaries (byte offsets), each piece decoded for display."""
    cuts = sorted({int(b) for b in boundaries if 0 < int(b) < len(label)})
    edges = [0, *cuts, len(label)]
    return [label[a:b].decode("utf-8", errors="replace") for a, b in zip(edges, edges[1:], strict=False)]


def format_row(context: str, label: bytes, boundaries: Sequence[int], width: int = CONTEXT_CHARS) -> str:
    """``...<last width chars of context> | piece|piece|piece`` with non-printables escaped."""
    tail = context[-width:] if width > 0 else ""
    prefix = "..." if len(context) > len(tail) else ""
    return f"{prefix}{escape(tail)} | " + "|".join(escape(p) for p in split_label(label, boundaries))


def histogram_lines(
    histogram: Sequence[tuple[float, int]], bin_width: float = BIN_WIDTH, bar_width: int = BAR_WIDTH
) -> list[str]:
    """``[0.50, 0.75)  ########  123`` per bin; bars scale to the largest bin, a non-empty bin shows one #."""
    if not histogram:
        return []
    top = max(count for _, count in histogram) or 1
    lines = []
    for start, count in histogram:
        bar = "#" * (max(1, round(bar_width * count / top)) if count else 0)
        lines.append(f"  [{start:5.2f}, {start + bin_width:5.2f})  {bar:<{bar_width}}  {count:,}")
    return lines


def fill_bins(counts: Mapping[int, int], bin_width: float = BIN_WIDTH) -> list[tuple[float, int]]:
    """Dense (bin start, count) pairs from sparse ``{bin index: count}``, empty bins in between included."""
    if not counts:
        return []
    lo, hi = min(counts), max(counts)
    return [(i * bin_width, int(counts.get(i, 0))) for i in range(lo, hi + 1)]


def kept_counts(manifest: Mapping[str, Any], split: str) -> tuple[int, int] | None:
    """(kept, scored) positions of a split from ``manifest["counts"]``, or None when not recorded.

    Accepts ``counts.positions_kept.<split>`` / ``counts.positions_scored.<split>`` and the transposed
    ``counts.<split>.positions_kept`` layout.
    """
    counts = manifest.get("counts")
    if not isinstance(counts, Mapping):
        return None

    def get(key: str) -> Any:
        by_key, by_split = counts.get(key), counts.get(split)
        if isinstance(by_key, Mapping) and split in by_key:
            return by_key[split]
        return by_split.get(key) if isinstance(by_split, Mapping) else None

    kept, scored = get("positions_kept"), get("positions_scored")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (kept, scored)):
        return None
    return kept, scored


def _paths(out: Path, split: str) -> list[Path]:
    # every *.parquet in OUT/<split>, hidden temp files excluded
    paths = shard_paths(out, split, required=False) if (out / split).is_dir() else []
    for path in paths:
        check_schema(path)
    return paths


def _collect(lf: Any, paths: list[Path]) -> Any:
    """``lf.collect()`` (a polars LazyFrame); data that does not decode is an ``RptError`` naming the shard
    at fault."""
    import polars as pl  # lazily, as everywhere in this module: the GPU machine has no polars

    try:
        return lf.collect()
    except (pl.exceptions.PolarsError, OSError) as e:
        unnamed = RptError(f"cannot read the shards in {paths[0].parent} ({first_line(e)})")
        raise (find_corrupt(paths) or unnamed) from None


def summarize_split(out: str | Path, split: str, rows: int = 5) -> SplitSummary | None:
    """Numbers for one split, or None when the split has no shards."""
    import polars as pl  # deferred: the rpt-data CLI (and a GPU machine without polars) never needs it else

    out = Path(out)
    paths = _paths(out, split)
    if not paths:
        return None
    lf = pl.scan_parquet([str(p) for p in paths])
    entropy = pl.col("entropy").cast(pl.Float64)
    finite = entropy.filter(entropy.is_finite())
    totals = _collect(
        lf.select(
            pl.len().alias("rows"),
            pl.col("doc_id").n_unique().alias("documents"),
            (~entropy.is_finite()).sum().alias("non_finite"),
            *[finite.quantile(q, interpolation="linear").alias(name) for name, q in QUANTILES],
        ),
        paths,
    )
    t = totals.row(0, named=True)
    summary = SplitSummary(
        split, len(paths), int(t["rows"]), int(t["documents"]), non_finite=int(t["non_finite"])
    )
    if t["min"] is not None:
        summary.quantiles = {name: float(t[name]) for name, _ in QUANTILES}
    bins = _collect(
        lf.select(entropy.alias("h"))
        .filter(pl.col("h").is_finite())
        .group_by((pl.col("h") / BIN_WIDTH).floor().cast(pl.Int64).alias("bin"))
        .agg(pl.len().alias("n")),
        paths,
    )
    summary.histogram = fill_bins(dict(zip(bins["bin"].to_list(), bins["n"].to_list(), strict=True)))
    manifest = Manifest.read(out)
    summary.kept = kept_counts(manifest.to_dict() if manifest else {}, split)
    if rows > 0:
        cols = ["doc_id", "position", "entropy", "context", "label", "boundaries"]
        summary.samples = _collect(lf.select(cols).head(rows), paths).to_dicts()
    return summary


def render_summary(s: SplitSummary) -> list[str]:
    lines = [f"== {s.split}: {s.rows:,} rows from {s.documents:,} documents in {s.shards} shard(s)"]
    if s.kept is not None:
        kept, scored = s.kept
        frac = f" ({100.0 * kept / scored:.2f}%)" if scored else ""
        lines.append(f"kept {kept:,} of {scored:,} scored positions{frac}")
        if kept != s.rows:
            lines.append(
                f"note: the manifest counts {kept:,} kept positions but the shards hold {s.rows:,} rows"
            )
    else:
        lines.append("kept fraction: not recorded in manifest.json")
    if s.quantiles:
        lines.append("entropy (nats): " + "  ".join(f"{k} {v:.3f}" for k, v in s.quantiles.items()))
        lines.append(f"entropy histogram ({BIN_WIDTH} nats per bin):")
        lines += histogram_lines(s.histogram)
    if s.non_finite:
        lines.append(f"warning: {s.non_finite:,} rows have a non-finite entropy")
    if s.samples:
        lines.append(f"first {len(s.samples)} rows (context | label split at its boundaries):")
        for r in s.samples:
            h = r["entropy"]
            h_text = f"{h:.2f}" if h is not None and math.isfinite(h) else str(h)
            lines.append(
                f"  [{r['doc_id']} t={r['position']} H={h_text}] "
                + format_row(r["context"], r["label"], r["boundaries"] or [])
            )
    return lines


@dataclass
class InspectConfig:
    out: str = option("shards", "Build directory.", argument=True, required=True)
    rows: int = option(5, "Sample rows to print per split.", ge=0)
    split: str = option("all", "Which split to summarise.", choices=("train", "val", "all"))

    def __post_init__(self) -> None:
        check(self)


def inspect_build(out: str | Path, split: str = "all", rows: int = 5) -> str:
    """The full text report for a build directory; ``RptError`` if it is missing or has no shards."""
    out = Path(out)
    if not out.is_dir():
        raise RptError(f"{out}: no such build directory")
    if split not in (*SPLITS, "all"):
        raise RptError(f"unknown split {split!r} (expected {', '.join(SPLITS)} or all)")
    splits = SPLITS if split == "all" else (split,)
    summaries = {name: summarize_split(out, name, rows) for name in splits}
    if all(s is None for s in summaries.values()):
        where = " or ".join(f"{out / name}/" for name in splits)
        raise RptError(f"{out}: no shards found (looked for *.parquet in {where})")
    lines = [f"build {out}"]
    for name, s in summaries.items():
        lines += [f"== {name}: no shards"] if s is None else render_summary(s)
    return "\n".join(lines)
