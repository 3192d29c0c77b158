"""``rpt-data``: build RPT shards from an OmniMATH-style corpus, inspect them, export them (to verl), make the
embedded corpus and tokenizer.

Thin: each command is generated from its config dataclass (``rpt_core.runtime.cli.config_command``) and
calls one function. ``python -m rpt_data.cli`` (for torchrun) runs the same group.
"""

from __future__ import annotations

import click

from rpt_core.runtime.cli import LazyRptGroup
from rpt_data import __version__

# Imported when used: `build` needs torch and `inspect` polars, `export verl` neither.
COMMANDS = {
    "build": "rpt_data.cli.build:build",
    "inspect": "rpt_data.cli.inspect_shards:inspect",
    "export": "rpt_data.cli.export:export_group",
    "generate": "rpt_data.cli.generate:generate",
    "tokenizer": "rpt_data.cli.tokenizer:tokenizer_group",
}


@click.group(
    cls=LazyRptGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="rpt-data")
def main() -> None:
    """Turn a math corpus into Parquet shards of next-token-reasoning samples."""
