"""``rpt-train``: pretrain a tiny base, run RL (RPT) on shards, evaluate next-token accuracy, convert GGUF
checkpoints.

Thin: each command is generated from its config dataclass (``rpt_core.runtime.cli.config_command``) and
calls one function. ``python -m rpt_train.cli`` (for torchrun) runs the same group.
"""

from __future__ import annotations

import click

from rpt_core.runtime.cli import LazyRptGroup
from rpt_train import __version__

# Imported when used, so importing this package (or rpt_core.runtime.cli, as rpt-data does) loads no torch.
COMMANDS = {
    "pretrain": "rpt_train.cli.pretrain:pretrain_cmd",
    "run": "rpt_train.cli.run:run",
    "eval": "rpt_train.cli.eval:eval_cmd",
    "passrate": "rpt_train.cli.passrate:passrate_cmd",
    "convert": "rpt_train.cli.convert:convert_group",
}


@click.group(
    cls=LazyRptGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="rpt-train")
def main() -> None:
    """Reinforcement Pre-Training of a from-scratch Qwen3 on RPT shards."""
