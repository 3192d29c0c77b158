"""``rpt-data build``: corpus -> proxy-entropy-scored, filtered RPT shards, streaming and resumable.

Documents are processed in fixed blocks of ``block_docs`` in corpus order (``rpt_data.build.blocks``): a block
is tokenized, scored with one ``ProxyScorer.score`` call (so the proxy's batches, and therefore its numbers,
depend only on the block), its positions are selected (``rpt_data.build.positions``) and its rows appended to
the rank's shard buffers (``rpt_data.build.sink``). Memory is bounded by one block plus two shards' worth of
rows, whatever the corpus size. Under ``torchrun`` rank r takes the blocks with ``b % world == r``; rank 0
merges the counts and writes ``OUT/manifest.json`` last, so its presence marks a complete build
(``rpt_data.build.summary``: the merged counts, the manifest and the printed summary).

Reruns: the same config on the same inputs and OUT resumes an interrupted build (or is a no-op when complete);
a different config, or inputs whose fingerprints (``rpt_core.data.corpus.fingerprint``: size and sha256 of
every file, the revision of a Hub dataset) changed since, is refused unless ``overwrite``. OUT is locked for
the build (``rpt_core.runtime.lock``). A rank checkpoints at the end of every block in which it wrote a shard
(and at least every ``CHECKPOINT_SECONDS``), so a crash costs at most the blocks since. The default proxy is
the RPT paper's, DeepSeek-R1-Distill-Qwen-1.5B (a Qwen2 model whose byte-level vocabulary is Qwen3's).

The manifest's counts add up: ``documents_read = documents_used + sum(documents_skipped)`` (reader
reasons, plus ``too_short`` (< 2 tokens), ``untokenizable`` and ``no_positions`` (nothing survived the
filters)); per document, its n - 1 positions are ``split_char + truncated + positions_scored`` and
``positions_scored = positions_kept + short_context + below_threshold + over_cap``;
``positions_kept[split] = sum(positions_kept_by_class[split])`` (classes of ``rpt_core.data.corpus.spans``,
``none`` for rows of documents without spans). ``documents_duplicate`` counts the documents whose text
(``content_id``) an earlier one had: they are used like the others, on the same side of the split as
their original, so no validation text is also trained on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpt_core.data.corpus.documents import DEFAULT_TEMPLATE, Document, content_id
from rpt_core.data.corpus.fingerprint import input_fingerprints
from rpt_core.data.corpus.inputs import DEFAULT_DATASET, DEFAULT_SPLIT
from rpt_core.data.corpus.readers import ReadStats, iter_documents
from rpt_core.data.shards import Manifest
from rpt_core.runtime import distributed as D
from rpt_core.runtime.config import check, identity_dict, option, unescape
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.progress import Progress
from rpt_data.build.blocks import blocks, process_block
from rpt_data.build.entropy import ProxyScorer
from rpt_data.build.positions import SelectionRule, ValChoice, choose_val_docs
from rpt_data.build.proxy import ProxyBundle, load_proxy
from rpt_data.build.sink import RankState, ShardSink, discard_if_empty, prepare_out, state_path
from rpt_data.build.summary import Summary, make_summary, merge_counts, write_manifest

DEFAULT_PROXY = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
CHECKPOINT_SECONDS = 600.0  # also checkpoint when no shard was flushed for this long
BARRIER_TIMEOUT_S = 24 * 3600.0
# 4x rpt-train's and the verl export's default --max-prompt-tokens (1024), so the default training never
# sees the cap, while a row stays under ~16 KB of context text (about 4 bytes a token) and a build's
# memory is bounded by rows_per_shard such rows per split, whatever a document's length.
MAX_CONTEXT_TOKENS = 4096


@dataclass
class BuildConfig:
    dataset: list[str] = option(
        default_factory=lambda: [DEFAULT_DATASET],
        help="Hub dataset id, or .jsonl/.json/.parquet file, dir or glob (repeatable). "
        f"Default: {DEFAULT_DATASET}.",
    )
    split: str = option(DEFAULT_SPLIT, "Hub dataset split.")
    text_template: str = option(
        DEFAULT_TEMPLATE, "Record fields -> document text, str.format style.", callback=unescape
    )
    tokenizer: str | None = option(
        None, "tokenizer.json, a directory holding one, or a hub id. Default: the proxy's."
    )
    proxy_model: str = option(DEFAULT_PROXY, "HF-format directory or hub id of the proxy.")
    out: str = option("shards", "Build directory.", identity=False)
    entropy_threshold: float | None = option(
        None, "Keep training positions with entropy >= this (nats). Default: off."
    )
    min_context_tokens: int | None = option(
        None, "Keep positions with at least this many context tokens (train and val). Default: off.", ge=0
    )
    max_samples_per_doc: int | None = option(
        None, "Keep at most this many training positions per document, the highest-entropy ones.", ge=1
    )
    labels_length: int = option(8, "Label tokens per row.", ge=1)
    max_context_tokens: int = option(
        MAX_CONTEXT_TOKENS,
        "A row's context keeps at most this many tokens before its position (the end "
        "kept), so a long document's rows grow linearly with it, not quadratically.",
        ge=1,
    )
    top_k: int = option(16, "Entropy over the top-k logits.", ge=1)
    val_docs: int = option(200, "Whole documents held out for validation.", ge=0)
    seed: int = option(0, "Seed of the held-out document choice.")
    rows_per_shard: int = option(10000, "Rows per Parquet shard.", ge=1)
    block_docs: int = option(
        256,
        "Documents tokenized and scored together (changes the proxy's batches, hence part of the config).",
        ge=1,
    )
    batch_tokens: int = option(16384, "Padded tokens per proxy batch.", ge=1)
    max_window: int | None = option(
        None,
        "Longest proxy window; longer documents are scored in overlapping windows. "
        "Default: the proxy's max_position_embeddings.",
        ge=2,
    )
    window_overlap: int = option(256, "Context tokens a window shares with the previous one.", ge=0)
    dtype: str | None = option(
        None, "Proxy dtype. Default: bfloat16 on CUDA, float32 on CPU.", choices=("float32", "bfloat16")
    )
    device: str | None = option(None, "cpu, cuda or cuda:N. Default: CUDA (this rank's) when available.")
    strict: bool = option(False, "Fail on the first bad record instead of skipping.")
    overwrite: bool = option(False, "Clear OUT's previous build first.", identity=False)
    quiet: bool = option(False, "No progress display and no summary.", identity=False)
    max_documents: int | None = option(None, "Use only the first N documents.", ge=1)

    def __post_init__(self) -> None:
        if isinstance(self.dataset, str):
            self.dataset = [self.dataset]
        self.dataset = list(self.dataset)
        if not self.dataset:
            raise RptError("no --dataset given")
        check(self)
        if self.entropy_threshold is not None and not np.isfinite(self.entropy_threshold):
            raise RptError(f"entropy-threshold must be a finite number, got {self.entropy_threshold}")

    def rule(self) -> SelectionRule:
        return SelectionRule(self.entropy_threshold, self.min_context_tokens, self.max_samples_per_doc)


def config_identity(cfg: BuildConfig, world_size: int) -> dict[str, Any]:
    """What must match for a rerun to continue a build: the config (minus out/quiet/overwrite) and world."""
    d = identity_dict(cfg)  # the fields marked identity=False (out, quiet, overwrite) change nothing built
    return json.loads(json.dumps({**d, "world_size": world_size}))


def _documents(cfg: BuildConfig, stats: ReadStats, warn) -> Iterator[Document]:
    docs = iter_documents(cfg.dataset, cfg.text_template, cfg.split, stats, cfg.strict, warn=warn)
    return itertools.islice(docs, cfg.max_documents) if cfg.max_documents else docs


def choose_val(cfg: BuildConfig) -> tuple[ValChoice, int]:
    """The held-out contents and documents, and the duplicates (one cheap pass over the corpus, O(val_docs)
    memory plus ~100 bytes per distinct text); also the document total for the progress display."""
    stats = ReadStats()
    docs = ((doc.doc_id, content_id(doc.text)) for doc in _documents(cfg, stats, warn=lambda _: None))
    choice = choose_val_docs(docs, cfg.val_docs, cfg.seed)
    n = choice.documents
    if n == 0:
        raise RptError(f"no usable documents in {', '.join(cfg.dataset)} ({stats.summary()})")
    if len(choice.doc_ids) >= n:
        raise RptError(f"--val-docs {cfg.val_docs} would hold out all {n} documents; lower --val-docs")
    return choice, n


def run_rank(
    cfg: BuildConfig, dist: D.DistInfo, bundle: ProxyBundle, val_ids: frozenset[str], total: int | None
):
    """Process this rank's blocks from where its state left off; returns its final state and proxy seconds."""
    out = Path(cfg.out)
    state = RankState.load(out, dist.rank) or RankState(rank=dist.rank)
    if state.done:
        return state, 0.0
    sink = ShardSink(out, dist.rank, cfg.rows_per_shard, state)
    scorer = ProxyScorer(bundle.model, cfg.top_k, cfg.batch_tokens, cfg.max_window, cfg.window_overlap)
    rule, stats = cfg.rule(), ReadStats()
    show = dist.rank == 0 and not cfg.quiet
    warn = None if show else (lambda _: None)
    last_checkpoint = time.monotonic()
    with Progress(total, unit="docs", desc="build", quiet=not show) as progress:
        for b, block in enumerate(blocks(_documents(cfg, stats, warn), cfg.block_docs)):
            if b % dist.world_size != dist.rank or b < state.next_block:
                progress.update(len(block))
                continue
            on_batch = lambda n: progress.update(0, tokens=n)  # live tokens/s within a long block
            counts = process_block(
                block,
                bundle.tokenizer,
                scorer,
                val_ids,
                rule,
                cfg.labels_length,
                sink.add,
                on_batch,
                cfg.max_context_tokens,
            )
            state.counts.add(counts)
            state.next_block = b + 1
            progress.update(len(block))
            if sink.flushed or time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                sink.checkpoint()
                last_checkpoint = time.monotonic()
    sink.finish()
    state.reader, state.done = stats.as_dict(), True
    sink.checkpoint()
    return state, scorer.forward_seconds


