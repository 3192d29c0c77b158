"""``rpt-train``: pretrain a tiny base, run RL (RPT) on shards, evaluate next-token accuracy, convert GGUF
checkpoints.

Thin: each command is generated from its config dataclass (``rpt_train.cli.common.config_command``) and
calls one function. ``python -m rpt_train.cli`` (for torchrun) runs the same group.
"""

from __future__ import annotations

import click

from rpt_train import __version__
from rpt_train.cli.common import RptGroup
from rpt_train.cli.convert import convert_group
from rpt_train.cli.eval import eval_cmd
from rpt_train.cli.pretrain import pretrain_cmd
from rpt_train.cli.run import run


@click.group(cls=RptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rpt-train")
def main() -> None:
    """Reinforcement Pre-Training of a from-scratch Qwen3 on RPT shards."""


for _command in (pretrain_cmd, run, eval_cmd, convert_group):
    main.add_command(_command)
