"""rpt_train: the lower layer of rpt.

A from-scratch Qwen3 (HF-checkpoint compatible), KV-cache generation, the tokenizer layer, the RPT shard
schema and reader, rewards, GRPO math and the trainer. Nothing here imports ``rpt_data``.
"""

__version__ = "0.1.0"
