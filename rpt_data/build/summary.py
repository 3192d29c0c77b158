"""What a finished ``rpt-data build`` records: the ranks' counts merged, ``manifest.json`` and the summary.

Rank 0 writes the manifest last (``write_manifest``), so its presence marks a complete build; ``Summary``
is what ``build`` returns and prints, for a build just finished or one found already complete.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rpt_core.data.corpus.spans import UNCLASSIFIED, ordered_counts
from rpt_core.data.shards import SCHEMA_VERSION, SPLITS, Manifest
from rpt_data import __version__
from rpt_data.build.positions import VAL_MIN_ENTROPY, ValChoice
from rpt_data.build.proxy import ProxyBundle, proxy_hashes
from rpt_data.build.sink import Counts, RankState

if TYPE_CHECKING:  # rpt_data.build.pipeline imports this module
    from rpt_data.build.pipeline import BuildConfig


@dataclass
class Summary:
    out: str
    already_complete: bool
    counts: dict[str, Any]
    shards: dict[str, int]  # split -> number of shards
    seconds: float
    tokens_this_run: int = 0  # all ranks; less than counts["tokens_scored"] when this run resumed a build
    proxy_seconds: float = 0.0  # rank 0's time inside ProxyScorer.score

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_this_run / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        c = self.counts
        kv = lambda d: ", ".join(f"{k}={v:,}" for k, v in d.items()) or "none"
        lines = [
            f"build {'already complete' if self.already_complete else 'complete'}: {self.out}",
            f"  documents: {c['documents_read']:,} read, {c['documents_used']:,} used "
            f"({c['documents_val']:,} held out for val; {c.get('documents_duplicate', 0):,} duplicates of "
            f"another's text, kept on its side); skipped: {kv(c['documents_skipped'])}",
            f"  positions scored: {kv(c['positions_scored'])}; kept: {kv(c['positions_kept'])}",
            f"  positions skipped: {kv(c['positions_skipped'])}",
            *(
                f"  {split} positions kept by class: {kv(ordered_counts(by))}"
                for split, by in c.get("positions_kept_by_class", {}).items()
                if set(by) - {UNCLASSIFIED}  # a corpus without spans: nothing to show
            ),
            f"  shards: {kv(self.shards)}",
        ]
        if not self.already_complete:
            share = 100.0 * self.proxy_seconds / self.seconds if self.seconds > 0 else 0.0
            lines.append(
                f"  {self.seconds:,.1f} s, {self.tokens_this_run:,} tokens scored in this run, "
                f"{self.tokens_per_second:,.0f} tokens/s (proxy forward {share:.0f}% of the time on rank 0)"
            )
        return "\n".join(lines)


def merge_counts(states: list[RankState], val: ValChoice) -> dict[str, Any]:
    """The manifest's ``counts``: the reader's (every rank reads the whole corpus) plus the ranks' sums."""
    reader = states[0].reader or {}
    total = Counts()
    for s in states:
        total.add(s.counts)
    c = total.to_dict()
    skipped = Counter(reader.get("skipped", {}))
    skipped.update(c["documents_skipped"])
    return {
        "documents_read": reader.get("documents_read", 0),
        "documents_used": c["documents_used"],
        "documents_val": len(val.doc_ids),
        "documents_duplicate": val.duplicates,
        "documents_skipped": dict(sorted(skipped.items())),
        "documents_coerced": reader.get("coerced", {}),
        "files_read": reader.get("files_read", 0),
        "files_skipped": reader.get("files_skipped", {}),
        "positions_scored": c["positions_scored"],
        "positions_kept": c["positions_kept"],
        "positions_skipped": c["positions_skipped"],
        "positions_kept_by_class": c["positions_kept_by_class"],
        "tokens_scored": c["tokens_scored"],
    }


def write_manifest(
    cfg: BuildConfig,
    identity: dict[str, Any],
    inputs: list[dict],
    bundle: ProxyBundle,
    counts,
    shards,
    val: ValChoice,
) -> None:
    tok = bundle.tokenizer
    Manifest(
        schema_version=SCHEMA_VERSION,
        created_by=f"rpt-data {__version__} build",
        config={k: v for k, v in identity.items() if k != "world_size"},
        inputs=inputs,
        tokenizer=str(bundle.tokenizer_file),
        tokenizer_sha256=bundle.tokenizer_sha256,
        tokenizer_fingerprint=tok.fingerprint,
        tokenizer_base_vocab_fingerprint=tok.base_vocab_fingerprint,
        proxy={"id": cfg.proxy_model, **proxy_hashes(bundle.model_dir), "dtype": bundle.dtype},
        top_k=cfg.top_k,
        entropy_threshold=cfg.entropy_threshold,
        min_context_tokens=cfg.min_context_tokens,
        max_context_tokens=cfg.max_context_tokens,
        max_samples_per_doc=cfg.max_samples_per_doc,
        labels_length=cfg.labels_length,
        val_min_entropy=VAL_MIN_ENTROPY,
        world_size=identity["world_size"],
        counts=counts,
        shards=shards,
        val_doc_ids=sorted(val.doc_ids),
        val_content_ids=sorted(val.content_ids),
    ).write(cfg.out)


def make_summary(
    out: Path, counts: dict[str, Any], shards: list[dict], already: bool, seconds: float
) -> Summary:
    by_split = Counter(s["split"] for s in shards)
    return Summary(str(out), already, counts, {s: by_split.get(s, 0) for s in SPLITS}, seconds)
