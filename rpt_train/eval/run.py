"""``rpt-train eval``: evaluate a base model and every checkpoint of an RPT run on the ``val/`` shards.

Writes ``OUT/eval.json`` (every number), prints a table shaped like the paper's Table 1, and draws
``OUT/eval.png`` (``rpt_train.eval.report``): accuracy per bucket against training step, and the run's
mean training reward. Finished models are cached in ``eval.json`` by checkpoint path and content hash, so
a rerun after new checkpoints evaluates only those.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpt_train.config import check, config_to_dict, option
from rpt_train.errors import RptError, warn
from rpt_train.eval.report import format_table, plot_report
from rpt_train.eval.score import BUCKETS, MODES, EvalSettings, evaluate_model, row_buckets, select_samples
from rpt_train.io import sha256_bytes, write_json_atomic
from rpt_train.lock import output_lock
from rpt_train.model import Qwen3ForCausalLM
from rpt_train.model.hf_io import weights_sha256
from rpt_train.progress import Progress
from rpt_train.prompts import TEMPLATES, load_template
from rpt_train.rl.checkpoint import checkpoint_steps
from rpt_train.rl.reward import REWARDS
from rpt_train.shards import check_tokenizer, checked_manifest, iter_rows, shard_paths
from rpt_train.tokenizer import Tokenizer

# What a model's reasoning must match to be compared with training: taken from a recipe's [train] table
# unless its [eval] table says otherwise (rpt_train.cli.eval).
TRAINING_KEYS = ("template", "answer_tokens", "max_prompt_tokens", "reward", "instruction_file")


@dataclass
class EvalConfig:
    shards: str = option(
        "shards", "RPT shard directory (from `rpt-data build`).", argument=True, required=True
    )
    base: str | None = option(None, "The model before RPT (plotted at step 0).")
    run: str | None = option(None, "An `rpt-train run` output directory: evaluates every checkpoint.")
    models: list[str] = option(
        default_factory=list, help="Any other HF-format model directory (repeatable).", flag="--model"
    )
    out: str = option("eval", "Where eval.json and eval.png go.")
    split: str = option("val", "Shard split to evaluate on.")
    modes: list[str] = option(
        default_factory=lambda: list(MODES),
        help="ntp and/or reasoning (repeatable).",
        choices=MODES,
        flag="--mode",
    )
    template: str = option("plain", "Prompt template of reasoning mode (as in training).", choices=TEMPLATES)
    answer_tokens: int = option(1, "plain template: tokens that form the prediction.", ge=1)
    instruction_file: str | None = option(None, "Replace the template's instruction text.")
    reward: str = option(
        "prefix", "The training reward; a reasoning rollout counts when it earns 1.", choices=REWARDS
    )
    max_samples: int | None = option(500, "Positions per bucket, chosen deterministically.", ge=1)
    max_prompt_tokens: int = option(512, "Contexts are left-truncated to this many tokens.", ge=1)
    max_new_tokens: int = option(256, "Reasoning completion cap; a cut-off completion is wrong.", ge=1)
    temperature: float = option(0.0, "Reasoning rollouts: 0 = greedy, else one seeded sample.", ge=0)
    batch_size: int = option(32, "Positions per generate() call.", ge=1)
    seed: int = option(0, "Seed of the position sample and of sampled rollouts.")
    device: str | None = option(None, "cpu | cuda | cuda:N (default: CUDA when present).")
    dtype: str | None = option(
        None, "Model dtype (default: the checkpoint's).", choices=("float32", "bfloat16")
    )
    quiet: bool = option(False, "No progress line, table or summary.")

    def __post_init__(self) -> None:
        check(self)

    def settings(self) -> EvalSettings:
        template = load_template(self.template, self.instruction_file, self.answer_tokens)
        return EvalSettings(template, self.max_prompt_tokens, self.max_new_tokens, self.temperature,
                            self.batch_size, self.seed, self.reward)  # fmt: skip


def discover_models(cfg: EvalConfig) -> list[tuple[str, int | None, Path]]:
    """(label, training step or None, directory) for the base model, each run checkpoint, and extras."""
    found: list[tuple[str, int | None, Path]] = []
    if cfg.base:
        found.append(("base", 0, Path(cfg.base)))
    if cfg.run:
        steps = checkpoint_steps(Path(cfg.run))
        if not steps:
            where = Path(cfg.run) / "checkpoints"
            raise RptError(f"{cfg.run}: no checkpoints under {where} (a complete one holds trainer_state.pt)")
        found += [(f"step {s}", s, p) for s, p in steps]
    found += [(Path(m).name, None, Path(m)) for m in cfg.models]
    if not found:
        raise RptError("nothing to evaluate: give --base, --run or --model")
    return found


def load_rows(cfg: EvalConfig) -> list[dict[str, Any]]:
    paths = shard_paths(cfg.shards, cfg.split)
    columns = ["doc_id", "position", "context", "label", "boundaries", "entropy", "token_id"]
    rows = [r for r in iter_rows(paths, columns) if r["entropy"] >= min(BUCKETS.values())]
    return select_samples(rows, cfg.max_samples, cfg.seed)


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """Hash of the selected positions and their ground truth: rebuilt shards must not reuse old scores."""
    h = [(r["doc_id"], r["position"], r["context"], bytes(r["label"]).hex(), list(r["boundaries"]),
          r["entropy"], row_buckets(r)) for r in rows]  # fmt: skip
    return sha256_bytes(json.dumps(h, ensure_ascii=False).encode("utf-8"))


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate with OUT locked (``rpt_train.lock``): an OUT that cannot be written fails before any work."""
    with output_lock(cfg.out, "rpt-train eval"):
        return _run_eval(cfg)


