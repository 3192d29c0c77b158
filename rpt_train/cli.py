"""``rpt-train``: pretrain a tiny base, run GRPO on RPT shards, evaluate next-token accuracy.

Thin: each command parses options into a config dataclass and calls one function.
"""

from __future__ import annotations

import click

from rpt_train import __version__
from rpt_train.cli_common import RptGroup


@click.group(cls=RptGroup)
@click.version_option(__version__, prog_name="rpt-train")
def main() -> None:
    """Reinforcement Pre-Training of a from-scratch Qwen3 on RPT shards."""


def _register() -> None:
    from rpt_train.cli_eval import eval_cmd
    from rpt_train.cli_pretrain import pretrain_cmd
    from rpt_train.cli_run import run

    for command in (pretrain_cmd, run, eval_cmd):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
