"""The evaluation report: console tables shaped like the RPT paper's Table 1, and the plot.

``format_table`` prints accuracy with its 95% interval per model, mode and entropy bucket, then the paired
differences against the base model's next-token accuracy (the comparison the paper's Table 1 makes).
``plot_report`` draws accuracy per bucket against training compute (FLOPs) with the intervals, for the
checkpoints of each run (RPT, and e.g. RLP via ``--run-as``: one line style per run, each starting at
the base) and the compute-matched baseline, the power-law fits where they exist, and the smoothed
training reward of each run (matplotlib is optional: without it the plot is skipped with a note).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rpt_train.eval.classes import CLASS_KEY, bucket_rows
from rpt_train.eval.score import BUCKETS

SMOOTH = 0.1  # weight of a new point in the exponential moving average of the reward curve
RUN_STYLES = ("o-", "^--", "v-.", "D:")  # one per run, in the order the table lists them
CLASS_BUCKET = "hard"  # the console's per-class tables: the bucket RPT is meant to improve


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _cell(acc: float | None, lo: float | None, hi: float | None, signed: bool = False) -> str:
    if acc is None:
        return f"{'n/a':>20}"
    sign = "+" if signed and acc >= 0 else ""
    return f"{sign}{_pct(acc)} [{_pct(lo)}, {_pct(hi)}]".rjust(20)


def format_table(table: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Accuracy (%) [95% interval] per model, mode and bucket; then paired differences vs the base's ntp;
    then both per span class within the hard bucket (``class_section``)."""
    classes = class_section(table, summary)
    table = bucket_rows(table)
    names = list(BUCKETS)
    keys = list(dict.fromkeys((r["model"], r["mode"]) for r in table))
    cell = {(r["model"], r["mode"], r["bucket"]): r for r in table}
    header = f"{'model':<12}{'mode':<11}" + "".join(f"{n + ' >=' + str(BUCKETS[n]):>20}" for n in names)
    lines = ["accuracy % [95% interval]", header, "-" * len(header)]
    for model, mode in keys:
        row = [cell[(model, mode, b)] for b in names]
        lines.append(
            f"{model:<12}{mode:<11}" + "".join(_cell(r["accuracy"], r["ci_low"], r["ci_high"]) for r in row)
        )
    diffs = [(m, mo) for m, mo in keys if cell[(m, mo, names[0])].get("diff_vs_base_ntp") is not None]
    if diffs:
        lines += ["", "difference vs base ntp, points [paired 95% interval]", header, "-" * len(header)]
        for model, mode in diffs:
            row = [cell[(model, mode, b)] for b in names]
            lines.append(
                f"{model:<12}{mode:<11}"
                + "".join(
                    _cell(r["diff_vs_base_ntp"], r["diff_ci_low"], r["diff_ci_high"], True) for r in row
                )
            )
    for label, cells in summary.get("vs_rpt", {}).items():
        lines += [
            "",
            f"difference {label} - rpt (last checkpoints, same mode), points [paired 95% interval]",
            header,
            "-" * len(header),
        ]
        for mode in dict.fromkeys(k.split("/")[0] for k in cells):
            row = [cells[f"{mode}/{b}"] for b in names]
            lines.append(
                f"{label:<12}{mode:<11}"
                + "".join(_cell(c["diff"], c["ci_low"], c["ci_high"], True) for c in row)
            )
    counts = ", ".join(f"{n}={summary['positions'][n]}" for n in names)
    lines.append(f"positions per bucket: {counts} (the same positions for every model)")
    lines += classes
    for name, fit in summary.get("power_law", {}).items():
        lines.append(
            f"power law {name}: accuracy = {fit['a']:.3g} * FLOPs^{fit['b']:.3f} (R^2 {fit['r2']:.3f})"
        )
    return "\n".join(lines)


