"""Documents and text templates: how one corpus record becomes the text the proxy model scores.

A record is a dict in the OmniMATH format (``problem``, ``solution``, ``answer``, ``domain``,
``difficulty``, ``source``); a template is a ``str.format``-style string naming record fields, e.g. the
default ``"{problem}\\n\\n{solution}"``. Templates are checked once, up front (a malformed template is a
user error, ``RptError``); a record that lacks a field the template names is a per-record problem the
reader counts as ``missing_field:<name>`` and skips.

``Document.domain`` is a tuple of strings (not a list) so that the frozen dataclass is truly immutable and
hashable; pass ``list(doc.domain)`` where a list is needed (pyarrow accepts tuples as list values).
A record's optional ``spans`` (``rpt_core.data.corpus.spans``) become ``Document.spans`` over the
rendered text.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rpt_core.data.corpus.spans import SPANS_FIELD, Span, SpanProblem, document_spans, parse_spans
from rpt_core.runtime.errors import RptError

DEFAULT_TEMPLATE = "{problem}\n\n{solution}"
STRING_FIELDS = ("problem", "solution")  # the document's prose: anything but a string is a broken record


@dataclass(frozen=True)
class Document:
    """One rendered corpus record; ``doc_id`` is stable across runs and unique within a build."""

    doc_id: str
    text: str
    domain: tuple[str, ...] | None = None
    difficulty: float | None = None
    source: str | None = None
    spans: tuple[Span, ...] | None = None  # (start, end, class) in characters of ``text``; None: unknown


def content_id(text: str) -> str:
    """A document's content identity: sha256 of its text, NFC-normalised with whitespace runs collapsed.

    Two copies of a document (the same text under different ``file:line`` ids, or re-indented) share it, so
    the build holds both out or neither, and a baseline's ``--exclude-val`` skips every copy.
    """
    norm = " ".join(unicodedata.normalize("NFC", text).split())
    return hashlib.sha256(norm.encode("utf-8", errors="surrogatepass")).hexdigest()


class FieldProblem(Exception):
    """A record cannot be rendered; ``reason`` is the skip counter key, e.g. ``missing_field:answer``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def template_fields(template: str) -> tuple[str, ...]:
    """The record fields a template names, in order of first use; ``RptError`` if the template is malformed.

    Only plain field names are allowed (``{problem}``, ``{difficulty:.1f}``, ``{answer!r}``): positional
    fields (``{}``, ``{0}``) have no record to refer to, and attribute/index access (``{problem.upper}``,
    ``{domain[0]}``) would let a template reach into Python objects.
    """
    if not isinstance(template, str):
        raise RptError(f"text template must be a string, got {type(template).__name__}")
    return _parse_template(template)


@functools.lru_cache(maxsize=64)
def _parse_template(template: str) -> tuple[str, ...]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise RptError(f"malformed text template {template!r}: {e}") from None
    fields: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise RptError(f"text template {template!r}: positional field {{{name}}}; name a record field")
        if not name.isidentifier():
            raise RptError(f"text template {template!r}: field {{{name}}} must be a plain record field name")
        if spec and "{" in spec:
            raise RptError(f"text template {template!r}: nested fields in format specs are not supported")
        if conversion not in (None, "r", "s", "a"):
            raise RptError(f"text template {template!r}: unknown conversion !{conversion} in {{{name}}}")
        if spec and not _spec_usable(spec):
            raise RptError(f"text template {template!r}: format spec {spec!r} of {{{name}}} fits no value")
        if name not in fields:
            fields.append(name)
    if not fields:
        raise RptError(f"text template {template!r} names no record field (e.g. {{problem}})")
    return tuple(fields)


