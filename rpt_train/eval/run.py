"""``rpt-train eval``: a base model, a compute-matched baseline and every checkpoint of an RPT run (and of
other runs, ``--run-as LABEL=RUN``: an RLP run beside the RPT one), on the same held-out positions, with
intervals.

Writes ``OUT/eval.json``: a list of rows ``{model, mode, bucket, n, correct, accuracy, ci_low, ci_high,
step, flops, ...}``, then the same rows per span class within each bucket, which add a ``class`` key
(``rpt_train.eval.classes``; none for shards without classes). Every row but the base's also holds the
paired difference with the base's ``ntp`` row (``diff_vs_base_ntp``, ``diff_ci_low``, ``diff_ci_high``)
and with the base in the row's own mode (``diff_vs_base_same_mode``, ``same_mode_ci_low``,
``same_mode_ci_high``); intervals are 95% (``rpt_train.eval.stats``). ``run`` names the run a checkpoint
belongs to (``rpt`` for ``--run``, LABEL for ``--run-as``; null for the other models).
``OUT/eval_summary.json`` holds the config, the positions per bucket (and per class within each
bucket), the training reward curves and the power-law fits of accuracy against compute per run;
``OUT/eval.png`` the plot and the console a table (``rpt_train.eval.report``). The models come from
``rpt_train.eval.models``, the rows and the summary from ``rpt_train.eval.results``; this module is the
loop over models and the verdict cache.

Per-position verdicts are cached in ``OUT/eval_cache.json`` by model path, weights hash and mode, so a
rerun after new checkpoints (or with a new mode) evaluates only what is missing; any change of settings
or of the selected positions invalidates it. A run checkpoint that its still-training run prunes
(``--keep-last``) while the evaluation reads it is skipped with a note, not reported as corrupt.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpt_core.data.shards import check_tokenizer, checked_manifest, iter_rows, shard_paths
from rpt_core.model.hf_io import weights_sha256
from rpt_core.runtime.config import check, identity_dict, option
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import sha256_bytes, write_json_atomic
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.progress import Progress
from rpt_core.text.chat_template import Chat
from rpt_core.text.pairing import load_checked
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval.models import ModelEntry, discover_models
from rpt_train.eval.report import format_table, plot_report
from rpt_train.eval.results import cpt_differences, eval_summary, result_rows, run_differences
from rpt_train.eval.score import (
    BUCKETS,
    DEFAULT_MODES,
    MODES,
    EvalSettings,
    RolloutOptions,
    evaluate_model,
    row_buckets,
    select_samples,
)
from rpt_train.rl.checkpoint import TRAINER_STATE

# What a model's reasoning must match to be compared with training: taken from a recipe's [train] table
# unless its [eval] table says otherwise (rpt_train.cli.eval).
TRAINING_KEYS = (
    "template",
    "answer_tokens",
    "max_prompt_tokens",
    "max_new_tokens",
    "reward",
    "instruction_file",
    "temperature",
)
CACHE, TABLE, SUMMARY, PLOT = "eval_cache.json", "eval.json", "eval_summary.json", "eval.png"


@dataclass
class EvalConfig(RolloutOptions):
    shards: str = option(
        "shards", "RPT shard directory (from `rpt-data build`).", argument=True, required=True
    )
    base: str | None = option(None, "The model before RPT (plotted at step 0).", identity=False)
    run: str | None = option(
        None,
        "An `rpt-train run` output directory: every checkpoint (the last one is labelled rpt).",
        identity=False,
    )
    run_as: list[str] = option(
        default_factory=list,
        help="LABEL=RUN_DIR: another run's checkpoints, the last labelled LABEL and the others "
        "'LABEL step N' (repeatable; e.g. rlp=runs/demo/rlp).",
        flag="--run-as",
        identity=False,
    )
    cpt: str | None = option(
        None, "The compute-matched baseline (`rpt-train pretrain --init ...`), as cpt.", identity=False
    )
    models: list[str] = option(
        default_factory=list,
        help="Any other HF-format model directory (repeatable).",
        flag="--model",
        identity=False,
    )
    out: str = option("eval", "Where eval.json and eval.png go.", identity=False)
    split: str = option("val", "Shard split to evaluate on.")
    modes: list[str] = option(
        default_factory=lambda: list(DEFAULT_MODES),
        help="ntp (greedy next token), reasoning (greedy training rollout), sampled (repeatable).",
        choices=MODES,
        flag="--mode",
        identity=False,
    )
    max_samples: int | None = option(2000, "Positions per bucket at most, chosen deterministically.", ge=1)
    temperature: float = option(0.8, "Sampled mode: the training temperature (0 = greedy).", ge=0)
    samples: int = option(4, "Sampled mode: seeded rollouts per position (their mean is its verdict).", ge=1)
    seed: int = option(0, "Seed of the position sample and of sampled rollouts.")
    quiet: bool = option(False, "No progress line, table or summary.", identity=False)

    def __post_init__(self) -> None:
        check(self)

    def settings(self, chat: Chat | None = None) -> EvalSettings:
        """Rollout settings for one model; ``chat`` is that model's own chat format (``Tokenizer.chat``)."""
        return self.eval_settings(chat, self.temperature, self.seed, self.samples)


