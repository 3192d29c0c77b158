"""``rpt-data export verl SHARDS OUT``: options generated from ``ExportConfig`` (``[export]`` of a recipe,
which takes the prompt and reward settings of ``[train]`` unless it sets them); the work is
``rpt_data.export.verl.export_verl``."""

from __future__ import annotations

import click

from rpt_core.runtime.cli import config_command
from rpt_data.export.verl import TRAINING_KEYS, ExportConfig, export_verl


@click.group("export", context_settings={"help_option_names": ["-h", "--help"]})
def export_group() -> None:
    """Export RPT shards to other training stacks."""


@config_command(ExportConfig, "export", name="verl", inherit={"train": TRAINING_KEYS}, group=export_group)
def verl_command(cfg: ExportConfig) -> None:
    """Write SHARDS as verl RL parquet files in OUT (train.parquet, val.parquet, manifest.json), to be
    trained with pipelines/verl-grpo.sh and scored by rpt_train.verl_reward.compute_score."""
    summary = export_verl(cfg)
    if not cfg.quiet:
        click.echo(summary)
