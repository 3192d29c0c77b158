"""What tests share that pytest need not discover (fixtures stay in conftest.py files).

- ``models``: ``tiny_model`` (every small random Qwen3 of the suite), ``save_model_dir``,
  ``think_copy_model``, ``bigram_model``;
- ``text``: the tiny task's tokenizer (``tiny_tokenizer``, ``letters_bpe``, ``LETTERS``), the byte
  tokenizer of the evaluation tests (``byte_tokenizer``), ``TextTemplate``;
- ``shards``: the tiny task's rows and shards (``task_rows``, ``repeat_rows``, ``write_task_shards``) and
  ``shard_row``;
- ``faults``: broken files and hostile places (corrupt Parquet pages, truncated files, an unwritable
  directory, locks);
- ``gguf_files``: small GGUF files written the way llama.cpp writes them;
- ``launch``: the torchrun command of the two-rank tests (``TWO_RANKS``) and ``TORCHRUN_ENV``;
- ``runs`` (imported as ``tests.helpers.runs``, it imports the trainer): ``task_config``, the tiny task's
  ``TrainConfig``.
"""

from tests.helpers.faults import corrupt_data_pages, dead_pid, truncate, unwritable_dir, write_lock
from tests.helpers.gguf_files import dequantized, llama_cpp_permute, truncated, write_gguf
from tests.helpers.launch import TORCHRUN_ENV, TWO_RANKS
from tests.helpers.models import bigram_model, save_model_dir, think_copy_model, tiny_model
from tests.helpers.shards import next_letter, repeat_rows, shard_row, task_row, task_rows, write_task_shards
from tests.helpers.text import LETTERS, TextTemplate, byte_tokenizer, letters_bpe, tiny_tokenizer

__all__ = [
    "LETTERS",
    "TORCHRUN_ENV",
    "TWO_RANKS",
    "TextTemplate",
    "bigram_model",
    "byte_tokenizer",
    "corrupt_data_pages",
    "dead_pid",
    "dequantized",
    "letters_bpe",
    "llama_cpp_permute",
    "next_letter",
    "repeat_rows",
    "save_model_dir",
    "shard_row",
    "task_row",
    "task_rows",
    "think_copy_model",
    "tiny_model",
    "tiny_tokenizer",
    "truncate",
    "truncated",
    "unwritable_dir",
    "write_gguf",
    "write_lock",
    "write_task_shards",
]
