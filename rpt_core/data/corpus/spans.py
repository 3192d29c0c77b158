"""Span classes: what each stretch of a generated document is, and so what kind of prediction a position asks.

The one definition of the classes (``rpt-data generate`` writes them, ``rpt-data build`` stores one per
shard row as ``span_class``, ``rpt-train eval`` reports accuracy per class):

* ``given``: a number stated in the problem. Its digits are drawn at random; no reasoning can recover
  them from the text before them.
* ``computed_op``: the result of an integer +, - or x written ``A op B = C`` that ``rpt_data.synth.think`` can
  work out in a ``<think>`` scratchpad (column arithmetic): where thinking is known to help.
* ``computed``: any other result the solution derives (division, fractions, powers, remainders, signs,
  counts, decimals...): computable from the text before it, but not by a demonstrated procedure.
* ``text``: everything else: template prose, symbols, template constants, and numbers a solution restates
  from earlier in the document (the model copies those).

A record carries its spans in an optional ``spans`` field: ``{"problem": [[start, end, class], ...],
"solution": [...]}``, character offsets into that field's string, ``start < end``, sorted and not
overlapping; only ``given``, ``computed_op`` and ``computed`` are listed (``text`` is what is left). A span
covers the whole rendered number: its sign, digits, decimal point, and the ``\\frac{..}{..}`` of a
fraction.

Position rule: a shard row's class is that of the first span its first label token overlaps (shares at
least one byte with), else ``text``. A token that starts at a number's first digit is in the number; so is
a token like ``$-`` or `` 3`` that starts before the number but carries its first character (the model must
predict part of the number to get it right); a token that starts right after a number's last character is
not. Documents without spans (another corpus, a reasoning demonstration, a template that formats a spanned
field with a spec) give rows with a null class.
"""

from __future__ import annotations

import bisect
import string
from collections.abc import Mapping, Sequence
from typing import Any

GIVEN, COMPUTED_OP, COMPUTED, TEXT = "given", "computed_op", "computed", "text"
CLASSES = (GIVEN, COMPUTED_OP, COMPUTED, TEXT)  # report order
SPAN_CLASSES = (GIVEN, COMPUTED_OP, COMPUTED)  # the ones a record lists; TEXT is the rest
SPANS_FIELD = "spans"
UNCLASSIFIED = "none"  # count key for rows with a null class (build summaries)

Span = tuple[int, int, str]


class SpanProblem(ValueError):
    """A record's ``spans`` field is malformed (the reader nulls it and counts ``coerced:spans``)."""


def parse_spans(value: Any, fields: Mapping[str, Any]) -> dict[str, list[Span]]:
    """Validate a record's ``spans`` against the record's own field strings; ``SpanProblem`` if malformed."""
    if not isinstance(value, Mapping):
        raise SpanProblem("spans must be an object of field name -> list of [start, end, class]")
    out: dict[str, list[Span]] = {}
    for name, spans in value.items():
        text = fields.get(name)
        if not isinstance(text, str):
            raise SpanProblem(f"spans name field {name!r}, which is not a string of the record")
        if not isinstance(spans, Sequence) or isinstance(spans, str):
            raise SpanProblem(f"spans of {name!r} must be a list")
        parsed, last_end = [], 0
        for item in spans:
            ok = isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 3
            start, end, cls = item if ok else (None, None, None)
            if not (
                _int(start) and _int(end) and cls in SPAN_CLASSES and last_end <= start < end <= len(text)
            ):
                raise SpanProblem(f"bad span {item!r} in {name!r} (sorted, disjoint, inside the text)")
            parsed.append((start, end, cls))
            last_end = end
        out[name] = parsed
    return out


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def document_spans(template: str, values: Mapping[str, Any], spans: Mapping[str, list[Span]]) -> list[Span]:
    """The spans shifted onto the text ``template.format_map(values)``, in character offsets.

    Walks the template: literal text, then each field as ``str.format`` renders it. A spanned field that
    the template formats with a conversion or a spec may change length, so its spans are dropped.
    """
    formatter, out, offset = string.Formatter(), [], 0
    for literal, name, spec, conversion in formatter.parse(template):
        offset += len(literal)
        if name is None:
            continue
        rendered = formatter.format_field(formatter.convert_field(values[name], conversion), spec or "")
        if name in spans and not spec and conversion is None:
            out += [(offset + s, offset + e, c) for s, e, c in spans[name]]
        offset += len(rendered)
    return out


def byte_spans(text: str, spans: Sequence[Span]) -> list[Span]:
    """Character spans of ``text`` as byte spans of its UTF-8 encoding (the offsets shard rows use)."""
    if text.isascii():
        return list(spans)
    to_byte = lambda i: len(text[:i].encode("utf-8"))
    return [(to_byte(s), to_byte(e), c) for s, e, c in spans]


def token_class(start: int, end: int, spans: Sequence[Span]) -> str:
    """The class of a token covering bytes [start, end): the first span it overlaps, else ``text``.

    ``spans`` are sorted and disjoint (``parse_spans``), so a binary search finds the first span ending
    after ``start``.
    """
    i = bisect.bisect_right([e for _, e, _ in spans], start)
    if i < len(spans) and spans[i][0] < max(end, start + 1):
        return spans[i][2]
    return TEXT


def class_key(cls: str | None) -> str:
    """The count key of a row's class: the class, or ``none`` for a row without one."""
    return cls if cls in CLASSES else UNCLASSIFIED


def ordered_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """{class: count} in report order (``none`` last), only the classes that occur."""
    return {k: int(counts[k]) for k in (*CLASSES, UNCLASSIFIED) if counts.get(k)}
