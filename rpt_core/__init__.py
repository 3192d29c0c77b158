"""rpt_core: the layer both ``rpt_data`` and ``rpt_train`` stand on; it imports neither.

* ``model/``: the Qwen3 family (Qwen3, Qwen2, Llama), Hugging Face and GGUF checkpoint I/O, the KV cache,
  the decode step and ``generation`` (sampling G continuations per prompt).
* ``text/``: the tokenizer, chat templates (the model's own jinja template), the prompt templates, the
  think tags and the model/tokenizer pairing check.
* ``data/``: corpus readers (``corpus/``), the shard schema and manifest (``shards``) and the training
  row stream (``stream``).
* ``reward`` and ``verl_reward``: the one reward path (extraction and prefix reward), used by training,
  evaluation and verl.
* ``runtime/``: the config mechanism (dataclass fields -> click options and TOML tables), errors, file
  locks, progress, training logs, distributed setup, hub ids and atomic files.
"""

__version__ = "0.1.0"