def class_section(
    table: list[dict[str, Any]], summary: dict[str, Any], bucket: str = CLASS_BUCKET
) -> list[str]:
    """Lines of the per-class tables of one bucket: accuracy, then the difference vs the base's ntp
    (nothing when the shards carry no classes)."""
    rows = [r for r in table if CLASS_KEY in r and r["bucket"] == bucket]
    classes = list(dict.fromkeys(r[CLASS_KEY] for r in rows))
    if not classes:
        return []
    cell = {(r["model"], r["mode"], r[CLASS_KEY]): r for r in rows}
    keys = list(dict.fromkeys((r["model"], r["mode"]) for r in rows))
    n = (summary.get("positions_by_class") or {}).get(bucket, {})
    header = f"{'model':<12}{'mode':<11}" + "".join(f"{c} (n={n.get(c, 0)})".rjust(20) for c in classes)
    where = f"{bucket} bucket (entropy >= {BUCKETS[bucket]}) by where the position sits"

    def line(model: str, mode: str, keys: tuple[str, str, str], signed: bool = False) -> str:
        cells = [cell[(model, mode, c)] for c in classes]
        return f"{model:<12}{mode:<11}" + "".join(_cell(*(r[k] for k in keys), signed) for r in cells)

    lines = ["", f"accuracy % [95% interval], {where}", header, "-" * len(header)]
    lines += [line(model, mode, ("accuracy", "ci_low", "ci_high")) for model, mode in keys]
    diffs = [k for k in keys if cell[(*k, classes[0])].get("diff_vs_base_ntp") is not None]
    if diffs:
        lines += ["", f"difference vs base ntp, points [paired 95% interval], {where}", header]
        lines += ["-" * len(header)]
        lines += [line(m, mo, ("diff_vs_base_ntp", "diff_ci_low", "diff_ci_high"), True) for m, mo in diffs]
    lines.append(
        "classes: given = numbers stated in the problem, computed_op = results of +, - or x (a scratchpad "
        "can work them out), computed = other results, text = the rest; eval.json has every bucket"
    )
    return lines


def _ema(values: list[float], weight: float = SMOOTH) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else (1 - weight) * acc + weight * v
        out.append(acc)
    return out


def _series(rows: list[dict[str, Any]], runs: list[str]) -> list[tuple[list[dict[str, Any]], str, str]]:
    """(rows by compute, marker style, legend name): each run from the base on, then the baseline."""
    base = [r for r in rows if r["model"] == "base"]
    out = []
    for i, run in enumerate(runs):
        curve = sorted(base + [r for r in rows if r.get("run") == run], key=lambda r: r["flops"])
        out.append((curve, RUN_STYLES[i % len(RUN_STYLES)], f"base -> {run}"))
    return [*out, ([r for r in rows if r["model"] == "cpt"], "s", "cpt")]


def plot_report(table: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> Path | None:
    """Accuracy per bucket against training compute (with intervals and fits), and the reward curve."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install 'rpt[plot]')")
        return None
    table = bucket_rows(table)
    modes = list(dict.fromkeys(r["mode"] for r in table))
    runs = list(dict.fromkeys(r.get("run") for r in table if r.get("run") is not None))
    fig, axes = plt.subplots(1, len(modes) + 1, figsize=(5 * (len(modes) + 1), 4), squeeze=False)
    colors = dict(zip(BUCKETS, ("tab:blue", "tab:orange", "tab:red"), strict=True))
    for ax, mode in zip(axes[0], modes, strict=False):
        for bucket in BUCKETS:
            rows = [
                r for r in table if r["mode"] == mode and r["bucket"] == bucket and r["flops"] is not None
            ]
            for group, style, name in _series(rows, runs):
                if not group or any(r["accuracy"] is None for r in group):
                    continue
                xs, ys = [r["flops"] for r in group], [100 * r["accuracy"] for r in group]
                lows = [max(0.0, y - 100 * r["ci_low"]) for y, r in zip(ys, group, strict=True)]
                highs = [max(0.0, 100 * r["ci_high"] - y) for y, r in zip(ys, group, strict=True)]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lows, highs],
                    fmt=style,
                    color=colors[bucket],
                    capsize=3,
                    label=f"{bucket} ({name})",
                    mfc="white" if style == "s" else None,
                )
            for run in runs:
                fit = summary.get("power_law", {}).get(f"{'' if run == 'rpt' else run + ' '}{mode}/{bucket}")
                xs = sorted(r["flops"] for r in rows if r.get("run") == run and r["flops"] > 0)
                if fit and xs:
                    ax.plot(xs, [100 * fit["a"] * x ** fit["b"] for x in xs], ":", color=colors[bucket])
        ax.set_xlabel("training compute (FLOPs)")
        ax.set_ylabel("next-token accuracy (%)")
        ax.set_title(f"{mode}: accuracy by entropy bucket")
        if ax.has_data():
            ax.legend(fontsize=7)
    reward_ax = axes[0][-1]
    curves = {"rpt": summary.get("train_reward") or [], **(summary.get("run_rewards") or {})}
    for (run, rewards), color in zip(
        curves.items(), ("tab:green", "tab:purple", "tab:brown", "tab:gray"), strict=False
    ):
        if rewards:
            steps, values = [s for s, _ in rewards], [v for _, v in rewards]
            reward_ax.plot(steps, values, color=color, alpha=0.3)
            reward_ax.plot(steps, _ema(values), color=color, label=f"{run} (moving average)")
    if reward_ax.has_data():
        reward_ax.legend(fontsize=7)
    reward_ax.set_xlabel("training step")
    reward_ax.set_ylabel("mean training reward (rlp: information gain, nats)")
    reward_ax.set_title("training reward")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
