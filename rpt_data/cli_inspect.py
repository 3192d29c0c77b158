"""``rpt-data inspect OUT``: print what a shard build holds (rows, documents, entropy, sample rows)."""

from __future__ import annotations

import click

from rpt_data.inspect import inspect_build
from rpt_train.errors import RptError


@click.command("inspect")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--rows", type=click.IntRange(min=0), default=5, show_default=True, help="Sample rows to print per split."
)
@click.option("--split", type=click.Choice(["train", "val", "all"]), default="all", show_default=True)
def inspect(out: str, rows: int, split: str) -> None:
    """Summarise the shards in build directory OUT: sizes, entropy quantiles and histogram, sample rows."""
    try:
        click.echo(inspect_build(out, split=split, rows=rows))
    except RptError as e:
        raise click.ClickException(str(e)) from None
