"""``rpt-train run SHARDS``: GRPO on RPT shards (the click command; ``rpt_train.cli`` attaches it).

Options are generated from ``TrainConfig``'s fields (``--max-new-tokens`` for ``max_new_tokens``, a
``--flag/--no-flag`` pair for booleans) with the field's help text, so the config, the TOML recipe
(``[train]``) and the command line can never disagree. Only options typed on the command line override
the recipe (``rpt_train.config.resolve_config``).

Ctrl-C is turned into a request to stop after the current step; the trainer then saves a checkpoint
and the command exits normally. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import types
import typing

import click

from rpt_train.cli_common import config_option
from rpt_train.config import resolve_config
from rpt_train.train_config import TrainConfig

_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _inner_type(tp):
    """``int | None`` -> int; other annotations unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def config_options(cls, skip: tuple[str, ...] = ()):
    """Decorator adding one click option per dataclass field of ``cls`` (defaults stay in the dataclass)."""
    hints = typing.get_type_hints(cls)

    def decorate(f):
        for fld in reversed(dataclasses.fields(cls)):
            if fld.name in skip:
                continue
            tp = _inner_type(hints[fld.name])
            name = "--" + fld.name.replace("_", "-")
            shown = "" if fld.default in (None, "") else f" [default: {fld.default}]"
            help_text = fld.metadata.get("help", "") + shown
            if tp is bool:
                decl = f"{name}/--no-{fld.name.replace('_', '-')}"
                f = click.option(decl, fld.name, default=None, help=help_text)(f)
            else:
                f = click.option(name, fld.name, type=_CLICK_TYPES.get(tp, click.STRING), default=None,
                                 help=help_text)(f)  # fmt: skip
        return f

    return decorate


@contextlib.contextmanager
def sigint_flag():
    """Turn the first Ctrl-C into a flag (``flag["hit"]``); a second one raises KeyboardInterrupt."""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield flag
        return

    def handler(signum, frame):
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True
        print("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)  # fmt: skip

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command("run")
@click.argument("shards", required=False, type=click.Path())
@config_option("train")
@config_options(TrainConfig, skip=("shards",))
@click.pass_context
def run(ctx: click.Context, shards: str | None, config: str | None, **_: object) -> None:
    """GRPO (RPT) training of a Qwen3 policy on the shards in SHARDS (SHARDS/train, SHARDS/val).

    Writes OUT/run_config.json, OUT/metrics.jsonl (one line per step), OUT/samples.jsonl and
    checkpoints under OUT/checkpoints/. Run under torchrun for data parallelism (DDP, or --fsdp).
    """
    from rpt_train.distributed import cleanup, init_distributed
    from rpt_train.trainer import Trainer

    cfg = resolve_config(TrainConfig, ctx, "train", config)
    info = init_distributed()
    try:
        with sigint_flag() as flag:
            result = Trainer(cfg, info).train(stop=lambda: flag["hit"])
    finally:
        cleanup()
    if info.is_main:
        click.echo(f"{result.stopped}: {result.step} steps; checkpoint {result.checkpoint}")
