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
``OUT/eval.png`` the plot and the console a table (``rpt_train.eval.report``).

Per-position verdicts are cached in ``OUT/eval_cache.json`` by model path, weights hash and mode, so a
rerun after new checkpoints (or with a new mode) evaluates only what is missing; any change of settings
or of the selected positions invalidates it. A run checkpoint that its still-training run prunes
(``--keep-last``) while the evaluation reads it is skipped with a note, not reported as corrupt.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpt_core.data.shards import check_tokenizer, checked_manifest, iter_rows, shard_paths
from rpt_core.model.hf_io import weights_sha256
from rpt_core.runtime.config import check, config_to_dict, option
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import sha256_bytes, write_json_atomic
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.progress import Progress
from rpt_core.text.chat_template import Chat
from rpt_core.text.pairing import load_checked
from rpt_core.text.prompts import load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval import stats
from rpt_train.eval.classes import CLASS_KEY, Group, bucket_rows, group_verdicts, positions_by_class
from rpt_train.eval.report import format_table, plot_report
from rpt_train.eval.score import (
    BUCKETS,
    DEFAULT_MODES,
    MODES,
    EvalSettings,
    RolloutOptions,
    bucket_verdicts,
    evaluate_model,
    row_buckets,
    select_samples,
)
from rpt_train.rl.checkpoint import TRAINER_STATE, checkpoint_steps

# What a model's reasoning must match to be compared with training: taken from a recipe's [train] table
# unless its [eval] table says otherwise (rpt_train.cli.eval).
TRAINING_KEYS = (
    "template", "answer_tokens", "max_prompt_tokens", "max_new_tokens", "reward", "instruction_file",
    "temperature",
)  # fmt: skip
# Settings that do not change a verdict: the model list, where the output goes, chattiness, the modes.
_NOT_CACHE_KEY = ("base", "run", "run_as", "cpt", "models", "out", "quiet", "modes")
RUN_LABEL = "rpt"  # the --run's last checkpoint and its series
RESERVED_LABELS = ("base", "cpt", RUN_LABEL)
CACHE, TABLE, SUMMARY, PLOT = "eval_cache.json", "eval.json", "eval_summary.json", "eval.png"


@dataclass
class EvalConfig(RolloutOptions):
    shards: str = option(
        "shards", "RPT shard directory (from `rpt-data build`).", argument=True, required=True
    )
    base: str | None = option(None, "The model before RPT (plotted at step 0).")
    run: str | None = option(
        None, "An `rpt-train run` output directory: every checkpoint (the last one is labelled rpt)."
    )
    run_as: list[str] = option(
        default_factory=list,
        help="LABEL=RUN_DIR: another run's checkpoints, the last labelled LABEL and the others "
        "'LABEL step N' (repeatable; e.g. rlp=runs/demo/rlp).",
        flag="--run-as",
    )
    cpt: str | None = option(None, "The compute-matched baseline (`rpt-train pretrain --init ...`), as cpt.")
    models: list[str] = option(
        default_factory=list, help="Any other HF-format model directory (repeatable).", flag="--model"
    )
    out: str = option("eval", "Where eval.json and eval.png go.")
    split: str = option("val", "Shard split to evaluate on.")
    modes: list[str] = option(
        default_factory=lambda: list(DEFAULT_MODES),
        help="ntp (greedy next token), reasoning (greedy training rollout), sampled (repeatable).",
        choices=MODES,
        flag="--mode",
    )
    max_samples: int | None = option(2000, "Positions per bucket at most, chosen deterministically.", ge=1)
    temperature: float = option(0.8, "Sampled mode: the training temperature (0 = greedy).", ge=0)
    samples: int = option(4, "Sampled mode: seeded rollouts per position (their mean is its verdict).", ge=1)
    seed: int = option(0, "Seed of the position sample and of sampled rollouts.")
    quiet: bool = option(False, "No progress line, table or summary.")

    def __post_init__(self) -> None:
        check(self)

    def settings(self, chat: Chat | None = None) -> EvalSettings:
        """Rollout settings for one model; ``chat`` is that model's own chat format (``Tokenizer.chat``)."""
        template = load_template(self.template, self.instruction_file, self.answer_tokens, chat)
        return EvalSettings(template, self.max_prompt_tokens, self.max_new_tokens, self.temperature,
                            self.batch_size, self.seed, self.reward, self.samples)  # fmt: skip


@dataclass
class ModelEntry:
    label: str  # base, cpt, rpt, step N, LABEL, LABEL step N, or a directory name
    path: Path
    step: int | None = None  # training step (0 for the base)
    flops: float | None = None  # training compute spent since the base
    verdicts: dict[str, list[float]] = field(default_factory=dict)  # mode -> one verdict per position
    run: str | None = None  # the run this checkpoint belongs to: rpt (--run) or a --run-as LABEL


