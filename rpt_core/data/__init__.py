"""What both packages read and write: corpus records (``corpus/``), the shard format (``shards``) and the
rank-disjoint, resumable stream of shard rows the trainer consumes (``stream``)."""
