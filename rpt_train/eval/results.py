"""The tables of ``rpt-train eval``: ``eval.json``'s rows and ``eval_summary.json``.

``result_rows``: per model, mode and bucket (then per span class within each bucket) the accuracy with
its 95% interval and the paired differences with the base; ``run_differences`` (each ``--run-as`` run
minus the RPT run) and ``cpt_differences`` (each run minus the compute-matched baseline), paired on the
same positions; ``eval_summary``: the config, the positions, the power-law fits and the reward curves.
NaN is written as null throughout, so the files stay strict JSON.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rpt_core.runtime.config import config_to_dict
from rpt_train.eval import stats
from rpt_train.eval.classes import CLASS_KEY, Group, bucket_rows, group_verdicts, positions_by_class
from rpt_train.eval.models import RUN_LABEL, ModelEntry, parse_run_as, run_curve
from rpt_train.eval.score import BUCKETS, bucket_verdicts, row_buckets

if TYPE_CHECKING:  # rpt_train.eval.run imports this module
    from rpt_train.eval.run import EvalConfig


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
        "model": e.label,
        "mode": mode,
        "bucket": bucket,
        "n": n,
        "correct": _number(sum(values)),
        "accuracy": sum(values) / n if n else None,
        "ci_low": lo,
        "ci_high": hi,
        "step": e.step,
        "flops": e.flops,
        "path": str(e.path),
        "run": e.run,
    }
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


def eval_summary(cfg: EvalConfig, rows: list[dict[str, Any]], key: dict, table: list[dict]) -> dict[str, Any]:
    """Config, positions, fits per run (``mode/bucket`` for the RPT run, ``LABEL mode/bucket`` for the
    others) and the training reward curves."""
    fits = {}
    table = bucket_rows(table)
    runs = list(dict.fromkeys(r["run"] for r in table if r["run"] is not None))
    for run in runs:
        prefix = "" if run == RUN_LABEL else f"{run} "
        for mode in cfg.modes:
            for bucket in BUCKETS:
                pts = [
                    (r["flops"], r["accuracy"])
                    for r in table
                    if r["run"] == run
                    and r["mode"] == mode
                    and r["bucket"] == bucket
                    and r["flops"]
                    and r["accuracy"] is not None
                ]
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
        "train_reward": run_curve(cfg.run, "reward"),
        "run_rewards": {label: run_curve(d, "reward") for label, d in parse_run_as(cfg.run_as)},
    }