def parse_run_as(items: list[str]) -> list[tuple[str, str]]:
    """``["rlp=runs/x", ...]`` -> ``[("rlp", "runs/x"), ...]``; labels must be new and distinct."""
    out: list[tuple[str, str]] = []
    for item in items:
        label, sep, run_dir = item.partition("=")
        label = label.strip()
        if not sep or not label or not run_dir:
            raise RptError(f"--run-as takes LABEL=RUN_DIR, got {item!r}")
        taken = [*RESERVED_LABELS, *(x for x, _ in out)]
        if label in taken or label.startswith("step "):
            raise RptError(f"--run-as label {label!r} is taken (taken: {', '.join(taken)}, 'step N')")
        out.append((label, run_dir))
    return out


def run_entries(run_dir: str, label: str) -> list[ModelEntry]:
    """Every checkpoint of a run, oldest first: the last one labelled ``label``, the others by step."""
    steps = checkpoint_steps(Path(run_dir))
    if not steps:
        where = Path(run_dir) / "checkpoints"
        raise RptError(f"{run_dir}: no checkpoints under {where} (a complete one holds trainer_state.pt)")
    flops = dict(_run_curve(run_dir, "train_flops"))
    prefix = "" if label == RUN_LABEL else f"{label} "  # the RPT run's steps keep their short labels
    names = [f"{prefix}step {step}" for step, _ in steps[:-1]] + [label]
    return [
        ModelEntry(name, path, step, flops.get(step), run=label)
        for name, (step, path) in zip(names, steps, strict=True)
    ]


def discover_models(cfg: EvalConfig) -> list[ModelEntry]:
    """The base, the compute-matched baseline, each run checkpoint (the last as ``rpt``), the checkpoints of
    every ``--run-as`` run, and extras."""
    found: list[ModelEntry] = []
    if cfg.base:
        found.append(ModelEntry("base", Path(cfg.base), 0, 0.0))
    if cfg.cpt:
        found.append(ModelEntry("cpt", Path(cfg.cpt), None, _pretrain_flops(Path(cfg.cpt))))
    if cfg.run:
        found += run_entries(cfg.run, RUN_LABEL)
    for label, run_dir in parse_run_as(cfg.run_as):
        found += run_entries(run_dir, label)
    found += [ModelEntry(Path(m).name, Path(m)) for m in cfg.models]
    if not found:
        raise RptError("nothing to evaluate: give --base, --run, --run-as, --cpt or --model")
    labels = [e.label for e in found]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise RptError(f"two models are labelled {twice[0]!r}: give them distinct names")
    return found


def load_rows(cfg: EvalConfig) -> list[dict[str, Any]]:
    paths = shard_paths(cfg.shards, cfg.split)
    columns = ["doc_id", "position", "context", "label", "boundaries", "entropy", "token_id", "span_class"]
    rows = [r for r in iter_rows(paths, columns) if r["entropy"] >= min(BUCKETS.values())]
    return select_samples(rows, cfg.max_samples, cfg.seed)


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """Hash of the selected positions and their ground truth: rebuilt shards must not reuse old scores."""
    h = [(r["doc_id"], r["position"], r["context"], bytes(r["label"]).hex(), list(r["boundaries"]),
          r["entropy"], row_buckets(r)) for r in rows]  # fmt: skip
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
    summary = _summary(cfg, rows, key, table)
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


def result_rows(rows: list[dict[str, Any]], entries: list[ModelEntry]) -> list[dict[str, Any]]:
    """One row per model, mode and bucket, with intervals and paired differences against the base; then
    the same per model, mode, bucket and span class (``rpt_train.eval.classes``), marked by a ``class``."""
    by_group = {e.label: {m: group_verdicts(rows, v) for m, v in e.verdicts.items()} for e in entries}
    base = by_group.get("base")
    table = []
    for with_class in (False, True):  # the bucket rows first, exactly as before classes existed
        for e in entries:
            for mode, grouped in by_group[e.label].items():
                for group, values in grouped.items():
                    if (group[1] is not None) == with_class:
                        table.append(_result_row(e, mode, group, values, base))
    return table


def _result_row(e: ModelEntry, mode: str, group: Group, values: list[float], base: dict | None) -> dict:
    bucket, cls = group
    n = len(values)
    lo, hi = stats.accuracy_interval(values)
    row: dict[str, Any] = {
        "model": e.label, "mode": mode, "bucket": bucket, "n": n, "correct": _number(sum(values)),
        "accuracy": sum(values) / n if n else None, "ci_low": lo, "ci_high": hi,
        "step": e.step, "flops": e.flops, "path": str(e.path), "run": e.run,
    }  # fmt: skip
    if cls is not None:
        row[CLASS_KEY] = cls
    if e.label != "base":
        for name, ref_mode in (("diff_vs_base_ntp", "ntp"), ("diff_vs_base_same_mode", mode)):
            ref = (base or {}).get(ref_mode, {}).get(group)
            diff = stats.paired_difference(values, ref) if ref is not None else (None,) * 3
            lo_key, hi_key = _DIFF_KEYS[name]
            row.update({name: diff[0], lo_key: diff[1], hi_key: diff[2]})
    return {k: _finite(v) for k, v in row.items()}


