"""Shared CLI plumbing for ``rpt-train`` and ``rpt-data``: a click group that turns ``RptError`` into one
line on stderr and exit status 1, and the KeyboardInterrupt exit code convention (130)."""

from __future__ import annotations

import sys

import click

from rpt_train.errors import RptError


class RptGroup(click.Group):
    """A click group whose commands report user errors as ``error: <message>`` (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RptError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def config_option(section: str):
    """``--config FILE.toml``: read the ``[section]`` table as defaults for this command."""
    return click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"TOML recipe; its [{section}] table sets defaults that command-line options override.",
    )


def unescape(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Option callback: shells pass ``\\n`` literally, and in a text template it almost always means a
    newline (``--text-template '{problem}\\n\\n{solution}'``)."""
    return value.replace("\\n", "\n").replace("\\t", "\t") if value is not None else None
