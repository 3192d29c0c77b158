"""``rpt-data build``: corpus -> proxy-entropy-scored, filtered RPT shards, streaming and resumable.

Documents are processed in fixed blocks of ``block_docs`` in corpus order: a block is tokenized, scored
with one ``ProxyScorer.score`` call (so the proxy's batches, and therefore its numbers, depend only on the
block), its positions are selected (``rpt_data.positions``) and its rows appended to the rank's shard buffers
(``rpt_data.sink``). Memory is bounded by one block plus two shards' worth of rows, whatever the
corpus size. Under ``torchrun`` rank r takes the blocks with ``b % world == r``; rank 0 merges the counts
and writes ``OUT/manifest.json`` last, so its presence marks a complete build.

Reruns: the same config on the same inputs and OUT resumes an interrupted build (or is a no-op when
complete); a different config, or inputs whose fingerprints (``rpt_core.data.corpus.fingerprint``: size and
sha256 of every file, the revision of a Hub dataset) changed since, is refused unless ``overwrite``. OUT
is locked for the build (``rpt_core.runtime.lock``). A rank checkpoints at the end of every block in which
it wrote a shard (and at least every ``CHECKPOINT_SECONDS``), so a crash costs at most the blocks since.
The default proxy is the RPT paper's, DeepSeek-R1-Distill-Qwen-1.5B (a Qwen2 model whose byte-level
vocabulary is Qwen3's).

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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpt_core.data.corpus.documents import DEFAULT_TEMPLATE, Document, content_id
from rpt_core.data.corpus.fingerprint import input_fingerprints
from rpt_core.data.corpus.inputs import DEFAULT_DATASET, DEFAULT_SPLIT
from rpt_core.data.corpus.readers import ReadStats, iter_documents
from rpt_core.data.corpus.spans import UNCLASSIFIED, class_key, ordered_counts
from rpt_core.data.shards import SCHEMA_VERSION, SPLITS, Manifest
from rpt_core.runtime import distributed as D
from rpt_core.runtime.config import check, identity_dict, option, unescape
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.progress import Progress
from rpt_core.text.tokenizer import Tokenizer
from rpt_data import __version__
from rpt_data.entropy import ProxyScorer
from rpt_data.positions import (
    VAL_MIN_ENTROPY,
    SelectionRule,
    ValChoice,
    choose_val_docs,
    eligible_positions,
    make_rows,
    select_positions,
    stored_entropies,
)
from rpt_data.proxy import ProxyBundle, load_proxy, proxy_hashes
from rpt_data.sink import Counts, RankState, ShardSink, discard_if_empty, prepare_out, state_path

DEFAULT_PROXY = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
CHECKPOINT_SECONDS = 600.0  # also checkpoint when no shard was flushed for this long
BARRIER_TIMEOUT_S = 24 * 3600.0
ROW_CHUNK = 1024  # rows built (as Python dicts) at a time
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
        MAX_CONTEXT_TOKENS, "A row's context keeps at most this many tokens before its position (the end "
        "kept), so a long document's rows grow linearly with it, not quadratically.", ge=1,
    )  # fmt: skip
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
        None, "Longest proxy window; longer documents are scored in overlapping windows. "
        "Default: the proxy's max_position_embeddings.", ge=2,
    )  # fmt: skip
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


def config_identity(cfg: BuildConfig, world_size: int) -> dict[str, Any]:
    """What must match for a rerun to continue a build: the config (minus out/quiet/overwrite) and world."""
    d = identity_dict(cfg)  # the fields marked identity=False (out, quiet, overwrite) change nothing built
    return json.loads(json.dumps({**d, "world_size": world_size}))


def _blocks(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(docs)
    while block := list(itertools.islice(it, size)):
        yield block


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[tuple[list[int], list] | None]:
    """Token ids and byte spans per text; None for a text the tokenizer cannot represent byte-exactly."""
    try:
        return list(tokenizer.encode_batch_with_spans(texts))
    except (RptError, RuntimeError):
        pass  # find the culprit(s) one by one; the others keep their (identical) encodings
    out: list[tuple[list[int], list] | None] = []
    for text in texts:
        try:
            out.append(tokenizer.encode_with_spans(text))
        except (RptError, RuntimeError):
            out.append(None)
    return out


def process_block(
    docs: list[Document],
    tokenizer: Tokenizer,
    scorer: ProxyScorer,
    val_ids: frozenset[str],  # held-out content ids (``content_id``)
    rule: SelectionRule,
    labels_length: int,
    emit: Callable[[str, list[dict[str, Any]]], None],
    on_batch: Callable[[int], None] | None = None,
    max_context_tokens: int | None = None,
) -> Counts:
    """Tokenize a block, score it with one proxy call, select positions and ``emit(split, rows)``.

    Rows go out ``ROW_CHUNK`` at a time, each holding at most ``max_context_tokens`` context tokens, so a
    long document's rows take memory linear in its length and are never all materialised at once.
    """
    counts = Counts()
    usable = []
    for doc, enc in zip(docs, _encode(tokenizer, [d.text for d in docs]), strict=True):
        if enc is None:
            counts.documents_skipped["untokenizable"] += 1
        elif len(enc[0]) < 2:
            counts.documents_skipped["too_short"] += 1  # no position t >= 1 to predict
        else:
            usable.append((doc, *enc))
    entropies = scorer.score([ids for _, ids, _ in usable], on_batch) if usable else []
    for (doc, ids, spans), ent in zip(usable, entropies, strict=True):
        counts.tokens_scored += len(ids)
        data = tokenizer.normalize(doc.text).encode("utf-8")
        ent = stored_entropies(ent)
        eligible, skipped = eligible_positions(data, spans, ent)
        split = "val" if content_id(doc.text) in val_ids else "train"  # copies land on one side
        kept, filtered = select_positions(split, eligible, ent, rule)
        counts.positions_skipped.update(skipped + filtered)
        counts.positions_scored[split] += len(eligible)
        if len(kept) == 0:
            counts.documents_skipped["no_positions"] += 1
            continue
        counts.documents_used += 1
        counts.positions_kept[split] += len(kept)
        for i in range(0, len(kept), ROW_CHUNK):
            chunk = kept[i : i + ROW_CHUNK]
            rows = make_rows(doc, data, ids, spans, ent, chunk, labels_length, max_context_tokens)
            counts.kept_by_class.update((split, class_key(r["span_class"])) for r in rows)
            emit(split, rows)
    return counts


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
        for b, block in enumerate(_blocks(_documents(cfg, stats, warn), cfg.block_docs)):
            if b % dist.world_size != dist.rank or b < state.next_block:
                progress.update(len(block))
                continue
            on_batch = lambda n: progress.update(0, tokens=n)  # live tokens/s within a long block
            counts = process_block(
                block, bundle.tokenizer, scorer, val_ids, rule, cfg.labels_length, sink.add, on_batch,
                cfg.max_context_tokens,
            )  # fmt: skip
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


def _summary(out: Path, counts: dict[str, Any], shards: list[dict], already: bool, seconds: float) -> Summary:
    by_split = Counter(s["split"] for s in shards)
    return Summary(str(out), already, counts, {s: by_split.get(s, 0) for s in SPLITS}, seconds)


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
            summary = _summary(out, manifest.counts, manifest.shards, True, 0.0)
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
        summary = _summary(out, counts, shards, False, time.perf_counter() - start)
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