def run_differences(rows: list[dict[str, Any]], entries: list[ModelEntry]) -> dict[str, dict[str, Any]]:
    """Each ``--run-as`` run's last checkpoint minus the RPT run's, paired on the same positions:
    ``{LABEL: {"mode/bucket": {"diff", "ci_low", "ci_high"}}}`` (the RLP paper's RPT-vs-RLP comparison).
    Empty without both runs."""
    finals = {e.run: e for e in entries if e.run is not None and e.label == e.run}
    ref = finals.pop(RUN_LABEL, None)
    out: dict[str, dict[str, Any]] = {}
    for label, entry in finals.items() if ref is not None else ():
        cells = {}
        for mode in [m for m in ref.verdicts if m in entry.verdicts]:
            ours = bucket_verdicts(rows, entry.verdicts[mode])
            theirs = bucket_verdicts(rows, ref.verdicts[mode])
            for bucket in BUCKETS:
                diff, lo, hi = map(_finite, stats.paired_difference(ours[bucket], theirs[bucket]))
                cells[f"{mode}/{bucket}"] = {"diff": diff, "ci_low": lo, "ci_high": hi}
        out[label] = cells
    return out


def cpt_differences(rows: list[dict[str, Any]], entries: list[ModelEntry]) -> dict[str, dict[str, Any]]:
    """Each run's last checkpoint (the RPT run and every ``--run-as``), in each mode, minus the
    compute-matched baseline's next-token verdicts, paired on the same positions: the comparison that says
    whether RL beat spending its compute on next-token training. ``{RUN: {"mode/bucket": {"diff", "ci_low",
    "ci_high"}}}``; empty without ``--cpt``."""
    cpt = next((e for e in entries if e.label == "cpt"), None)
    if cpt is None or "ntp" not in cpt.verdicts:
        return {}
    theirs = bucket_verdicts(rows, cpt.verdicts["ntp"])
    out: dict[str, dict[str, Any]] = {}
    for entry in (e for e in entries if e.run is not None and e.label == e.run):
        cells = {}
        for mode, verdicts in entry.verdicts.items():
            ours = bucket_verdicts(rows, verdicts)
            for bucket in BUCKETS:
                diff, lo, hi = map(_finite, stats.paired_difference(ours[bucket], theirs[bucket]))
                cells[f"{mode}/{bucket}"] = {"diff": diff, "ci_low": lo, "ci_high": hi}
        out[entry.run] = cells
    return out


_DIFF_KEYS = {
    "diff_vs_base_ntp": ("diff_ci_low", "diff_ci_high"),
    "diff_vs_base_same_mode": ("same_mode_ci_low", "same_mode_ci_high"),
}


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _finite(v: Any) -> Any:
    """NaN as None: eval.json stays strict JSON (jq and polars reject NaN)."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _summary(cfg: EvalConfig, rows: list[dict[str, Any]], key: dict, table: list[dict]) -> dict[str, Any]:
    """Config, positions, fits per run (``mode/bucket`` for the RPT run, ``LABEL mode/bucket`` for the
    others) and the training reward curves."""
    fits = {}
    table = bucket_rows(table)
    runs = list(dict.fromkeys(r["run"] for r in table if r["run"] is not None))
    for run in runs:
        prefix = "" if run == RUN_LABEL else f"{run} "
        for mode in cfg.modes:
            for bucket in BUCKETS:
                pts = [(r["flops"], r["accuracy"]) for r in table
                       if r["run"] == run and r["mode"] == mode and r["bucket"] == bucket
                       and r["flops"] and r["accuracy"] is not None]  # fmt: skip
                fit = stats.power_law([c for c, _ in pts], [a for _, a in pts])
                if fit is not None:
                    fits[f"{prefix}{mode}/{bucket}"] = fit
    return {
        "config": config_to_dict(cfg),
        "positions": {b: sum(1 for r in rows if b in row_buckets(r)) for b in BUCKETS},
        "positions_by_class": positions_by_class(rows),
        "data_fingerprint": key["data_fingerprint"],
        "buckets": BUCKETS,
        "power_law": fits,
        "train_reward": _run_curve(cfg.run, "reward"),
        "run_rewards": {label: _run_curve(d, "reward") for label, d in parse_run_as(cfg.run_as)},
    }


def _cache_key(cfg: EvalConfig) -> dict[str, Any]:
    return {k: v for k, v in config_to_dict(cfg).items() if k not in _NOT_CACHE_KEY}


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


def _pretrain_flops(model_dir: Path) -> float | None:
    """Training compute recorded by ``rpt-train pretrain`` (its pretrain_summary.json), if any."""
    try:
        value = json.loads((model_dir / "pretrain_summary.json").read_text(encoding="utf-8")).get(
            "train_flops"
        )
    except (OSError, json.JSONDecodeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _run_curve(run: str | None, key: str) -> list[tuple[int, float]]:
    """(step, value of ``key``) from the run's metrics.jsonl, if there is one.

    The metrics logger writes non-finite values as null and a crash can cut the last line short: such
    lines (and lines without a number under ``key``) are left out rather than failing the report.
    """
    if not run or not (Path(run) / "metrics.jsonl").is_file():
        return []
    points = []
    for line in (Path(run) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            continue
        value = rec.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((rec["step"], float(value)))
    return points
