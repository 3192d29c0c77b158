"""Reading OmniMATH-style corpora: records from hub datasets or local files -> ``Document``s.

In the core because ``rpt-data build`` and ``rpt-train pretrain`` read corpora the same way.
"""

from rpt_core.data.corpus.documents import DEFAULT_TEMPLATE, Document, render_text, template_fields
from rpt_core.data.corpus.inputs import DEFAULT_DATASET, DEFAULT_SPLIT, resolve_inputs
from rpt_core.data.corpus.readers import ReadStats, count_documents, iter_documents

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_SPLIT",
    "DEFAULT_TEMPLATE",
    "Document",
    "ReadStats",
    "count_documents",
    "iter_documents",
    "render_text",
    "resolve_inputs",
    "template_fields",
]
