"""Benchmark: what scoring pass rates costs (``rpt-train passrate``) against one RL step, on one model.

Not a test. In one process, on one thread, from the same model and shards: (1) ``score_chunk`` (the work of
``rpt-train passrate`` per position: one forward for ``p_true``, one greedy rollout, k sampled rollouts) on
``--positions`` training positions, and (2) ``--steps`` steps of ``Trainer.train_step`` with the recipe's
``[train]`` settings (B contexts x G rollouts, then the update), after one warm-up step. Both are CPU
seconds of this process (``time.process_time``), so a busy machine slows both alike; the ratio is the
number to read: positions scored for the cost of one RL step.

    .venv/bin/python benchmarks/bench_passrate.py runs/demo --config pipelines/tiny-cpu.toml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.runtime.config import build_config, load_toml_section
from rpt_core.runtime.progress import Progress
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval.run import TRAINING_KEYS
from rpt_train.passrate.score import PassRateConfig, load_rows, score_chunk
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a demo directory holding base/ and shards/")
    ap.add_argument("--config", default="pipelines/tiny-cpu.toml")
    ap.add_argument("--positions", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train = load_toml_section(args.config, "train")
    base, shards = str(args.run / "base"), str(args.run / "shards")
    inherited = {k: train[k] for k in TRAINING_KEYS if k in train}
    typed = {"shards": shards, "model": base, "max_samples": args.positions, "quiet": True}
    pcfg = build_config(PassRateConfig, inherited, load_toml_section(args.config, "passrate"), typed)
    rows, _, _ = load_rows(pcfg)
    tok = Tokenizer.load(base)
    model = Qwen3ForCausalLM.from_pretrained(base).eval()
    t0 = time.process_time()
    scores = score_chunk(model, tok, rows, pcfg.settings(tok, 0), Progress(None, quiet=True))
    score_s = time.process_time() - t0
    with tempfile.TemporaryDirectory() as out:
        tcfg = build_config(
            TrainConfig,
            train,
            {"shards": shards, "model": base, "out": out, "quiet": True, "save_every": 0, "sample_every": 0},
        )
        trainer = Trainer(tcfg)
        trainer.train_step()  # warm-up
        t0 = time.process_time()
        steps = [trainer.train_step() for _ in range(args.steps)]
        step_s = (time.process_time() - t0) / args.steps
    per_position = score_s / len(rows)
    result = {
        "positions": len(rows),
        "samples": pcfg.samples,
        "score_cpu_s": round(score_s, 2),
        "score_cpu_s_per_position": round(per_position, 4),
        "rl_step_cpu_s": round(step_s, 2),
        "rl_step_contexts": tcfg.sampling.batch_size,
        "rl_step_rollouts": tcfg.sampling.batch_size * tcfg.sampling.num_generations,
        "positions_per_rl_step": round(step_s / per_position, 1),
        "rl_mean_completion_tokens": round(sum(m["completion_len_mean"] for m in steps) / len(steps), 1),
        "pass1": sum(scores["n_correct"]) / (len(rows) * pcfg.samples),
    }
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
