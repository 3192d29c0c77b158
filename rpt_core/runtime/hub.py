"""The one rule for telling a Hugging Face hub id from a local path, and the one error for a failed fetch.

Models, tokenizers and corpora all accept "a local path, or else a hub id". A string is a hub id when it
is shaped like one (``name`` or ``owner/name`` of letters, digits, ``._-``), does not look like a path
(``./x``, ``/x``, ``~/x``, ``a/b/c``) or a file name (``x.jsonl``, ``tokenizer.json``), and no such
local path exists. Anything else that does not exist locally is a plain "not found" error.
"""

from __future__ import annotations

import re
from pathlib import Path

from rpt_core.runtime.errors import RptError, first_line

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".safetensors", ".toml", ".txt", ".gguf")


def is_hub_id(spec: str | Path) -> bool:
    """True when ``spec`` names no local path and is shaped like a hub id (see the module docstring)."""
    if not isinstance(spec, str) or Path(spec).expanduser().exists():
        return False
    return bool(_HUB_ID.match(spec)) and not spec.lower().endswith(FILE_SUFFIXES)


def fetch_error(what: str, spec: str, exc: BaseException) -> RptError:
    """The one-line error for a hub fetch that failed (offline with no cache, unknown id, HTTP error)."""
    return RptError(
        f"cannot fetch '{spec}' ({what}) from the Hugging Face hub and it is not a local path "
        f"({type(exc).__name__}: {first_line(exc)}); with no network, pass a local path"
    )