def build(cfg: BuildConfig) -> Summary:
    """Build (or resume, or confirm) the shards of ``cfg``; the summary is printed unless ``quiet``."""
    start = time.perf_counter()
    out = Path(cfg.out)
    # Ranks meet only at the start and the end; a slow rank may reach the last barrier hours after the rest.
    dist = D.init_distributed(cfg.device, timeout_s=BARRIER_TIMEOUT_S)
    lock, locked = contextlib.ExitStack(), False
    try:
        lock.enter_context(output_lock(out, "rpt-data build"))
        locked = True
        identity = config_identity(cfg, dist.world_size)
        inputs = D.on_main_rank(lambda: input_fingerprints(cfg.dataset, cfg.split, quiet=cfg.quiet))
        complete, prior_tokens = prepare_out(out, identity, inputs, cfg.overwrite, dist)
        if complete:
            manifest = Manifest.read(out)
            summary = make_summary(out, manifest.counts, manifest.shards, True, 0.0)
            if dist.rank == 0 and not cfg.quiet:
                print(f"{out}: build already complete (manifest.json present); nothing to do")
                print(summary.format())
            return summary
        val, total = choose_val(cfg)
        bundle = load_proxy(cfg.proxy_model, cfg.tokenizer, cfg.dtype, dist.device, cfg.top_k)
        _, proxy_seconds = run_rank(cfg, dist, bundle, val.content_ids, total)
        D.barrier()
        states = [RankState.load(out, r) for r in range(dist.world_size)]
        if any(s is None or not s.done for s in states):
            raise RptError(f"{out}: not every rank finished ({state_path(out, 0).parent}); rerun to resume")
        counts = merge_counts(states, val)  # type: ignore[arg-type]
        if counts["documents_used"] == 0 or counts["positions_kept"]["train"] == 0:
            raise RptError(
                f"no usable training rows: {counts['documents_read']} documents read, "
                f"{counts['documents_used']} used, skipped {counts['documents_skipped']}, positions skipped "
                f"{counts['positions_skipped']} (check the input and the filters)"
            )
        shards = sorted(
            (s for st in states for s in st.shards), key=lambda s: (s["split"], s["rank"], s["index"])
        )
        if dist.rank == 0:
            write_manifest(cfg, identity, inputs, bundle, counts, shards, val)
        D.barrier()
        summary = make_summary(out, counts, shards, False, time.perf_counter() - start)
        summary.tokens_this_run = counts["tokens_scored"] - prior_tokens
        summary.proxy_seconds = proxy_seconds
        if dist.rank == 0 and not cfg.quiet:
            print(summary.format())
        sys.stdout.flush()
        return summary
    except BaseException:
        if locked and dist.rank == 0:  # failed while holding the lock: OUT is ours to tidy
            discard_if_empty(out)
        raise
    finally:
        lock.close()
        D.cleanup()
