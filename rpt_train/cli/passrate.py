"""``rpt-train passrate``: a model's pass rates on shard positions before RL (``rpt_train.passrate.score``).

Options are generated from ``PassRateConfig``. With ``--config``, the recipe's ``[train]`` template
settings are the defaults of ``[passrate]``, so positions are rolled out and rewarded as training will.
"""

from __future__ import annotations

from rpt_core.runtime.cli import config_command
from rpt_train.eval.run import TRAINING_KEYS
from rpt_train.passrate.score import PassRateConfig, run_passrate


@config_command(PassRateConfig, "passrate", name="passrate", inherit={"train": TRAINING_KEYS})
def passrate_cmd(cfg: PassRateConfig) -> None:
    """Score SHARDS/<split> with --model: the probability of the true next token, the greedy reasoning
    verdict and k sampled rollouts per position; writes OUT/passrates.parquet (keyed by doc_id, position)
    and OUT/passrate_summary.json, and prints the pass rates by entropy bucket and span class."""
    run_passrate(cfg)
