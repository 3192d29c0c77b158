"""``rpt-data``: build RPT shards from an OmniMATH-style corpus, inspect them, make the embedded corpus and
tokenizer.

Thin: each command parses options into a config dataclass and calls one function.
"""

from __future__ import annotations

import click

from rpt_data import __version__
from rpt_train.cli_common import RptGroup


@click.group(cls=RptGroup)
@click.version_option(__version__, prog_name="rpt-data")
def main() -> None:
    """Turn a math corpus into Parquet shards of next-token-reasoning samples."""


def _register() -> None:
    from rpt_data.cli_build import build
    from rpt_data.cli_generate import generate
    from rpt_data.cli_inspect import inspect
    from rpt_data.cli_tokenizer import tokenizer_group

    for command in (build, inspect, generate, tokenizer_group):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
