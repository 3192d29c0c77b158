"""Accuracy on one entropy bucket of a finished `rpt-train eval`, split by where each position sits.

A stand-in until shards carry a span class: the class is read off the context of a drill document,
  given        in the problem statement (no blank line yet): operand digits no thought can predict;
  after_eq     right after `=` (or `$`): the first digit of a result;
  in_result    inside a result number (digits after `= `);
  elsewhere    anywhere else in the solution.
Usage: python pipelines/hard_by_class.py RUN/shards RUN/eval [--bucket hard] [--max-samples 1000]
Prints one line per model and mode (the cache's verdicts, the same positions as the table), and the paired
difference against the base's ntp per class (--ref cpt/ntp: against another model and mode).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from types import SimpleNamespace

from rpt_train.eval import stats
from rpt_train.eval.run import load_rows
from rpt_train.eval.score import row_buckets

CLASSES = ("given", "after_eq", "in_result", "elsewhere")


def span_class(context: str) -> str:
    if "\n\n" not in context:
        return "given"
    if re.search(r"[=$]\s*$", context):
        return "after_eq"
    if re.search(r"= \d+$", context):
        return "in_result"
    return "elsewhere"


def label_of(key: str, run_root: Path) -> str:
    path = Path(key.split("|")[0])
    if path.name.startswith("step"):
        return f"{path.parent.parent.name} {path.name}"
    return path.name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("eval_dir")
    ap.add_argument("--bucket", default="hard")
    ap.add_argument("--max-samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--split", default="val", help="val (the evaluation) or train (pass rates of training positions)"
    )
    ap.add_argument("--ref", default="base/ntp", help="LABEL/MODE the paired differences are against")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cache = json.loads((Path(a.eval_dir) / "eval_cache.json").read_text())
    rows = load_rows(SimpleNamespace(shards=a.shards, split=a.split, max_samples=a.max_samples, seed=a.seed))
    idx = [i for i, r in enumerate(rows) if a.bucket in row_buckets(r)]
    cls = {i: span_class(rows[i]["context"]) for i in idx}
    models = {label_of(k, Path(a.eval_dir)): v for k, v in cache["models"].items()}
    ref_label, ref_mode = a.ref.rsplit("/", 1)
    base = models.get(ref_label, {}).get(ref_mode)
    counts = {c: sum(1 for i in idx if cls[i] == c) for c in CLASSES}
    print(f"{a.bucket}: {len(idx)} positions: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    out = {}
    for name, modes in models.items():
        for mode, verdicts in modes.items():
            cells = []
            for c in CLASSES + ("all",):
                sel = [i for i in idx if c == "all" or cls[i] == c]
                acc = 100 * sum(verdicts[i] for i in sel) / max(1, len(sel))
                d = (
                    stats.paired_difference([verdicts[i] for i in sel], [base[i] for i in sel])
                    if base
                    else None
                )
                cells.append((c, len(sel), acc, d))
                out[f"{name}/{mode}/{c}"] = {"n": len(sel), "acc": acc, "diff": d}
            print(
                f"{name:22s} {mode:9s} "
                + "  ".join(
                    f"{c} {acc:5.1f} ({100 * d[0]:+.1f} [{100 * d[1]:+.1f},{100 * d[2]:+.1f}])"
                    if d
                    else f"{c} {acc:5.1f}"
                    for c, n, acc, d in cells
                )
            )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
