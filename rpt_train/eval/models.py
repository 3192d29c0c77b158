"""Which models ``rpt-train eval`` covers, and what their runs recorded.

The base (step 0), the compute-matched baseline (``cpt``), every checkpoint of the RPT run (the last one
labelled ``rpt``, the others ``step N``), every checkpoint of each ``--run-as LABEL=RUN`` run (``LABEL``,
``LABEL step N``) and any other ``--model`` directory: one ``ModelEntry`` each, with its training step and
compute where known. ``run_curve`` reads a run's metrics.jsonl (compute per step, reward curves).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rpt_core.runtime.errors import RptError
from rpt_train.rl.checkpoint import checkpoint_steps

if TYPE_CHECKING:  # rpt_train.eval.run imports this module
    from rpt_train.eval.run import EvalConfig

RUN_LABEL = "rpt"  # the --run's last checkpoint and its series
RESERVED_LABELS = ("base", "cpt", RUN_LABEL)


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
    flops = dict(run_curve(run_dir, "train_flops"))
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


def _pretrain_flops(model_dir: Path) -> float | None:
    """Training compute recorded by ``rpt-train pretrain`` (its pretrain_summary.json), if any."""
    try:
        value = json.loads((model_dir / "pretrain_summary.json").read_text(encoding="utf-8")).get(
            "train_flops"
        )
    except (OSError, json.JSONDecodeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def run_curve(run: str | None, key: str) -> list[tuple[int, float]]:
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
