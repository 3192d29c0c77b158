"""Which rpt modules one ``Trainer.train_step`` passes through (a map of the code, not a timing).

Builds the tests' tiny task (``tests.helpers``), takes one warm-up step, then traces one step with
``sys.setprofile``: every call from one rpt module into another counts. Prints the modules, the distinct
module-to-module call edges (and how many calls crossed them), and the calls back into the trainer module
from elsewhere (callbacks; the step should have none).

    PYTHONPATH=. python benchmarks/step_trace.py [rpt | rpt-dyn | rlp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from rpt_train.rl.trainer import Trainer
from tests.helpers import save_model_dir, tiny_tokenizer, write_task_shards
from tests.helpers.runs import task_config

PACKAGES = ("rpt_core", "rpt_data", "rpt_train")
TRAINER = "rpt_train.rl.trainer"
VARIANTS = {  # the tiny task's run (tests.helpers.runs.task_config) plus these options
    "rpt": {},
    "rpt-dyn": {"dynamic_sampling": True},
    "rlp": {"objective": "rlp", "template": "think", "max_new_tokens": 3},
}


def trainer_for(variant: str, root: Path) -> Trainer:
    tok = tiny_tokenizer(think=variant == "rlp")
    shards, model = write_task_shards(root / "shards", tok), save_model_dir(root / "model", tok)
    return Trainer(task_config(shards, model, root / "out", **VARIANTS[variant]))


def trace_step(trainer: Trainer) -> tuple[Counter, Counter, int]:
    """(calls per module, calls per (caller, callee) module edge, calls back into the trainer)."""
    modules: Counter = Counter()
    edges: Counter = Counter()

    def profile(frame, event, arg):
        if event != "call":
            return
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(PACKAGES):
            return
        modules[name] += 1
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if caller.startswith(PACKAGES) and caller != name:
            edges[(caller, name)] += 1

    sys.setprofile(profile)
    try:
        trainer.train_step()
    finally:
        sys.setprofile(None)
    back = sum(n for (_, callee), n in edges.items() if callee == TRAINER)
    return modules, edges, back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", nargs="?", default="rpt", choices=tuple(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(args.variant, Path(tmp))
        trainer.train_step()  # warm-up: lazy imports and first-call paths
        modules, edges, back = trace_step(trainer)
    calls = sum(edges.values())
    summary = (
        f"{len(modules)} modules, {len(edges)} module edges ({calls} calls), {back} back into the trainer"
    )
    print(f"{args.variant}: {summary}")
    for name in sorted(modules):
        print(f"  {name}")


if __name__ == "__main__":
    main()
