"""SynthMath: a deterministic generator of worked math problems in the OmniMATH record format.

Written for this project (no third-party text), so the repository can ship a small corpus and tests can
build one of any size. Each solution works step by step, with math in ``$...$``, and ends in
``\\boxed{answer}``; many of its tokens (intermediate results, the final answer) are computable from the
text before them, which is exactly what next-token reasoning under RPT rewards.

``generate_records(n, seed)`` draws only from ``random.Random(seed)``, so the same arguments give the same
records, and ``dump_record`` fixes their bytes (key order, no ASCII escaping): the committed
``data/synthmath.jsonl`` is reproduced byte for byte by ``rpt-data generate --n 3000 --seed 0``.

Every record also says what its numbers are (``spans``, classes in ``rpt_core.data.corpus.spans``): a family
wraps each number the problem states in ``_g`` and each result the solution derives, where it first
appears, in ``_c``; ``_record`` strips the invisible marks and keeps their character spans, and a ``_c``
result that ``rpt_data.synth.think`` can work out in a scratchpad becomes ``computed_op``. Unmarked numbers
(template constants, restated operands and results) are ``text``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from rpt_core.data.corpus.spans import COMPUTED, COMPUTED_OP, GIVEN, SPANS_FIELD
from rpt_data.synth.think import demonstrable_results

SOURCE = "rpt-synth"
FIELD_ORDER = ("domain", "difficulty", "problem", "solution", "answer", "source", SPANS_FIELD)
CDOT = " \\cdot "
MAX_TRIES = 50  # redraws per record to avoid repeating a problem text


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


# ---- families: each takes the generator's Random and returns one record ---------------------------------


def arithmetic_chain(rng: random.Random) -> dict[str, Any]:
    a, b, c, e = rng.randint(2, 99), rng.randint(2, 19), rng.randint(2, 19), rng.randint(2, 12)
    d = e * rng.randint(2, 15)
    expr = f"{_g(a)} + {_g(b)} \\times {_g(c)} - {_g(d)} \\div {_g(e)}"
    problem = rng.choice(
        [f"Compute ${expr}$.", f"What is the value of ${expr}$?", f"Evaluate the expression ${expr}$."]
    )
    p, q = b * c, d // e
    steps = [
        "Multiplication and division come before addition and subtraction.",
        f"First, ${b} \\times {c} = {_c(p)}$.",
        f"Next, ${d} \\div {e} = {_c(q)}$.",
        f"Now work from left to right: ${a} + {p} = {_c(a + p)}$, "
        f"and then ${a + p} - {q} = {_c(a + p - q)}$.",
    ]
    return _record("Prealgebra -> Arithmetic", 1.0 + (p > 100) * 0.5, problem, steps, str(a + p - q))


def linear_equation(rng: random.Random) -> dict[str, Any]:
    x, a = rng.choice([v for v in range(-12, 13) if v]), rng.randint(2, 12)
    c = rng.choice([0, rng.randint(1, a - 1)])
    b = rng.choice([v for v in range(-30, 31) if v])
    d = (a - c) * x + b
    lhs, rhs = _lin(a, b, mark_a=_g, mark_b=_g), _lin(c, d, mark_a=_g, mark_b=_g)
    problem = rng.choice(
        [
            f"Solve for $x$: ${lhs} = {rhs}$.",
            f"Find the value of $x$ such that ${lhs} = {rhs}$.",
            f"If ${lhs} = {rhs}$, what is $x$?",
        ]
    )
    k, steps = a - c, []
    if c:
        steps.append(f"Subtract ${_lin(c, 0)}$ from both sides to get ${_lin(k, b, mark_a=_c)} = {d}$.")
    steps.append(
        f"{'Subtract' if b > 0 else 'Add'} ${abs(b)}$ {'from' if b > 0 else 'to'} both sides: "
        f"${_lin(k, 0)} = {d} {'-' if b > 0 else '+'} {abs(b)} = {_c(d - b)}$."
    )
    if k != 1:
        steps.append(f"Divide both sides by ${k}$: $x = \\frac{{{d - b}}}{{{k}}} = {_c(x)}$.")
    plus_d = f" {'+' if d >= 0 else '-'} {abs(d)}"
    right = (
        f"${c} \\cdot {_p(x)}{plus_d} = {_c(c * x + d)}$, which agree" if c else f"the right side is ${d}$"
    )
    sign = "+" if b > 0 else "-"
    steps.append(f"Check: ${a} \\cdot {_p(x)} {sign} {abs(b)} = {_c(a * x + b)}$ and {right}.")
    return _record("Algebra -> Linear Equations", 1.5 + 0.5 * bool(c) + 0.3 * (x < 0), problem, steps, str(x))


def linear_system(rng: random.Random) -> dict[str, Any]:
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    a1, b1, a2, b2 = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 6), -rng.randint(1, 6)
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    eq1 = f"{_lin(a1, 0, mark_a=_g)} + {_lin(b1, 0, 'y', mark_a=_g)} = {_g(c1)}"
    eq2 = f"{_lin(a2, 0, mark_a=_g)} - {_lin(-b2, 0, 'y', mark_a=_g)} = {_g(c2)}"
    problem = rng.choice(
        [
            f"Solve the system ${eq1}$ and ${eq2}$. What is $x + y$?",
            f"The numbers $x$ and $y$ satisfy ${eq1}$ and ${eq2}$. Find $x + y$.",
        ]
    )
    m1, m2 = -b2, b1  # multiply so the y terms cancel when added
    steps = (
        []
        if m1 == 1
        else [
            f"Multiply the first equation by ${m1}$: "
            f"${_lin(a1 * m1, 0, mark_a=_c)} + {_lin(b1 * m1, 0, 'y', mark_a=_c)} = {_c(c1 * m1)}$."
        ]
    )
    steps += (
        []
        if m2 == 1
        else [
            f"Multiply the second equation by ${m2}$: "
            f"${_lin(a2 * m2, 0, mark_a=_c)} - {_lin(-b2 * m2, 0, 'y', mark_a=_c)} = {_c(c2 * m2)}$."
        ]
    )
    steps += [
        f"Adding them eliminates $y$: ${_lin(a1 * m1 + a2 * m2, 0, mark_a=_c)} = {_c(c1 * m1 + c2 * m2)}$, "
        f"so $x = {_c(x)}$.",
        f"Substituting into the first equation: ${a1} \\cdot {_p(x)} + {_lin(b1, 0, 'y')} = {c1}$, so "
        f"${_lin(b1, 0, 'y')} = {_c(c1 - a1 * x)}$ and $y = {_c(y)}$.",
        f"Hence $x + y = {x} + {_p(y)} = {_c(x + y)}$.",
    ]
    return _record(
        "Algebra -> Systems of Equations", 2.5 + 0.5 * (max(m1, m2) > 3), problem, steps, str(x + y)
    )


def modular_power(rng: random.Random) -> dict[str, Any]:
    a, k, m = rng.randint(2, 19), rng.randint(4, 12), rng.randint(5, 17)
    problem = rng.choice(
        [
            f"Find the remainder when ${_g(a)}^{{{_g(k)}}}$ is divided by ${_g(m)}$.",
            f"What is ${_g(a)}^{{{_g(k)}}} \\bmod {_g(m)}$?",
        ]
    )
    r = a % m
    steps = [
        f"Work modulo ${m}$ and reduce after every multiplication.",
        f"${a} \\equiv {_c(r)} \\pmod{{{m}}}$.",
    ]
    power = r
    for i in range(2, k + 1):
        reduce = f" \\equiv {_c(power * r % m)}" if power * r >= m else ""
        steps.append(f"${a}^{{{i}}} \\equiv {power} \\cdot {r} = {_c(power * r)}{reduce} \\pmod{{{m}}}$.")
        power = power * r % m
    return _record("Number Theory -> Modular Arithmetic", 2.5 + k / 8, problem, steps, str(power))


def division_remainder(rng: random.Random) -> dict[str, Any]:
    d = rng.randint(3, 60)
    q, r = rng.randint(5, 400), rng.randint(0, d - 1)
    n = d * q + r
    problem = rng.choice(
        [
            f"What is the remainder when ${_g(n)}$ is divided by ${_g(d)}$?",
            f"Find the remainder of ${_g(n)} \\div {_g(d)}$.",
            f"{_g(n)} marbles are shared equally among {_g(d)} children, each getting as many as possible. "
            "How many marbles are left over?",
        ]
    )
    steps = [
        f"The largest multiple of ${d}$ not exceeding ${n}$ is ${d} \\times {_c(q)} = {_c(d * q)}$.",
        f"So ${n} = {d} \\times {q} + {_c(r)}$, and the remainder is ${n} - {d * q} = {_c(r)}$.",
    ]
    return _record("Number Theory -> Division", 1.0 + (n > 5000) * 0.5, problem, steps, str(r))


def permutations(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(4, 12)
    k = rng.randint(2, min(n, 6))
    thing = rng.choice(["students", "books", "flags", "runners", "paintings"])
    problem = rng.choice(
        [
            f"In how many ways can {_g(k)} of {_g(n)} different {thing} be arranged in a row?",
            f"From {_g(n)} different {thing}, an ordered list of {_g(k)} is made. "
            "How many such lists are there?",
        ]
    )
    factors = list(range(n, n - k, -1))
    steps = [
        f"There are ${n}$ choices for the first place, ${_c(n - 1)}$ for the second, and so on, down to "
        f"${_c(n - k + 1)}$ for place ${k}$."
    ]
    acc = factors[0]
    for f in factors[1:]:
        steps.append(f"${acc} \\times {f} = {_c(acc * f)}$.")
        acc *= f
    return _record("Combinatorics -> Permutations", 1.5 + k / 4, problem, steps, str(acc))


def combinations(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(5, 16)
    k = rng.randint(2, min(5, n - 2))
    thing = rng.choice(["committee members", "toppings", "cards", "questions", "players"])
    problem = rng.choice(
        [
            f"How many ways are there to choose {_g(k)} {thing} from {_g(n)}, if order does not matter?",
            f"Compute $\\binom{{{_g(n)}}}{{{_g(k)}}}$, the number of ways to pick {k} {thing} out of {n}.",
        ]
    )
    top = math.perm(n, k)
    # The factors after the first (n or k restated) are counted down: derived.
    num, den = (CDOT.join(str(v) if v == hi else _c(v) for v in range(hi, hi - k, -1)) for hi in (n, k))
    steps = [
        f"$\\binom{{{n}}}{{{k}}} = \\frac{{{num}}}{{{den}}}$.",
        f"The numerator is ${_c(top)}$ and the denominator is ${k}! = {_c(math.factorial(k))}$.",
        f"So $\\binom{{{n}}}{{{k}}} = \\frac{{{top}}}{{{math.factorial(k)}}} = {_c(math.comb(n, k))}$.",
    ]
    return _record("Combinatorics -> Combinations", 2.0 + k / 4, problem, steps, str(math.comb(n, k)))


def arithmetic_series(rng: random.Random) -> dict[str, Any]:
    a, d, n = rng.randint(-20, 30), rng.randint(1, 12), rng.randint(5, 60)
    last, total = a + (n - 1) * d, n * (2 * a + (n - 1) * d) // 2
    problem = rng.choice(
        [
            f"An arithmetic sequence starts at ${_g(a)}$ with common difference ${_g(d)}$. "
            f"Find the sum of its first ${_g(n)}$ terms.",
            f"Find the sum ${_g(a)} + {_p(a + d, _g)} + {_p(a + 2 * d, _g)} + \\cdots + {_p(last, _g)}$.",
        ]
    )
    # The first phrasing states d and n (the solution restates them, and derives the last term); the
    # second states the terms (the solution derives d and n, and restates the last term).
    mark_dn, mark_last = (_plain, _c) if problem.startswith("An ") else (_c, _plain)
    steps = [
        f"The terms go up by ${mark_dn(d)}$, so there are $\\frac{{{last} - {_p(a)}}}{{{d}}} + 1 = "
        f"{mark_dn(n)}$ terms and the last one is ${a} + {_c(n - 1)} \\cdot {d} = {mark_last(last)}$.",
        f"The sum is $\\frac{{{n}({a} + {_p(last)})}}{{2}} = "
        f"\\frac{{{n} \\cdot {_c(a + last)}}}{{2}} = {_c(total)}$.",
    ]
    return _record("Algebra -> Sequences and Series", 2.0 + (n > 30) * 0.5, problem, steps, str(total))


def geometric_series(rng: random.Random) -> dict[str, Any]:
    a, r, n = rng.randint(1, 9), rng.randint(2, 5), rng.randint(3, 8)
    terms = [a * r**i for i in range(n)]
    problem = rng.choice(
        [
            f"Find the sum of the first ${_g(n)}$ terms of the geometric sequence with first term "
            f"${_g(a)}$ and ratio ${_g(r)}$.",
            f"Compute ${' + '.join(map(_g, terms))}$.",
        ]
    )
    total = a * (r**n - 1) // (r - 1)
    # Stated by the first phrasing (restated here); read off the listed terms in the second (derived).
    mark = _plain if problem.startswith("Find ") else _c
    steps = [
        f"The first term is ${a}$, the ratio is ${mark(r)}$ and there are ${mark(n)}$ terms.",
        f"The sum is ${a} \\cdot \\frac{{{r}^{{{n}}} - 1}}{{{r} - 1}} = {a} \\cdot "
        f"\\frac{{{_c(r**n - 1)}}}{{{_c(r - 1)}}} = {a} \\cdot {_c((r**n - 1) // (r - 1))} = {_c(total)}$.",
    ]
    return _record("Algebra -> Sequences and Series", 2.5 + n / 8, problem, steps, str(total))


def fraction_sum(rng: random.Random) -> dict[str, Any]:
    b, d = rng.randint(2, 15), rng.randint(2, 15)
    a, c = rng.randint(1, 2 * b), rng.randint(1, 2 * d)
    op = rng.choice(["+", "-"])
    x, y = Fraction(a, b), Fraction(c, d)
    result = x + y if op == "+" else x - y
    problem = rng.choice(
        [
            f"Compute $\\frac{{{_g(a)}}}{{{_g(b)}}} {op} \\frac{{{_g(c)}}}{{{_g(d)}}}$ in lowest terms.",
            f"Simplify $\\frac{{{_g(a)}}}{{{_g(b)}}} {op} \\frac{{{_g(c)}}}{{{_g(d)}}}$.",
        ]
    )
    den = math.lcm(b, d)
    na, nc = a * den // b, c * den // d
    raw = na + nc if op == "+" else na - nc
    steps = [
        f"The least common denominator of ${b}$ and ${d}$ is ${_c(den)}$.",
        f"$\\frac{{{a}}}{{{b}}} = \\frac{{{_c(na)}}}{{{den}}}$ and "
        f"$\\frac{{{c}}}{{{d}}} = \\frac{{{_c(nc)}}}{{{den}}}$.",
        f"So the result is $\\frac{{{na} {op} {nc}}}{{{den}}} = \\frac{{{_c(raw)}}}{{{den}}}$.",
    ]
    g = math.gcd(raw, den)
    if g > 1:
        steps.append(f"Dividing numerator and denominator by ${_c(g)}$ gives ${_c(_num(result))}$.")
    return _record("Prealgebra -> Fractions", 1.5 + (den > 30) * 0.5, problem, steps, _num(result))


def percent_change(rng: random.Random) -> dict[str, Any]:
    price = Fraction(rng.randint(2, 80) * 10)
    up, down = rng.choice([5, 10, 15, 20, 25, 30, 40, 50]), rng.choice([5, 10, 20, 25, 50])
    item = rng.choice(["jacket", "bicycle", "lamp", "ticket", "backpack"])
    problem = rng.choice(
        [
            f"A {item} costs ${_g(_num(price))}$ dollars. Its price rises by ${_g(up)}\\%$ and then falls by "
            f"${_g(down)}\\%$. What is the final price in dollars?",
            f"The price of a {item} is ${_g(_num(price))}$ dollars. "
            f"After a ${_g(up)}\\%$ increase followed by a ${_g(down)}\\%$ discount, "
            "how many dollars does it cost?",
        ]
    )
    up_factor, down_factor = Fraction(100 + up, 100), Fraction(100 - down, 100)
    mid = price * up_factor
    final = mid * down_factor
    steps = [
        f"After the increase the price is ${_num(price)} \\times {_c(_dec(up_factor))} = {_c(_dec(mid))}$.",
        f"After the decrease it is ${_dec(mid)} \\times {_c(_dec(down_factor))} = {_c(_dec(final))}$.",
    ]
    return _record(
        "Prealgebra -> Percentages", 1.5 + (final.denominator > 1) * 0.5, problem, steps, _dec(final)
    )


def unit_conversion(rng: random.Random) -> dict[str, Any]:
    speed, minutes = rng.randint(3, 120), rng.choice([6, 12, 15, 18, 24, 30, 36, 45, 48, 54])
    who = rng.choice(["A car", "A cyclist", "A train", "A boat", "A runner"])
    problem = rng.choice(
        [
            f"{who} moves at ${_g(speed)}$ km/h for ${_g(minutes)}$ minutes. How many meters does it travel?",
            f"How many meters are covered in ${_g(minutes)}$ minutes at a steady ${_g(speed)}$ "
            "kilometers per hour?",
        ]
    )
    hours = Fraction(minutes, 60)
    km = speed * hours
    meters = km * 1000
    steps = [
        f"${minutes}$ minutes is $\\frac{{{minutes}}}{{60}} = {_c(_dec(hours))}$ hours.",
        f"The distance is ${speed} \\times {_dec(hours)} = {_c(_dec(km))}$ km.",
        f"One kilometer is $1000$ meters, so that is ${_dec(km)} \\times 1000 = {_c(_num(meters))}$ meters.",
    ]
    return _record(
        "Prealgebra -> Unit Conversion", 1.0 + (km.denominator > 1) * 0.5, problem, steps, _num(meters)
    )


def gcd_euclid(rng: random.Random) -> dict[str, Any]:
    g = rng.randint(2, 30)
    a, b = g * rng.randint(5, 60), g * rng.randint(2, 40)
    a, b = max(a, b), min(a, b)
    problem = rng.choice(
        [
            f"Find the greatest common divisor of ${_g(a)}$ and ${_g(b)}$.",
            f"Use the Euclidean algorithm to compute $\\gcd({_g(a)}, {_g(b)})$.",
        ]
    )
    steps, x, y = [], a, b
    while y:
        steps.append(f"${x} = {y} \\times {_c(x // y)} + {_c(x % y)}$.")
        x, y = y, x % y
    steps.append(f"The last nonzero remainder is ${x}$, so $\\gcd({a}, {b}) = {x}$.")
    return _record("Number Theory -> Greatest Common Divisors", 1.5 + len(steps) / 4, problem, steps, str(x))


def _poly(b: int, c: int, mark=_plain) -> str:
    """``x^2 + bx + c`` with the signs written out (the exponent is template text)."""
    poly = "x^2" + (
        f" + {_lin(b, 0, mark_a=mark)}" if b > 0 else f" - {_lin(-b, 0, mark_a=mark)}" if b < 0 else ""
    )
    return poly + (f" + {mark(c)}" if c > 0 else f" - {mark(-c)}" if c < 0 else "")


def quadratic_roots(rng: random.Random) -> dict[str, Any]:
    r1, r2 = rng.sample(range(-12, 13), 2)
    b, c = -(r1 + r2), r1 * r2
    poly, stated = _poly(b, c), _poly(b, c, _g)
    problem = rng.choice(
        [
            f"Find the larger root of ${stated} = 0$.",
            f"What is the greatest real solution of the equation ${stated} = 0$?",
        ]
    )
    lo, hi = sorted((r1, r2))
    steps = [
        f"We need two numbers whose product is ${c}$ and whose sum is ${_c(-b)}$: they are ${_c(r1)}$ and "
        f"${_c(r2)}$.",
        f"So ${poly} = {_factor(r1)}{_factor(r2)}$, and the roots are $x = {lo}$ and $x = {hi}$.",
    ]
    return _record("Algebra -> Quadratic Equations", 2.0 + 0.5 * (r1 < 0 or r2 < 0), problem, steps, str(hi))


# Registry in a fixed order: generate_records draws families by position, so reordering changes the output.
FAMILIES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        arithmetic_chain,
        linear_equation,
        linear_system,
        modular_power,
        division_remainder,
        permutations,
        combinations,
        arithmetic_series,
        geometric_series,
        fraction_sum,
        percent_change,
        unit_conversion,
        gcd_euclid,
        quadratic_roots,
    )
}


def generate_records(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` records with distinct problem texts, reproducible from ``seed`` alone."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    names = list(FAMILIES)
    seen: set[str] = set()
    for _ in range(n):
        for _try in range(MAX_TRIES):
            record = FAMILIES[rng.choice(names)](rng)
            if record["problem"] not in seen:
                break
        seen.add(record["problem"])
        yield {key: record[key] for key in FIELD_ORDER}


def dump_record(record: dict[str, Any]) -> str:
    """One JSON line with newline: this exact serialisation makes the committed file reproducible."""
    return json.dumps(record, ensure_ascii=False) + "\n"