def load_rows(cfg: EvalConfig) -> list[dict[str, Any]]:
    paths = shard_paths(cfg.shards, cfg.split)
    columns = ["doc_id", "position", "context", "label", "boundaries", "entropy", "token_id", "span_class"]
    rows = [r for r in iter_rows(paths, columns) if r["entropy"] >= min(BUCKETS.values())]
    return select_samples(rows, cfg.max_samples, cfg.seed)


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """Hash of the selected positions and their ground truth: rebuilt shards must not reuse old scores."""
    h = [
        (
            r["doc_id"],
            r["position"],
            r["context"],
            bytes(r["label"]).hex(),
            list(r["boundaries"]),
            r["entropy"],
            row_buckets(r),
        )
        for r in rows
    ]
    return sha256_bytes(json.dumps(h, ensure_ascii=False).encode("utf-8"))


@contextlib.contextmanager
def _pruned(entry: ModelEntry, entries: list[ModelEntry]) -> Iterator[None]:
    """A run checkpoint that vanished while it was read (the run, still training, pruned it: --keep-last)
    is dropped from ``entries`` with a note; it is not corrupt. Any other failure stands."""
    try:
        yield
    except (RptError, OSError):
        if entry.run is None or (entry.path / TRAINER_STATE).is_file():
            raise
        entries.remove(entry)
        warn(f"{entry.path}: pruned by its run (--keep-last) while this evaluation ran; skipped")


def run_eval(cfg: EvalConfig) -> list[dict[str, Any]]:
    """Evaluate every model on the same positions; write and return the rows of eval.json.

    OUT is locked meanwhile (``rpt_core.runtime.lock``): one that cannot be written fails before any work."""
    with output_lock(cfg.out, "rpt-train eval"):
        return _run_eval(cfg)


def _run_eval(cfg: EvalConfig) -> list[dict[str, Any]]:
    rows = load_rows(cfg)
    if not rows:
        raise RptError(f"{cfg.shards}: no {cfg.split} positions with entropy >= {min(BUCKETS.values())}")
    manifest = checked_manifest(cfg.shards, shard_paths(cfg.shards, cfg.split), warn, cfg.quiet)
    cfg.settings()  # a bad template option fails here, before any model is loaded
    out = Path(cfg.out)
    key = {"config": _cache_key(cfg), "data_fingerprint": rows_fingerprint(rows)}
    cache = _load_cache(out / CACHE, key)
    entries = discover_models(cfg)
    for entry in list(entries):
        with _pruned(entry, entries):
            fp = weights_sha256(entry.path)
        if entry not in entries:
            continue
        cached = cache.setdefault(f"{entry.path}|{fp}", {})
        missing = [m for m in cfg.modes if m not in cached]
        if missing:
            t0 = time.perf_counter()
            with _pruned(entry, entries):
                tok = Tokenizer.load(entry.path)
                check_tokenizer(manifest, tok, f"{entry.path}'s tokenizer")
                model = load_checked(entry.path, tok, str(entry.path), dtype=cfg.dtype, device=cfg.device)
            if entry not in entries:
                continue
            progress = Progress(
                len(rows) * len(missing), unit="positions", desc=f"eval {entry.label}", quiet=cfg.quiet
            )
            cached.update(evaluate_model(model, tok, rows, cfg.settings(tok.chat), missing, progress))
            progress.close()
            del model
            # Saved after every model: an interrupted evaluation keeps what it finished.
            write_json_atomic(out / CACHE, {**key, "models": cache})
            if not cfg.quiet:
                seconds = time.perf_counter() - t0
                print(f"evaluated {entry.label} ({entry.path}) in {seconds:.1f} s", flush=True)
        entry.verdicts = {m: cached[m] for m in cfg.modes}
    table = result_rows(rows, entries)
    summary = eval_summary(cfg, rows, key, table)
    summary["vs_rpt"] = run_differences(rows, entries)
    summary["vs_cpt"] = cpt_differences(rows, entries)
    write_json_atomic(out / TABLE, table)
    write_json_atomic(out / SUMMARY, summary)
    if not cfg.quiet:
        print(format_table(table, summary))
    plot_path = plot_report(table, summary, out / PLOT)
    if plot_path and not cfg.quiet:
        print(f"wrote {out / TABLE}, {out / SUMMARY} and {plot_path}")
    return table


def _cache_key(cfg: EvalConfig) -> dict[str, Any]:
    # Fields marked identity=False change no verdict: the model list, where the output goes, chattiness,
    # the modes.
    return identity_dict(cfg)


def _load_cache(path: Path, key: dict) -> dict[str, dict[str, list[float]]]:
    """Earlier verdicts reusable for these settings and positions (else nothing)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    same = old.get("config") == key["config"] and old.get("data_fingerprint") == key["data_fingerprint"]
    return old.get("models", {}) if same else {}
