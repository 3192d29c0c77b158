"""The pass-rate summary: per group of positions (all, each entropy bucket, each span class when the shards
carry ``span_class``) the gates of the issue "RPT that pays", and a console table of them.

The ``all`` row is what ``make demo`` prints before its RL step: the base's next-token accuracy (greedy
next token is the true one), its mean probability of the true token, its greedy reasoning pass@1 and its
sampled pass@1 (95% interval) and pass@k, and the shares of positions whose k samples were all wrong or all
right (neither teaches GRPO anything: a group of equal rewards has no advantage). ``preview`` counts what
a band and margin would keep, so the table already says what ``rpt-train run --pass-rates`` will train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rpt_train.eval.score import BUCKETS, buckets_of
from rpt_train.passrate.estimate import Band, keep, summarise

PREVIEW = {  # label -> band: the default band, then the same with margins over p_true
    "0 < pass@1 < 1": Band(),
    "... and pass@1 - p_true >= 0": Band(margin=0.0),
    "... and pass@1 - p_true >= 0.1": Band(margin=0.1),
}


def groups(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{group: its records}: ``all``, the nested entropy buckets, then ``class <name>`` per span class."""
    out: dict[str, list[dict[str, Any]]] = {"all": list(records)}
    out.update({name: [r for r in records if name in buckets_of(r["entropy"])] for name in BUCKETS})
    classes = sorted({r["span_class"] for r in records if r.get("span_class") is not None})
    out.update({f"class {c}": [r for r in records if r.get("span_class") == c] for c in classes})
    return out


def preview(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """{band label: positions it keeps} for the bands of ``PREVIEW``."""
    return {label: sum(keep(b, r["pass1"], r["p_true"]) for r in records) for label, b in PREVIEW.items()}


def summary_table(records: Sequence[dict[str, Any]], k: int) -> dict[str, dict[str, Any]]:
    """{group: ``rpt_train.passrate.estimate.summarise`` of its records}."""
    return {name: summarise(rows, k) for name, rows in groups(records).items()}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The first cell left-aligned, the others right-aligned."""
    return cells[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))


def format_table(table: dict[str, dict[str, Any]], k: int, kept: dict[str, int]) -> str:
    """The summary as a console table (percentages) followed by the band preview."""
    head = [
        "group",
        "n",
        "ntp",
        "p_true",
        "greedy",
        "pass@1 [95% interval]",
        f"pass@{k}",
        "all wrong",
        "all right",
    ]
    widths = [16, 7, 7, 8, 8, 23, 8, 10, 10]
    lines = [
        f"pass rates before RL, % (k = {k} samples per position)",
        _line(head, widths),
    ]
    lines.append("-" * len(lines[-1]))
    for name, s in table.items():
        label = f"{name} >={BUCKETS[name]}" if name in BUCKETS else name
        lo, hi = s["pass1_ci"]
        ci = f"{_pct(s['pass1'])} [{_pct(lo)}, {_pct(hi)}]" if s["n"] else "n/a"
        cells = [
            label,
            str(s["n"]),
            _pct(s["ntp"]),
            _pct(s["p_true"]),
            _pct(s["greedy"]),
            ci,
            _pct(s["passk"]),
            _pct(s["all_wrong"]),
            _pct(s["all_right"]),
        ]
        lines.append(_line(cells, widths))
    n = table["all"]["n"]
    lines.append("kept by `rpt-train run --pass-rates` with:")
    lines += [f"  {label:<34}{count:>7} of {n}" for label, count in kept.items()]
    return "\n".join(lines)
