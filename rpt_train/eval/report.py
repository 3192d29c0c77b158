"""The evaluation report: the console table shaped like the RPT paper's Table 1, and the plot.

``format_table`` prints one row per model and mode with a column per entropy bucket; ``plot_report``
draws accuracy per bucket against training step beside the run's training reward curve (matplotlib,
optional: without it the plot is skipped with a note).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rpt_train.eval.score import BUCKETS


def _percent(accuracy: float | None) -> float:
    return float("nan") if accuracy is None else 100 * accuracy


def format_table(report: dict[str, Any]) -> str:
    """A console table like the paper's Table 1: one row per model and mode, one column per bucket."""
    names = list(BUCKETS)
    header = f"{'model':<14}{'mode':<11}" + "".join(f"{n + ' >=' + str(BUCKETS[n]):>14}" for n in names)
    lines = [header, "-" * len(header)]
    for res in report["results"]:
        for mode, table in res["scores"].items():
            cells = "".join(_cell(table[n]) for n in names)
            lines.append(f"{res['label']:<14}{mode:<11}{cells}")
    counts = ", ".join(f"{n}={c}" for n, c in report["samples"].items())
    lines.append(f"positions per bucket: {counts}")
    return "\n".join(lines)


def _cell(cell: dict[str, float]) -> str:
    acc = cell["accuracy"]
    text = "n/a" if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f"{100 * acc:.2f}%"
    return f"{text:>14}"


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Accuracy per bucket and mode against training step, and the training reward curve (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install 'rpt[plot]')")
        return None
    stepped = [r for r in report["results"] if r["step"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode in sorted({m for r in stepped for m in r["scores"]}):
        for bucket in BUCKETS:
            xs = [r["step"] for r in stepped if mode in r["scores"]]
            ys = [_percent(r["scores"][mode][bucket]["accuracy"]) for r in stepped if mode in r["scores"]]
            axes[0].plot(
                xs, ys, marker="o", linestyle="-" if mode == "ntp" else "--", label=f"{bucket} ({mode})"
            )
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("next-token accuracy (%)")
    axes[0].set_title("Accuracy by entropy bucket")
    if stepped:  # a legend with no lines only warns
        axes[0].legend(fontsize=8)
    rewards = report.get("train_reward") or []
    if rewards:
        axes[1].plot([s for s, _ in rewards], [r for _, r in rewards], color="tab:green")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("mean training reward")
    axes[1].set_title("RPT training reward")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
