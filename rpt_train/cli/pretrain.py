"""``rpt-train pretrain``: next-token pretraining of a small Qwen3 from scratch (``rpt_train.pretrain``)."""

from __future__ import annotations

import click

from rpt_train.cli.common import config_command
from rpt_train.pretrain import PretrainConfig, pretrain


@config_command(PretrainConfig, "pretrain", name="pretrain")
def pretrain_cmd(cfg: PretrainConfig) -> None:
    """Pretrain a model from scratch on CORPUS (OmniMATH-format files) and save it in HF format."""
    summary = pretrain(cfg)
    if not cfg.quiet:
        last = summary["history"][-1] if summary["history"] else {}
        click.echo(
            f"pretrained {summary['parameters']:,} parameters on {summary['tokens_in_corpus']:,} tokens in "
            f"{summary['seconds']} s; final eval loss {last.get('eval_loss', float('nan')):.3f} -> {cfg.out}"
        )
