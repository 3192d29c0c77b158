"""Reasoning demonstrations: worked ``<think> ... </think>`` scratch work spliced into synthetic documents.

A tiny model cannot guess the result of ``341 + 27`` from the text before it, but it can learn to work it
out digit by digit in a scratchpad. ``add_thoughts`` finds results of integer addition, subtraction and
multiplication in a document (``A + B = C``, ``A - B = C``, ``A \\times B = C``, ``A \\cdot B = C`` with
``C`` checked) and, with probability ``p_result`` each, inserts a thought that does the column arithmetic
before the text goes on. The thought starts at a random digit of ``C`` (most often the first), so the model
also learns to finish a number it has begun. *Empty* thoughts (``<think></think>``) go at random token
boundaries elsewhere (before words, numbers, symbols alike), so a model asked to think where nothing
needs working out learns to stop at once and continue as it would have without the thought.

Everything else (division, fractions, powers, remainders, problem statements) gets no demonstration: a base
model pretrained on such documents reasons, but only for part of what a corpus asks, which leaves RL
something to add. The scratch formats, one column per step, least significant digit first::

    341 + 27   ->  <think>341+27: 1+7+0=8, 4+2+0=6, 3+0+0=3 so 368</think>
    341 - 27   ->  <think>341-27: 11-7-0=4, 4-2-1=1, 3-0-0=3 so 314</think>   (a leading 1 = borrow)
    18 \\times 17 -> <think>18*17: 18*7: 8*7+0=56, 1*7+5=12 so 126, 18*1: 8*1+0=8, 1*1+0=1 so 18,
                    126+180: 6+0+0=6, 2+8+0=10, 1+1+1=3 so 306</think>

Pure functions of a ``random.Random``, so generation stays deterministic.
"""

from __future__ import annotations

import random
import re

from rpt_core.text.chat import THINK_CLOSE, THINK_OPEN

# An integer result of A op B, with op one of + - \times \cdot, not inside a larger expression.
_RESULT = re.compile(
    r"(?<![\d.^{}\\a-zA-Z])(?<![\\]times )(?<![\\]cdot )(?<![\\]div )(?<![-+*/] )"
    r"(\d+) (\+|-|\\times|\\cdot) (\d+) = (\d+)(?![\d.])"
)
# Token boundaries of Qwen's pre-tokenizer (a word with its leading space, each digit, a run of symbols):
# an empty thought may go before any piece but the first.
_PIECE = re.compile(r" ?[A-Za-z]+|\d| ?[^\sA-Za-z\d]+|\s+")


def _digits(n: int) -> list[int]:
    return [int(d) for d in reversed(str(n))]  # least significant first


def add_scratch(a: int, b: int) -> str:
    """Column addition, one ``x+y+carry=sum`` per column, then ``so a+b``."""
    xs, ys, steps, carry = _digits(a), _digits(b), [], 0
    for i in range(max(len(xs), len(ys))):
        x, y = xs[i] if i < len(xs) else 0, ys[i] if i < len(ys) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return ", ".join(steps) + f" so {a + b}"


def sub_scratch(a: int, b: int) -> str:
    """Column subtraction (a >= b), ``x-y-borrow=d``; a column that borrows shows its top digit as 1x."""
    xs, ys, steps, borrow = _digits(a), _digits(b), [], 0
    for i in range(len(xs)):
        x, y = xs[i], ys[i] if i < len(ys) else 0
        d = x - y - borrow
        top = x if d >= 0 else 10 + x
        steps.append(f"{top}-{y}-{borrow}={top - y - borrow}")
        borrow = int(d < 0)
    return ", ".join(steps) + f" so {a - b}"


def mul_scratch(a: int, b: int) -> str:
    """Long multiplication: a times each digit of b (column steps), then the shifted partial sums added."""
    steps, total = [], 0
    for k, y in enumerate(_digits(b)):
        carry, cols = 0, []
        for x in _digits(a):
            s = x * y + carry
            cols.append(f"{x}*{y}+{carry}={s}")
            carry = s // 10
        partial = a * y
        steps.append(f"{a}*{y}: " + ", ".join(cols) + f" so {partial}")
        shifted = partial * 10**k
        if k:
            steps.append(f"{total}+{shifted}: " + add_scratch(total, shifted))
        total += shifted
    return ", ".join(steps) if len(steps) > 1 else steps[0]


def scratch(a: int, op: str, b: int) -> str | None:
    """The thought for ``a op b`` (without the think tags), or None for an op it does not cover."""
    if op == "+":
        return f"{a}+{b}: " + add_scratch(a, b)
    if op == "-" and a >= b:
        return f"{a}-{b}: " + sub_scratch(a, b)
    if op in ("\\times", "\\cdot"):
        if len(str(b)) > 2 and len(str(a)) <= 2:
            a, b = b, a  # multiply by the shorter number
        return f"{a}*{b}: " + mul_scratch(a, b) if len(str(b)) <= 2 else None
    return None


def _value(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _worked(text: str):
    """(match, thought) for every checked result in ``text`` that a thought can work out."""
    for m in _RESULT.finditer(text):
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        thought = scratch(a, op, b)
        if thought is not None and _value(a, op, b) == int(c):
            yield m, thought


def demonstrable_results(text: str) -> set[tuple[int, int]]:
    """(start, end) of every result in ``text`` that ``add_thoughts`` could precede with a worked thought:
    the ``computed_op`` class of ``rpt_core.data.corpus.spans``."""
    return {(m.start(4), m.end(4)) for m, _ in _worked(text)}


def add_thoughts(text: str, rng: random.Random, p_result: float = 0.8, empty: int = 2) -> str:
    """``text`` with thoughts before checked results (each with probability ``p_result``) and ``empty``
    empty thoughts at random token boundaries elsewhere."""
    spans: list[tuple[int, str]] = []  # (insert position, inserted text)
    for m, thought in _worked(text):
        c = m.group(4)
        if rng.random() >= p_result:
            continue
        # Mostly before the first digit; sometimes inside the number, after the digits already written.
        k = 0 if rng.random() < 0.6 or len(c) == 1 else rng.randrange(1, len(c))
        spans.append((m.start(4) + k, THINK_OPEN + thought + THINK_CLOSE))
    taken = {p for p, _ in spans}
    sites = [m.start() for m in _PIECE.finditer(text) if m.start() > 0 and m.start() not in taken]
    for pos in rng.sample(sites, min(empty, len(sites))):
        spans.append((pos, THINK_OPEN + THINK_CLOSE))
    for pos, insert in sorted(spans, reverse=True):
        text = text[:pos] + insert + text[pos:]
    return text


def drill(rng: random.Random) -> tuple[str, str, str]:
    """A short exercise, (problem, solution, answer): one +, - or x worked out in a thought.

    Mixed into a pretraining corpus, drills are the practice that makes the column arithmetic reliable
    (a tiny model sees the single-digit facts thousands of times); the documents still only demonstrate
    the three operations.
    """
    op = rng.choice(["+", "-", "\\times"])
    if op == "\\times":  # a one-digit factor keeps the thought short enough to practise often
        a, b = rng.randint(2, 999), rng.randint(2, 9)
    else:
        a, b = rng.randint(0, 9999), rng.randint(0, 9999)
        if op == "-" and a < b:
            a, b = b, a
    c = _value(a, op, b)
    thought = THINK_OPEN + scratch(a, op, b) + THINK_CLOSE
    problem = rng.choice([f"Compute ${a} {op} {b}$.", f"What is ${a} {op} {b}$?", f"Find ${a} {op} {b}$."])
    return problem, f"${a} {op} {b} = {thought}{c}$.", str(c)
