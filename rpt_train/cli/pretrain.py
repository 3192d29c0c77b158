"""``rpt-train pretrain``: next-token pretraining of a small Qwen3 from scratch (``rpt_train.pretrain``).

Ctrl-C or SIGTERM stops it after the current step with a checkpoint that ``--resume`` continues exactly,
then exits 130 or 143, as ``rpt-train run`` does (``rpt_core.runtime.cli.stop_signals``).
"""

from __future__ import annotations

import sys

import click

from rpt_core.runtime.cli import config_command, stop_signals
from rpt_train.pretrain import PretrainConfig, pretrain


@config_command(PretrainConfig, "pretrain", name="pretrain")
def pretrain_cmd(cfg: PretrainConfig) -> None:
    """Pretrain a model from scratch on CORPUS (OmniMATH-format files) and save it in HF format."""
    with stop_signals() as flag:
        summary = pretrain(cfg, stop=lambda: flag.hit)
    if "stopped" in summary:
        s = summary["stopped"]
        click.echo(
            f"{flag.word}: {s['step']} steps; checkpoint {s['checkpoint']} (continue it with --resume)"
        )
        sys.exit(flag.exit_code)
    if not cfg.quiet:
        last = summary["history"][-1] if summary["history"] else {}
        click.echo(
            f"pretrained {summary['parameters']:,} parameters on {summary['tokens_in_corpus']:,} tokens in "
            f"{summary['seconds']} s; final eval loss {last.get('eval_loss', float('nan')):.3f} -> {cfg.out}"
        )
