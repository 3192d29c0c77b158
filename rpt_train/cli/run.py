"""``rpt-train run SHARDS``: RL training (RPT by default) on shards; options generated from ``TrainConfig``.

Ctrl-C is turned into a request to stop after the current step; the trainer then saves a checkpoint
and the command exits with status 130, as every rpt command does after an interrupt, so scripts can tell
an interrupted run from a finished one. A second Ctrl-C interrupts at once (the trainer still saves the
state from before the step in progress). OUT is locked for the run (``rpt_train.lock``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click

from rpt_train.cli.common import EXIT_INTERRUPTED, config_command
from rpt_train.rl.config import TrainConfig


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


@config_command(TrainConfig, "train", name="run")
def run(cfg: TrainConfig) -> None:
    """RL training of a Qwen3 policy on the shards in SHARDS: RPT (GRPO on the prefix reward) or, with
    --objective rlp, RLP (the information gain of a thought over an EMA no-think baseline).

    Reads SHARDS/train (and SHARDS/val for --val-every). Writes OUT/run_config.json, OUT/metrics.jsonl
    (one line per step), OUT/samples.jsonl and checkpoints under OUT/checkpoints/. Run under torchrun for
    data parallelism (DDP, or --fsdp).
    """
    from rpt_train.distributed import cleanup, init_distributed
    from rpt_train.lock import output_lock
    from rpt_train.rl.trainer import Trainer

    info = init_distributed(cfg.device)
    try:
        with output_lock(cfg.out, "rpt-train run"), sigint_flag() as flag:
            result = Trainer(cfg, info).train(stop=lambda: flag["hit"])
    finally:
        cleanup()
    if info.is_main:
        click.echo(f"{result.stopped}: {result.step} steps; checkpoint {result.checkpoint}")
    if result.stopped == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
