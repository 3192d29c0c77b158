"""How a SynthMath family writes a record: the marks around numbers, number formatting and ``_record``.

A family formats its text with each number the problem states wrapped in ``_g`` and each result the
solution derives, where it first appears, wrapped in ``_c``: invisible control characters that
``_unmark`` strips, keeping the character span and class of every marked stretch
(``rpt_core.data.corpus.spans``). ``_record`` assembles the OmniMATH-format record and promotes a
``computed`` result that ``rpt_data.synth.think`` can work out in a scratchpad to ``computed_op``. The
short underscored names are the families' shorthand (``rpt_data.synth.families``), not an API.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from rpt_core.data.corpus.spans import COMPUTED, COMPUTED_OP, GIVEN, SPANS_FIELD
from rpt_data.synth.think import demonstrable_results

SOURCE = "rpt-synth"
FIELD_ORDER = ("domain", "difficulty", "problem", "solution", "answer", "source", SPANS_FIELD)
CDOT = " \\cdot "


# Marks around a number while a family formats its text: control characters never occur in the text itself.
_OPEN = {"\x01": GIVEN, "\x02": COMPUTED}
_CLOSE = "\x03"


def _g(x: object) -> str:
    """A number the problem states (class ``given``)."""
    return f"\x01{x}{_CLOSE}"


def _c(x: object) -> str:
    """A result the solution derives, where it first appears (``computed``, or ``computed_op``)."""
    return f"\x02{x}{_CLOSE}"


def _plain(x: object) -> str:
    return str(x)


def _unmark(text: str) -> tuple[str, list[list]]:
    """The text without marks, and the [start, end, class] of every marked stretch in the clean text."""
    out, spans, start, cls = [], [], 0, None
    n = 0
    for ch in text:
        if ch in _OPEN:
            start, cls = n, _OPEN[ch]
        elif ch == _CLOSE:
            spans.append([start, n, cls])
        else:
            out.append(ch)
            n += 1
    return "".join(out), spans


def _p(n: int | Fraction, mark=_plain) -> str:
    """A number as a factor inside an expression: negatives parenthesised."""
    return f"({mark(_num(n))})" if n < 0 else mark(_num(n))


def _num(x: int | Fraction) -> str:
    if isinstance(x, Fraction) and x.denominator != 1:
        sign = "-" if x < 0 else ""
        return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"
    return str(int(x))


def _dec(x: Fraction) -> str:
    """Exact decimal of a fraction whose denominator divides a power of ten (trailing zeros dropped)."""
    text = f"{x.numerator / x.denominator:.6f}".rstrip("0").rstrip(".")
    assert Fraction(text) == x, (x, text)
    return text


def _lin(a: int, b: int, var: str = "x", mark_a=_plain, mark_b=_plain) -> str:
    """``a var + b`` with signs and unit coefficients written the way people write them."""
    lead = var if a == 1 else f"-{var}" if a == -1 else f"{mark_a(a)}{var}"
    if a == 0:
        return mark_b(b)
    return lead if b == 0 else f"{lead} + {mark_b(b)}" if b > 0 else f"{lead} - {mark_b(-b)}"


def _factor(root: int) -> str:
    """The linear factor with this root: ``(x - 3)``, ``(x + 3)`` or ``x``."""
    return "x" if root == 0 else f"(x - {root})" if root > 0 else f"(x + {-root})"


def _record(domain: str, difficulty: float, problem: str, steps: list[str], answer: str) -> dict[str, Any]:
    problem, given = _unmark(problem)
    solution, derived = _unmark(" ".join(steps) + f" Therefore the answer is $\\boxed{{{answer}}}$.")
    worked = demonstrable_results(solution)
    for span in derived:
        if span[2] == COMPUTED and (span[0], span[1]) in worked:
            span[2] = COMPUTED_OP
    difficulty = round(min(5.0, max(1.0, difficulty)), 1)
    return {
        "domain": [f"Mathematics -> {domain}"],
        "difficulty": difficulty,
        "problem": problem,
        "solution": solution,
        "answer": answer,
        "source": SOURCE,
        SPANS_FIELD: {"problem": given, "solution": derived},
    }


def _poly(b: int, c: int, mark=_plain) -> str:
    """``x^2 + bx + c`` with the signs written out (the exponent is template text)."""
    poly = "x^2" + (
        f" + {_lin(b, 0, mark_a=mark)}" if b > 0 else f" - {_lin(-b, 0, mark_a=mark)}" if b < 0 else ""
    )
    return poly + (f" + {mark(c)}" if c > 0 else f" - {mark(-c)}" if c < 0 else "")