def _spec_usable(spec: str) -> bool:
    """Whether a format spec works for at least one kind of value a field can hold (str, int, float)."""
    for sample in ("x", 1, 1.0):
        try:
            format(sample, spec)
            return True
        except (ValueError, TypeError):
            pass
    return False


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """A template field's value, validated: non-empty string, number, or non-empty list of strings.

    Raises ``FieldProblem`` with reason ``missing_field:<f>`` (absent or null), ``empty_field:<f>`` (blank
    string or empty list) or ``wrong_type:<f>``. ``problem`` and ``solution`` must be strings; other
    fields may also be numbers (``{difficulty}``) or lists of strings (``domain``, rendered ``"a, b"``).
    """
    value = record.get(name)
    if value is None:
        raise FieldProblem(f"missing_field:{name}")
    if isinstance(value, str):
        if not value.strip():
            raise FieldProblem(f"empty_field:{name}")
        return value
    if isinstance(value, bool) or name in STRING_FIELDS:
        raise FieldProblem(f"wrong_type:{name}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise FieldProblem(f"wrong_type:{name}")
        if not any(v.strip() for v in value):
            raise FieldProblem(f"empty_field:{name}")
        return ", ".join(value)
    raise FieldProblem(f"wrong_type:{name}")


def render_text(record: Mapping[str, Any], template: str = DEFAULT_TEMPLATE) -> str:
    """Fill ``template`` from ``record``; ``FieldProblem`` for a bad record, ``RptError`` for a bad one."""
    return _render(template, _values(record, template))


def _values(record: Mapping[str, Any], template: str) -> dict[str, Any]:
    return {name: field_value(record, name) for name in template_fields(template)}


def _render(template: str, values: Mapping[str, Any]) -> str:
    try:
        return template.format_map(values)
    except (ValueError, TypeError) as e:
        # A format spec that does not fit this record's value (e.g. ``{answer:d}`` on a string).
        bad = next((n for n in values if _fails(template, n, values)), template_fields(template)[0])
        raise FieldProblem(f"format_error:{bad}") from e


def _fails(template: str, name: str, values: Mapping[str, Any]) -> bool:
    """Whether rendering only ``name``'s fields of ``template`` fails (to name the culprit field)."""
    parts = []
    for _literal, field, spec, conversion in string.Formatter().parse(template):
        if field == name:
            parts.append(
                "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
    try:
        "".join(parts).format_map(values)
    except (ValueError, TypeError):
        return True
    return False


# Lone surrogates come from JSON escapes like "\\ud800" (or undecodable bytes read with surrogateescape);
# they cannot be encoded as UTF-8, so a shard could not store such text.
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _domain(value: Any) -> tuple[tuple[str, ...] | None, bool]:
    if value is None:
        return None, False
    if isinstance(value, str):
        if has_surrogates(value):
            return None, True
        return ((value,) if value.strip() else None), False
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and not has_surrogates(v) for v in value):
        return (tuple(value) or None), False
    return None, True


def _difficulty(value: Any) -> tuple[float | None, bool]:
    if value is None:
        return None, False
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value), False
    return None, True


def _source(value: Any) -> tuple[str | None, bool]:
    if value is None:
        return None, False
    if isinstance(value, str) and not has_surrogates(value):
        return value, False
    return None, True


# Optional metadata: a wrong type is not worth losing the document over, so it is nulled and counted.
OPTIONAL_FIELDS = {"domain": _domain, "difficulty": _difficulty, "source": _source}


def record_to_document(
    record: Any, doc_id: str, template: str = DEFAULT_TEMPLATE
) -> tuple[Document, tuple[str, ...]]:
    """Validate one record and render it; returns the document and the optional fields that were nulled.

    Policy: fields named by the template are required (``FieldProblem`` -> the record is skipped with
    reason ``not_an_object``, ``missing_field:<f>``, ``empty_field:<f>``, ``wrong_type:<f>``,
    ``format_error:<f>``, ``invalid_utf8`` or ``empty_text``). The optional metadata ``domain`` (list of
    str, or a str -> ``(str,)``), ``difficulty`` (finite number) and ``source`` (str) are type-checked; a
    wrong type becomes ``None`` and its name is returned so the reader can count ``coerced:<f>``; so do
    malformed ``spans`` (``coerced:spans``).
    """
    if not isinstance(record, Mapping):
        raise FieldProblem("not_an_object")
    values = _values(record, template)
    text = _render(template, values)
    if not text.strip():
        raise FieldProblem("empty_text")
    if has_surrogates(text):
        raise FieldProblem("invalid_utf8")
    meta: dict[str, Any] = {}
    coerced: list[str] = []
    for name, check in OPTIONAL_FIELDS.items():
        meta[name], bad = check(record.get(name))
        if bad:
            coerced.append(name)
    spans = None
    if record.get(SPANS_FIELD) is not None:
        try:
            spans = tuple(document_spans(template, values, parse_spans(record[SPANS_FIELD], record)))
        except SpanProblem:
            coerced.append(SPANS_FIELD)  # the text is still good; only the classes are lost
    return Document(doc_id=doc_id, text=text, spans=spans, **meta), tuple(coerced)