def _run_eval(cfg: EvalConfig) -> dict[str, Any]:
    rows = load_rows(cfg)
    if not rows:
        raise RptError(f"{cfg.shards}: no {cfg.split} positions with entropy >= {min(BUCKETS.values())}")
    manifest = checked_manifest(cfg.shards, shard_paths(cfg.shards, cfg.split), warn, cfg.quiet)
    settings = cfg.settings()
    out = Path(cfg.out)
    data_fp = rows_fingerprint(rows)
    previous = _load_previous(out / "eval.json", cfg, data_fp)
    results = []
    for label, step, model_dir in discover_models(cfg):
        fp = weights_sha256(model_dir)
        cached = previous.get((str(model_dir), fp))
        if cached is not None:
            # The same weights may now be listed differently (e.g. --model, then --base).
            results.append({**cached, "label": label, "step": step})
            continue
        t0 = time.perf_counter()
        tok = Tokenizer.load(model_dir)
        check_tokenizer(manifest, tok, f"{model_dir}'s tokenizer")
        model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=cfg.dtype, device=cfg.device)
        progress = Progress(
            len(rows) * len(cfg.modes), unit="positions", desc=f"eval {label}", quiet=cfg.quiet
        )
        scores = _nan_to_none(evaluate_model(model, tok, rows, settings, cfg.modes, progress))
        progress.close()
        results.append(
            {"label": label, "step": step, "path": str(model_dir), "fingerprint": fp, "scores": scores,
             "seconds": round(time.perf_counter() - t0, 1)}
        )  # fmt: skip
        if not cfg.quiet:
            print(f"evaluated {label} ({model_dir}) in {results[-1]['seconds']} s", flush=True)
        del model
        # Saved after every model: an interrupted evaluation keeps what it finished (and what was cached).
        done = {(r["path"], r["fingerprint"]) for r in results}
        pending = [r for key, r in previous.items() if key not in done]
        write_json_atomic(out / "eval.json", _report(cfg, rows, data_fp, results + pending))
    report = _report(cfg, rows, data_fp, results)
    write_json_atomic(out / "eval.json", report)
    if not cfg.quiet:
        print(format_table(report))
    plot_path = plot_report(report, out / "eval.png")
    if plot_path and not cfg.quiet:
        print(f"wrote {out / 'eval.json'} and {plot_path}")
    return report


def _report(cfg: EvalConfig, rows: list[dict[str, Any]], data_fp: str, results: list[dict]) -> dict[str, Any]:
    return {
        "config": config_to_dict(cfg),
        "samples": {b: sum(1 for r in rows if b in row_buckets(r)) for b in BUCKETS},
        "data_fingerprint": data_fp,
        "buckets": BUCKETS,
        "results": results,
        "train_reward": _train_rewards(cfg.run),
    }


def _load_previous(path: Path, cfg: EvalConfig, data_fp: str) -> dict[tuple[str, str], dict]:
    """Earlier results reusable for this config and data (same everything except the list of models)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    same = {k: v for k, v in old.get("config", {}).items() if k not in ("base", "run", "models", "quiet")}
    now = {k: v for k, v in config_to_dict(cfg).items() if k not in ("base", "run", "models", "quiet")}
    if same != now or old.get("data_fingerprint") != data_fp:
        return {}
    return {(r["path"], r["fingerprint"]): r for r in old.get("results", [])}


def _train_rewards(run: str | None) -> list[tuple[int, float]]:
    """(step, mean reward) from the run's metrics.jsonl, if there is one.

    The metrics logger writes non-finite values as null and a crash can cut the last line short: such
    lines (and lines without a numeric reward) are left out of the curve rather than failing the report.
    """
    if not run or not (Path(run) / "metrics.jsonl").is_file():
        return []
    points = []
    for line in (Path(run) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            continue
        value = rec.get("reward")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((rec["step"], float(value)))
    return points


def _nan_to_none(scores: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """An empty bucket's NaN accuracy as None: eval.json stays strict JSON (jq and polars reject NaN)."""
    return {
        mode: {b: {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in cell.items()}
               for b, cell in table.items()}
        for mode, table in scores.items()
    }  # fmt: skip
