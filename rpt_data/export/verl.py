"""``rpt-data export verl``: RPT shards -> verl's RL dataset (``train.parquet``, ``val.parquet``) + manifest.

verl (Ray + FSDP + vLLM, the RPT paper's own stack) trains from Parquet rows with ``data_source``,
``prompt`` (chat messages), ``ability``, ``reward_model`` and ``extra_info`` columns, and scores
completions with a custom ``compute_score`` (``rpt_train.verl_reward``). One shard row becomes one verl
row (``rpt_data.export.verl_rows.verl_row``, beside the schema and the checks):

- ``prompt``: for a chat template, one user message holding the template's instruction and the context
  (verl renders it with the model's own chat template; for Qwen3 that is exactly ``template.render``).
  For ``plain``, one user message holding the raw context, which verl must render verbatim: run it with
  ``actor_rollout_ref.model.custom_chat_template`` = ``RAW_CHAT_TEMPLATE`` (content only, no turn
  markers) and ``data.max_response_length`` = ``answer_tokens``; ``pipelines/verl-grpo.sh`` does both.
- ``reward_model.ground_truth``: the label as text. A label that is not valid UTF-8 (L tokens can end
  inside a character) is shown with U+FFFD and counted; the reward compares ``extra_info.label_b64``.
- ``extra_info``: split, index, doc_id, position, entropy, the exact label bytes (``label_b64``),
  ``boundaries``, and what ``compute_score`` needs to score like ``rpt-train``: ``template``,
  ``reward``, ``format_penalty``; and the label's ``span_class`` (null for shards built without spans).

With a tokenizer (``--tokenizer``, else the one the shards' manifest names when that file exists) each
context is left-truncated to ``max_prompt_tokens`` tokens exactly as ``rpt-train`` rollouts do
(``rpt_core.text.tokenizer.keep_last_tokens``), the rendered prompts are counted so the manifest can tell
verl's ``data.max_prompt_length``, and the tokenizer is checked against the shards'.

Rows stream through in row groups (``ROW_GROUP_SIZE``) into a temp file renamed into place, so memory is
bounded and an interrupted export leaves no partial file. ``manifest.json`` is written last (an export
that fails leaves none): the files' rows and sha256, counts, the template and verl settings, and the
source build's identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.data.shards import (
    MANIFEST_NAME,
    ROW_GROUP_SIZE,
    SPLITS,
    Manifest,
    check_context_cap,
    check_schema,
    check_tokenizer,
    iter_rows,
    shard_paths,
)
from rpt_core.reward import REWARDS
from rpt_core.runtime.config import check, config_to_dict, option
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import atomic_path, sha256_file, write_json_atomic
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.progress import Progress
from rpt_core.text.prompts import TEMPLATES, PromptTemplate, load_template
from rpt_data import __version__
from rpt_data.export.verl_rows import (
    EXPORT_VERSION,
    FORMAT,
    SCHEMA,
    check_think_end,
    check_verl_can_stop,
    label_text,
    verl_row,
    verl_settings,
)

if TYPE_CHECKING:
    from rpt_core.text.tokenizer import Tokenizer

SOURCE_COLUMNS = ("doc_id", "position", "context", "label", "boundaries", "entropy", "span_class")
# [train] settings of a recipe that decide the prompts and the reward: the export inherits them.
TRAINING_KEYS = (
    "template",
    "instruction_file",
    "answer_tokens",
    "max_prompt_tokens",
    "reward",
    "format_penalty",
)


@dataclass
class ExportConfig:
    shards: str = option("", "RPT shard directory (from `rpt-data build`).", argument=True, required=True)
    out: str = option(
        "", "Output directory: train.parquet, val.parquet, manifest.json.", argument=True, required=True
    )
    template: str = option(
        "qwen3-think", "Prompt template (as `rpt-train run --template`).", choices=TEMPLATES
    )
    instruction_file: str | None = option(None, "Text file replacing the template's instruction.")
    answer_tokens: int = option(
        1, "plain: the prediction is the first N generated tokens (verl: data.max_response_length).", ge=1
    )
    tokenizer: str | None = option(
        None,
        "The policy's tokenizer.json (or its directory): contexts are left-truncated to "
        "--max-prompt-tokens as rpt-train does. Default: the one named by the shards' manifest, if present.",
    )
    max_prompt_tokens: int = option(
        1024, "Contexts are left-truncated to this many tokens (needs a tokenizer).", ge=1
    )
    reward: str = option("prefix", "Reward of an extracted prediction (stored per row).", choices=REWARDS)
    format_penalty: float = option(0.0, "Reward of a completion with no extractable prediction.")
    quiet: bool = option(False, "No progress line and no summary.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class SplitStats:
    rows: int = 0
    labels_not_utf8: int = 0  # ground_truth shows U+FFFD; label_b64 holds the exact bytes
    contexts_truncated: int = 0
    longest_prompt_tokens: int | None = None  # the longest rendered prompt, in tokens (with a tokenizer)
    source_shards: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- exporting


def _batches(paths: Sequence[Path], size: int = ROW_GROUP_SIZE) -> Iterator[list[dict[str, Any]]]:
    rows = iter_rows(paths, columns=SOURCE_COLUMNS, batch_size=size)
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _num_rows(paths: Iterable[Path]) -> int:
    """Rows of the shards from their footers; an unreadable or foreign file is a one-line error here."""
    total = 0
    for path in paths:
        check_schema(path)
        total += pq.ParquetFile(path).metadata.num_rows
    return total


def _tokenizer(cfg: ExportConfig, manifest: Manifest | None) -> Tokenizer | None:
    from rpt_core.text.tokenizer import Tokenizer

    path = cfg.tokenizer
    if path is None and manifest is not None and manifest.tokenizer and Path(manifest.tokenizer).is_file():
        path = manifest.tokenizer
    return None if path is None else Tokenizer.load(path)


def _prompts(
    batch: list[dict[str, Any]], template: PromptTemplate, tok: Tokenizer | None, max_tokens: int
) -> tuple[list[str], int, int | None]:
    """(contexts as prompted, how many were truncated, longest rendered prompt in tokens or None)."""
    contexts = [r["context"] for r in batch]
    if tok is None:
        return contexts, 0, None
    from rpt_core.text.tokenizer import keep_last_tokens

    kept = keep_last_tokens(tok, contexts, max_tokens)
    cut = sum(k is not c for k, c in zip(kept, contexts, strict=True))
    lengths = [len(ids) for ids in tok.encode_batch([template.render(c) for c in kept])]
    return kept, cut, max(lengths, default=None)


def _write_split(
    paths: Sequence[Path],
    dest: Path,
    split: str,
    cfg: ExportConfig,
    template: PromptTemplate,
    tok: Tokenizer | None,
    progress: Progress,
) -> SplitStats:
    stats = SplitStats(source_shards=[str(p) for p in paths])
    with atomic_path(dest) as tmp:
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
            for batch in _batches(paths):
                contexts, cut, longest = _prompts(batch, template, tok, cfg.max_prompt_tokens)
                rows = []
                for row, context in zip(batch, contexts, strict=True):
                    rows.append(
                        verl_row(row, split, stats.rows, template, cfg.reward, cfg.format_penalty, context)
                    )
                    stats.labels_not_utf8 += not label_text(bytes(row["label"]))[1]
                    stats.rows += 1
                writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), row_group_size=ROW_GROUP_SIZE)
                stats.contexts_truncated += cut
                if longest is not None:
                    stats.longest_prompt_tokens = max(stats.longest_prompt_tokens or 0, longest)
                progress.update(len(batch))
    return stats


def _split_paths(shards: Path) -> dict[str, list[Path]]:
    """Shards per split; a directory without train/ and val/ (or a single file) is all train."""
    has_splits = shards.is_dir() and any((shards / s).is_dir() for s in SPLITS)
    return {
        "train": shard_paths(shards, "train"),
        "val": shard_paths(shards, "val", required=False) if has_splits else [],
    }


def _source_identity(shards: Path, manifest: Manifest | None) -> dict[str, Any]:
    if manifest is None:
        return {"shards": str(shards), "manifest": None}
    raw = (shards / MANIFEST_NAME).read_bytes()
    return {
        "shards": str(shards),
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "schema_version": manifest.schema_version,
        "created_by": manifest.created_by,
        "tokenizer_sha256": manifest.tokenizer_sha256,
        "tokenizer_fingerprint": manifest.tokenizer_fingerprint,
        "tokenizer_base_vocab_fingerprint": manifest.tokenizer_base_vocab_fingerprint,
        "proxy": manifest.proxy,
        "labels_length": manifest.labels_length,
        "entropy_threshold": manifest.entropy_threshold,
        "shard_sha256": {s["path"]: s.get("sha256") for s in manifest.shards if "path" in s},
    }


def export_verl(cfg: ExportConfig) -> str:
    """Write ``OUT/train.parquet``, ``OUT/val.parquet`` (when the shards have val rows) and
    ``OUT/manifest.json``; returns a short summary."""
    shards, out = Path(cfg.shards), Path(cfg.out)
    template = load_template(cfg.template, cfg.instruction_file, cfg.answer_tokens)
    check_verl_can_stop(template)
    paths = _split_paths(shards)
    manifest = Manifest.read(shards) if shards.is_dir() else None
    tok = _tokenizer(cfg, manifest)
    if tok is not None:
        check_tokenizer(manifest, tok, who=f"tokenizer {tok.source}")
        check_think_end(template, tok)
        check_context_cap(manifest, cfg.max_prompt_tokens, warn)
    if out.resolve() == shards.resolve():
        raise RptError(f"{out}: write the export beside the shards, not into their directory")
    totals = {split: _num_rows(p) for split, p in paths.items()}
    if totals["train"] == 0:
        raise RptError(f"{shards}: the train shards hold no rows")
    with output_lock(out, "rpt-data export verl"):  # one writer; an unwritable OUT fails here
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # present again only once every file is written

        stats: dict[str, SplitStats] = {}
        files: dict[str, Any] = {}
        with Progress(sum(totals.values()), unit="rows", desc="export verl", quiet=cfg.quiet) as progress:
            for split, split_paths in paths.items():
                dest = out / f"{split}.parquet"
                if totals[split] == 0:
                    dest.unlink(missing_ok=True)  # a stale file of an earlier export would not match
                    continue
                stats[split] = _write_split(split_paths, dest, split, cfg, template, tok, progress)
                files[split] = {"path": dest.name, "rows": stats[split].rows, "sha256": sha256_file(dest)}

        write_json_atomic(
            out / MANIFEST_NAME,
            {
                "format": FORMAT,
                "export_version": EXPORT_VERSION,
                "created_by": f"rpt-data {__version__} export verl",
                "config": config_to_dict(cfg),
                "template": {
                    "name": template.name,
                    "thinks": template.thinks,
                    "instruction": getattr(template, "instruction", None),
                    "answer_tokens": cfg.answer_tokens if template.max_new_tokens else None,
                },
                "tokenizer": None
                if tok is None
                else {
                    "path": tok.source,
                    "fingerprint": tok.fingerprint,
                    "base_vocab_fingerprint": tok.base_vocab_fingerprint,
                },
                "max_prompt_tokens": cfg.max_prompt_tokens if tok is not None else None,
                "verl": verl_settings(template, _longest(stats)),
                "files": files,
                "counts": {split: _counts(s) for split, s in stats.items()},
                "source": _source_identity(shards, manifest),
            },
        )
        return _summary(out, stats, tok, cfg)


def _longest(stats: dict[str, SplitStats]) -> int | None:
    values = [s.longest_prompt_tokens for s in stats.values() if s.longest_prompt_tokens is not None]
    return max(values, default=None)


def _counts(s: SplitStats) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(s).items() if k != "source_shards"} | {
        "source_shards": len(s.source_shards)
    }


def _summary(out: Path, stats: dict[str, SplitStats], tok: Tokenizer | None, cfg: ExportConfig) -> str:
    lines = [f"{out / (split + '.parquet')}: {s.rows:,} rows" for split, s in stats.items()]
    if "val" not in stats:
        lines.append("no val rows: validate on train.parquet or not at all (verl needs data.val_files)")
    bad = sum(s.labels_not_utf8 for s in stats.values())
    if bad:
        lines.append(
            f"{bad:,} labels are not valid UTF-8: ground_truth shows U+FFFD, the reward uses label_b64"
        )
    if tok is None:
        lines.append(
            "no tokenizer: contexts are not truncated and prompts not counted; pass --tokenizer to do both"
        )
    else:
        cut = sum(s.contexts_truncated for s in stats.values())
        longest = _longest(stats) or 0
        lines.append(
            f"{cut:,} contexts left-truncated to {cfg.max_prompt_tokens} tokens; longest prompt {longest:,} "
            f"tokens (verl: data.max_prompt_length >= {longest})"
        )
    lines.append(f"manifest: {out / MANIFEST_NAME}")
    return "\n".join(lines)
