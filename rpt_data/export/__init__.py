"""Export of RPT shards to other trainers: verl's RL Parquet (``verl``: files, ``verl_rows``: one row)."""
