"""``rpt-data``: build RPT shards from an OmniMATH-style corpus, inspect them, export them (to verl), make the
embedded corpus and tokenizer.

Thin: each command is generated from its config dataclass (``rpt_train.cli.common.config_command``) and
calls one function. ``python -m rpt_data.cli`` (for torchrun) runs the same group.
"""

from __future__ import annotations

import click

from rpt_data import __version__
from rpt_data.cli.build import build
from rpt_data.cli.export import export_group
from rpt_data.cli.generate import generate
from rpt_data.cli.inspect import inspect
from rpt_data.cli.tokenizer import tokenizer_group
from rpt_train.cli.common import RptGroup


@click.group(cls=RptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rpt-data")
def main() -> None:
    """Turn a math corpus into Parquet shards of next-token-reasoning samples."""


for _command in (build, inspect, export_group, generate, tokenizer_group):
    main.add_command(_command)
