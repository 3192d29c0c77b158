"""``rpt-train run SHARDS``: RL training (RPT by default) on shards; options generated from ``TrainConfig``.

Ctrl-C or SIGTERM (a scheduler's preemption) is turned into a request to stop after the current step
(``rpt_core.runtime.cli.stop_signals``); the trainer then saves a checkpoint that ``--resume`` continues
exactly, and the command exits with status 130 (Ctrl-C) or 143 (SIGTERM), so scripts can tell a stopped
run from a finished one. A second signal interrupts at once (the trainer still saves the state from
before the step in progress). OUT is locked for the run (``rpt_core.runtime.lock``).
"""

from __future__ import annotations

import sys

import click

from rpt_core.runtime.cli import config_command, stop_signals
from rpt_train.rl.config import TrainConfig


@config_command(TrainConfig, "train", name="run")
def run(cfg: TrainConfig) -> None:
    """RL training of a Qwen3 policy on the shards in SHARDS: RPT (GRPO on the prefix reward) or, with
    --objective rlp, RLP (the information gain of a thought over an EMA no-think baseline).

    Reads SHARDS/train (and SHARDS/val for --val-every). Writes OUT/run_config.json, OUT/metrics.jsonl
    (one line per step), OUT/samples.jsonl and checkpoints under OUT/checkpoints/. Run under torchrun for
    data parallelism (DDP, or --fsdp).
    """
    from rpt_core.runtime.distributed import cleanup, init_distributed
    from rpt_core.runtime.lock import output_lock
    from rpt_train.rl.trainer import Trainer

    info = init_distributed(cfg.runtime.device)
    try:
        with output_lock(cfg.io.out, "rpt-train run"), stop_signals() as flag:
            result = Trainer(cfg, info).train(stop=lambda: flag.hit)
    finally:
        cleanup()
    stopped = flag.word if result.stopped == "interrupted" else result.stopped
    if info.is_main:
        resume = " (continue it with --resume)" if stopped == "terminated" else ""
        click.echo(f"{stopped}: {result.step} steps; checkpoint {result.checkpoint}{resume}")
    if result.stopped == "interrupted":
        sys.exit(flag.exit_code or 130)
