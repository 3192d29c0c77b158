"""The file verl recipes point at: ``custom_reward_function.path = rpt_train/verl_reward.py``, name
``compute_score`` (``rpt-data export verl`` writes it; ``pipelines/verl-grpo.sh`` passes it to verl).

The reward lives in ``rpt_core.verl_reward`` (the one reward path, shared with ``rpt-train run`` and
``rpt-train eval``); this module re-exports it so verl finds ``compute_score`` here.
"""

from rpt_core.verl_reward import DATA_SOURCE, compute_score

__all__ = ["DATA_SOURCE", "compute_score"]
