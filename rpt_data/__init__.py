"""rpt_data: turns an OmniMATH-style corpus into RPT Parquet shards (over ``rpt_core``; never imports
``rpt_train``).

Reads records, renders documents, scores every position with a proxy model (``rpt_core``'s Qwen3),
keeps high-entropy positions and writes shards in the schema defined by ``rpt_core.data.shards``.
"""

__version__ = "0.1.0"
