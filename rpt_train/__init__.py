"""rpt_train: training on RPT shards, over ``rpt_core``.

``rl/`` (rollouts, GRPO math, the RPT and RLP objectives, the trainer and its checkpoint), ``pretrain``
(continued pretraining, the compute-matched baseline), ``eval/`` (accuracy by entropy bucket and span
class), ``passrate/`` (pass rates of a policy before RL), ``convert`` (GGUF -> HF) and ``cli/``. It never
imports ``rpt_data``; ``model``, ``generate`` and ``verl_reward`` re-export the documented API from the core.
"""

__version__ = "0.1.0"
