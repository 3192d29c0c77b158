"""``rpt-data build``, one step per module: the proxy (``proxy``) scores every position (``entropy``),
``positions`` picks the held-out documents and the rows, ``blocks`` runs those steps over one block of
documents, ``sink`` writes shards with a resumable per-rank state, ``summary`` merges the ranks' counts
into the manifest, and ``pipeline`` (``BuildConfig``, ``build``) orchestrates them over ranks."""
