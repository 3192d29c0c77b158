"""``rpt-data generate``: write a SynthMath corpus (OmniMATH-format JSON lines) reproducibly.

``rpt-data generate --n 3000 --seed 0 --out data/synthmath.jsonl`` recreates the committed sample byte for
byte (the families are in ``rpt_data.synth.families``). ``--think-fraction p`` turns a share p of the
documents into reasoning demonstrations (``rpt_data.synth.think``): the pretraining corpus of a base model
that thinks before it predicts. Plain records carry ``spans`` (what each number is,
``rpt_core.data.corpus.spans``); demonstrations and drills do not. The file is written atomically (temp file,
then rename).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from rpt_core.data.corpus.spans import COMPUTED_OP, GIVEN, SPANS_FIELD
from rpt_core.runtime.config import check, option
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import atomic_path, sha256_file
from rpt_core.runtime.progress import Progress
from rpt_data.synth.families import dump_record, generate_records
from rpt_data.synth.think import THINK_CLOSE, THINK_OPEN, add_thoughts, demonstrable_results, drill

# Empty thoughts per demonstration: enough that "think, find nothing to work out, go on" is a habit.
EMPTY_IN_PROBLEM, EMPTY_IN_SOLUTION = 2, 4
# In a drill demonstration (--drills-only): a drill is a sentence and one equation, so fewer.
DRILL_EMPTY_IN_PROBLEM, DRILL_EMPTY_IN_SOLUTION = 1, 2
_THOUGHT = re.compile(f"{re.escape(THINK_OPEN)}.*?{re.escape(THINK_CLOSE)}")
_NUMBER = re.compile(r"\d+")  # a drill states non-negative integers only


@dataclass
class GenerateConfig:
    n: int = option(3000, "Number of records.", ge=1)
    seed: int = option(0, "Random seed (same seed, same bytes).")
    out: str = option("data/synthmath.jsonl", "Output .jsonl path (written atomically).")
    think_fraction: float = option(
        0.0, "Share of documents that become reasoning demonstrations (<think> scratch work).", ge=0, le=1
    )
    think_results: float = option(
        0.8, "In a demonstration, the share of +, -, x results worked out in a thought.", ge=0, le=1
    )
    think_drills: float = option(
        0.0, "Extra arithmetic drills (+, -, x worked out in a thought), as a share of --n.", ge=0
    )
    drills_only: bool = option(
        False,
        "Every record is a plain arithmetic drill (one +, - or x); --think-fraction of them become "
        "demonstrations whose thought may start inside the result (--think-results: the share of results "
        "worked out).",
    )
    quiet: bool = option(False, "No progress display.")

    def __post_init__(self) -> None:
        check(self)


def demonstration(record: dict, rng: random.Random, think_results: float) -> dict:
    """The record as a reasoning demonstration: worked and empty thoughts in its solution, empty ones in its
    problem.

    Its ``spans`` are dropped: a thought may open inside a number, splitting a span, and a pretraining
    corpus has no use for position classes (only RPT shards do, and their corpus stays plain).
    """
    return {
        **{k: v for k, v in record.items() if k != SPANS_FIELD},
        "problem": add_thoughts(record["problem"], rng, p_result=0.0, empty=EMPTY_IN_PROBLEM),
        "solution": add_thoughts(record["solution"], rng, p_result=think_results, empty=EMPTY_IN_SOLUTION),
    }


def drill_demonstration(record: dict, rng: random.Random, think_results: float) -> dict:
    """A plain drill as a demonstration: its result worked out in a thought that starts before the result
    or inside it (``add_thoughts``), and empty thoughts elsewhere; its ``spans`` dropped, as in
    ``demonstration``."""
    return {
        **{k: v for k, v in record.items() if k != SPANS_FIELD},
        "problem": add_thoughts(record["problem"], rng, p_result=0.0, empty=DRILL_EMPTY_IN_PROBLEM),
        "solution": add_thoughts(
            record["solution"], rng, p_result=think_results, empty=DRILL_EMPTY_IN_SOLUTION
        ),
    }


def drill_record(rng: random.Random, plain: bool = False) -> dict:
    """One arithmetic drill (``rpt_data.synth.think.drill``): with its worked thought, or ``plain`` without it
    and with ``spans``: the operands the problem states are ``given``, the result ``computed_op`` (the
    operands the solution restates are copied text)."""
    problem, solution, answer = drill(rng)
    record = {
        "domain": ["Mathematics -> Prealgebra -> Arithmetic"],
        "difficulty": 1.0,
        "problem": problem,
        "solution": solution,
        "answer": answer,
        "source": "rpt-synth-drill",
    }
    if plain:
        record["solution"] = solution = _THOUGHT.sub("", solution)
        record[SPANS_FIELD] = {
            "problem": [[m.start(), m.end(), GIVEN] for m in _NUMBER.finditer(problem)],
            "solution": [[a, b, COMPUTED_OP] for a, b in sorted(demonstrable_results(solution))],
        }
    return record


def write_corpus(
    out: str | Path,
    n: int,
    seed: int = 0,
    quiet: bool = True,
    think_fraction: float = 0.0,
    think_results: float = 0.8,
    think_drills: float = 0.0,
    drills_only: bool = False,
) -> tuple[str, int]:
    """Generate ``n`` records from ``seed`` into ``out`` (JSON lines); returns (sha256, records written).

    A share ``think_fraction`` of them become reasoning demonstrations, chosen and written from their own
    generator, so the plain records are the same whatever the fraction; ``think_drills * n`` arithmetic
    drills are interleaved at random places. With ``drills_only`` every record is a plain drill and a share
    ``think_fraction`` of them demonstrations (``drill_demonstration``); ``think_drills`` must then be 0.
    """
    if n < 1:
        raise RptError(f"--n must be at least 1, got {n}")
    if drills_only and think_drills:
        raise RptError("--think-drills adds drills to generated problems; with --drills-only leave it at 0")
    out = Path(out)
    if out.is_dir():
        raise RptError(f"{out}: is a directory; give a .jsonl file path")
    progress = Progress(n, unit="records", desc="generate", quiet=quiet)
    try:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            think_rng, drill_rng = random.Random(f"think:{seed}"), random.Random(f"drill:{seed}")
            p_drill = think_drills / (1 + think_drills)  # per written document
            written = n
            if drills_only:
                for _ in range(n):
                    record = drill_record(drill_rng, plain=True)
                    if think_fraction and think_rng.random() < think_fraction:
                        record = drill_demonstration(record, think_rng, think_results)
                    f.write(dump_record(record))
                    progress.update(1)
            for record in generate_records(n, seed) if not drills_only else ():
                while think_drills and drill_rng.random() < p_drill:
                    f.write(dump_record(drill_record(drill_rng)))
                    written += 1
                if think_fraction and think_rng.random() < think_fraction:
                    record = demonstration(record, think_rng, think_results)
                f.write(dump_record(record))
                progress.update(1)
    except OSError as e:
        raise RptError(f"{out}: cannot write ({e.strerror or e})") from None
    finally:
        progress.close()
    return sha256_file(out), written
