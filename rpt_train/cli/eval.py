"""``rpt-train eval``: easy / medium / hard next-token accuracy of models on the val/ shards.

Options are generated from ``EvalConfig``. With ``--config``, the recipe's ``[train]`` template settings
are the defaults of ``[eval]`` so that evaluation rolls out exactly as training did.
"""

from __future__ import annotations

from rpt_core.runtime.cli import config_command
from rpt_train.eval.run import TRAINING_KEYS, EvalConfig, run_eval


@config_command(EvalConfig, "eval", name="eval", inherit={"train": TRAINING_KEYS})
def eval_cmd(cfg: EvalConfig) -> None:
    """Evaluate models on SHARDS/val: a Table-1-style console table, eval.json and eval.png."""
    run_eval(cfg)
