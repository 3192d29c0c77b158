"""Raw records from one source: JSON lines, JSON arrays (parsed incrementally), Parquet batches, hub rows.

Each yields ``(locator for messages, id suffix, record or Skip(reason))``; turning records into
documents and counting skips is ``rpt_core.data.corpus.readers``' job.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpt_core.data.corpus.inputs import HubDataset, Source
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.hub import fetch_error

PARQUET_BATCH = 1024
# A JSON array element larger than this is treated as malformed rather than buffered without bound.
MAX_JSON_ELEMENT_CHARS = 64 << 20
_INVALID_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape turns undecodable bytes into


# ---- raw records: (locator for messages, id suffix, record or a skip reason) -------------------------

Raw = tuple[str, str, Any]


class Skip:
    def __init__(self, reason: str):
        self.reason = reason


def _iter_json_lines(path: Path, f: io.BufferedIOBase) -> Iterator[Raw]:
    for lineno, raw in enumerate(f, 1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue  # blank lines are not records
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield f"{path}:{lineno}", str(lineno), Skip("invalid_utf8")
            continue
        try:
            yield f"{path}:{lineno}", str(lineno), json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            yield f"{path}:{lineno}", str(lineno), Skip("malformed_json")


def _iter_json_array(path: Path, f: io.BufferedIOBase) -> Iterator[Raw]:
    """Elements of a top-level JSON array, decoded incrementally; a syntax error ends the file."""
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape")
    decoder = json.JSONDecoder()
    buf, pos, eof, index = "", 0, False, 0

    def more() -> bool:
        nonlocal buf, pos, eof
        chunk = text.read(1 << 16)
        buf, pos = buf[pos:] + chunk, 0
        eof = not chunk
        return bool(chunk)

    def skip_ws() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos].isspace():
                pos += 1
            if pos < len(buf) or not more():
                return buf[pos] if pos < len(buf) else ""

    skip_ws()
    pos += 1  # the '[' that made this a JSON array
    expect_comma = False
    while True:
        c = skip_ws()
        if c == "]":
            return
        if c == "" or (expect_comma and c != ","):
            yield f"{path}:[{index}]", str(index), Skip("malformed_json")
            return
        if expect_comma:
            pos += 1
            skip_ws()
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                if end < len(buf) or eof:
                    break  # a number at the very end of the buffer might continue in the next chunk
            except (json.JSONDecodeError, RecursionError):
                if eof or len(buf) - pos > MAX_JSON_ELEMENT_CHARS:
                    yield f"{path}:[{index}]", str(index), Skip("malformed_json")
                    return
            more()
        bad_bytes = _INVALID_BYTES.search(buf, pos, end) is not None
        yield f"{path}:[{index}]", str(index), Skip("invalid_utf8") if bad_bytes else value
        pos, index, expect_comma = end, index + 1, True


def is_json_array(path: Path) -> bool:
    """A .json file may hold one array or JSON lines; the first non-blank byte tells which."""
    if path.suffix.lower() != ".json":
        return False
    with open(path, "rb") as f:
        return f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip().startswith(b"[")


def _iter_json_file(path: Path) -> Iterator[Raw]:
    reader = _iter_json_array if is_json_array(path) else _iter_json_lines
    with open(path, "rb") as f:
        yield from reader(path, f)


def _iter_parquet_file(path: Path, wanted: Sequence[str]) -> Iterator[Raw]:
    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
    except (OSError, pa.ArrowException) as e:
        raise RptError(f"{path}: not a readable Parquet file ({e})") from None
    columns = [c for c in wanted if c in names]
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=columns):
            for record in batch.to_pylist():
                yield f"{path}:[{index}]", str(index), record
                index += 1
    except (OSError, pa.ArrowException) as e:
        raise RptError(f"{path}: Parquet read failed at record {index} ({e})") from None


def _iter_hub(source: HubDataset) -> Iterator[Raw]:
    try:
        import datasets  # deferred: importing it costs a second and local files never need it

        ds = datasets.load_dataset(source.dataset_id, split=source.split, streaming=False)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot get this dataset"
        raise fetch_error("dataset, or its split", source.label, e) from None
    for index, record in enumerate(ds):
        yield f"{source.label}:[{index}]", str(index), record


def iter_raw(source: Source, wanted: Sequence[str]) -> Iterator[Raw]:
    if isinstance(source, HubDataset):
        return _iter_hub(source)
    if source.path.suffix.lower() == ".parquet":
        return _iter_parquet_file(source.path, wanted)
    return _iter_json_file(source.path)
