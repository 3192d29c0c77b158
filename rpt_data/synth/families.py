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
(template constants, restated operands and results) are ``text``. Those marks and the number formatting
are ``rpt_data.synth.record``; the algebra families are ``rpt_data.synth.algebra``, the others are here,
with the registry ``FAMILIES`` and the generator.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from rpt_data.synth.algebra import (
    arithmetic_series,
    geometric_series,
    linear_equation,
    linear_system,
    quadratic_roots,
)
from rpt_data.synth.record import CDOT, FIELD_ORDER, _c, _dec, _g, _num, _record

MAX_TRIES = 50  # redraws per record to avoid repeating a problem text


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
