"""Training runs on the tiny task: the ``TrainConfig`` every trainer test starts from (imported from here,
not from ``tests.helpers``, so that tests of ``rpt_core`` and ``rpt_data`` do not import the trainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rpt_train.rl.config import TrainConfig


def task_config(shards: str | Path, model: str | Path, out: str | Path, /, **overrides: Any) -> TrainConfig:
    """A quiet, few-step run of the tiny task (plain template, lr 1e-2, no warmup, no checkpoints or
    samples unless asked, B = G = 4); ``overrides`` are flat option names (``shards`` and the others too)."""
    base = dict(
        shards=str(shards),
        model=str(model),
        out=str(out),
        template="plain",
        max_steps=2,
        lr=1e-2,
        warmup_steps=0,
        batch_size=4,
        num_generations=4,
        micro_batch_size=6,
        temperature=1.0,
        save_every=0,
        sample_every=0,
        quiet=True,
    )
    return TrainConfig.from_flat(**{**base, **overrides})
