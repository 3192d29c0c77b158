"""``rpt-data inspect OUT``: options from ``InspectConfig``; the report is ``rpt_data.shard_report``."""

from __future__ import annotations

import click

from rpt_core.runtime.cli import config_command
from rpt_data.shard_report import InspectConfig, inspect_build


@config_command(InspectConfig, "inspect", name="inspect")
def inspect(cfg: InspectConfig) -> None:
    """Summarise the shards in build directory OUT: sizes, entropy quantiles and histogram, sample rows."""
    click.echo(inspect_build(cfg.out, split=cfg.split, rows=cfg.rows))
