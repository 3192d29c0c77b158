"""The algebra families of SynthMath: linear equations and systems, arithmetic and geometric series,
quadratic equations. Each takes the generator's ``random.Random`` and returns one record; they are
registered, in a fixed order, in ``rpt_data.synth.families.FAMILIES``.
"""

from __future__ import annotations

import random
from typing import Any

from rpt_data.synth.record import _c, _factor, _g, _lin, _p, _plain, _poly, _record


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
