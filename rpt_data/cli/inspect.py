"""``rpt-data inspect OUT``: options generated from ``InspectConfig``; the report is ``rpt_data.inspect``."""

from __future__ import annotations

import click

from rpt_data.inspect import InspectConfig, inspect_build
from rpt_train.cli.common import config_command


@config_command(InspectConfig, "inspect", name="inspect")
def inspect(cfg: InspectConfig) -> None:
    """Summarise the shards in build directory OUT: sizes, entropy quantiles and histogram, sample rows."""
    click.echo(inspect_build(cfg.out, split=cfg.split, rows=cfg.rows))
