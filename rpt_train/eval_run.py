"""``rpt-train eval``: evaluate a base model and every checkpoint of an RPT run on the ``val/`` shards.

Writes ``OUT/eval.json`` (every number), prints a table shaped like the paper's Table 1, and draws
``OUT/eval.png``: accuracy per bucket against training step, and the run's mean training reward.
Finished models are cached in ``eval.json`` by checkpoint path and content hash, so a rerun after new
checkpoints evaluates only those.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpt_train.config import config_to_dict
from rpt_train.errors import RptError
from rpt_train.evaluate import BUCKETS, MODES, EvalSettings, evaluate_model, row_buckets, select_samples
from rpt_train.io import sha256_bytes, write_json_atomic
from rpt_train.model import Qwen3ForCausalLM
from rpt_train.model.checkpoint import weights_sha256
from rpt_train.progress import Progress
from rpt_train.prompts import load_template
from rpt_train.shards import iter_rows, list_shards, read_manifest
from rpt_train.tokenizer import Tokenizer

_STEP_DIR = re.compile(r"step-(\d+)$")
_REWARD_KEYS = ("reward_mean", "reward")  # rollout_metrics' name first, then the console's


@dataclass
class EvalConfig:
    shards: str = "shards"
    base: str | None = None  # the model before RPT (step 0)
    run: str | None = None  # an `rpt-train run` output directory: every checkpoint in it
    models: list[str] = field(default_factory=list)  # any other HF-format model directories
    out: str = "eval"
    split: str = "val"
    modes: list[str] = field(default_factory=lambda: list(MODES))
    template: str = "plain"
    answer_tokens: int = 1
    instruction_file: str | None = None
    max_samples: int | None = 500  # per bucket, chosen deterministically
    max_prompt_tokens: int = 512
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy rollout in reasoning mode
    batch_size: int = 32
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        checks = {
            "max_samples": (self.max_samples is None or self.max_samples >= 1, ">= 1"),
            "max_prompt_tokens": (self.max_prompt_tokens >= 1, ">= 1"),
            "max_new_tokens": (self.max_new_tokens >= 1, ">= 1"),
            "temperature": (self.temperature >= 0, ">= 0 (0 = greedy)"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
        }
        for name, (ok, want) in checks.items():
            if not ok:
                raise RptError(f"{name.replace('_', '-')} must be {want}, got {getattr(self, name)!r}")


def discover_models(cfg: EvalConfig) -> list[tuple[str, int | None, Path]]:
    """(label, training step or None, directory) for the base model, each run checkpoint, and extras."""
    found: list[tuple[str, int | None, Path]] = []
    if cfg.base:
        found.append(("base", 0, Path(cfg.base)))
    if cfg.run:
        ckpt_root = Path(cfg.run) / "checkpoints"
        steps = sorted(
            (int(m.group(1)), p)
            for p in ckpt_root.glob("step-*")
            if (m := _STEP_DIR.search(p.name)) and p.is_dir()
        )
        if not steps:
            raise RptError(f"{cfg.run}: no checkpoints under {ckpt_root}")
        found += [(f"step {s}", s, p) for s, p in steps]
    found += [(Path(m).name, None, Path(m)) for m in cfg.models]
    if not found:
        raise RptError("nothing to evaluate: give --base, --run or --model")
    return found


def load_rows(cfg: EvalConfig) -> list[dict[str, Any]]:
    paths = list_shards(cfg.shards, cfg.split)
    if not paths:
        raise RptError(f"no {cfg.split}/ shards under {cfg.shards}")
    columns = ["doc_id", "position", "context", "label", "boundaries", "entropy"]
    rows = [r for r in iter_rows(paths, columns) if r["entropy"] >= min(BUCKETS.values())]
    return select_samples(rows, cfg.max_samples, cfg.seed)


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """Hash of the selected positions and their ground truth: rebuilt shards must not reuse old scores."""
    h = [(r["doc_id"], r["position"], r["context"], bytes(r["label"]).hex(), list(r["boundaries"]),
          r["entropy"], row_buckets(r)) for r in rows]  # fmt: skip
    return sha256_bytes(json.dumps(h, ensure_ascii=False).encode("utf-8"))


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    unknown = set(cfg.modes) - set(MODES)
    if unknown:
        raise RptError(f"unknown eval modes {sorted(unknown)} (known: {', '.join(MODES)})")
    rows = load_rows(cfg)
    if not rows:
        raise RptError(f"{cfg.shards}: no {cfg.split} positions with entropy >= {min(BUCKETS.values())}")
    manifest = read_manifest(cfg.shards)
    template = load_template(cfg.template, cfg.instruction_file, cfg.answer_tokens)
    settings = EvalSettings(
        template, cfg.max_prompt_tokens, cfg.max_new_tokens, cfg.temperature, cfg.batch_size, cfg.seed
    )
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
        expected = manifest.get("tokenizer_base_vocab_fingerprint")
        if expected and expected != tok.base_vocab_fingerprint:
            raise RptError(f"{model_dir}: tokenizer differs from the one the shards were built with")
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
        value = next((rec[k] for k in _REWARD_KEYS if _is_number(rec.get(k))), None)
        if value is not None and math.isfinite(value):
            points.append((rec["step"], float(value)))
    return points


def _nan_to_none(scores: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """An empty bucket's NaN accuracy as None: eval.json stays strict JSON (jq and polars reject NaN)."""
    return {
        mode: {b: {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in cell.items()}
               for b, cell in table.items()}
        for mode, table in scores.items()
    }  # fmt: skip


def _percent(accuracy: float | None) -> float:
    return float("nan") if accuracy is None else 100 * accuracy


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(report: dict[str, Any]) -> str:
    """A console table like the paper's Table 1: one row per model and mode, one column per bucket."""
    names = list(BUCKETS)
    header = f"{'model':<14}{'mode':<11}" + "".join(f"{n + ' >=' + str(BUCKETS[n]):>14}" for n in names)
    lines = [header, "-" * len(header)]
    for res in report["results"]:
        for mode, table in res["scores"].items():
            cells = "".join(_cell(table[n]) for n in names)
            lines.append(f"{res['label']:<14}{mode:<11}{cells}")
    counts = ", ".join(f"{n}={c}" for n, c in report["samples"].items())
    lines.append(f"positions per bucket: {counts}")
    return "\n".join(lines)


def _cell(cell: dict[str, float]) -> str:
    acc = cell["accuracy"]
    text = "n/a" if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f"{100 * acc:.2f}%"
    return f"{text:>14}"


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Accuracy per bucket and mode against training step, and the training reward curve (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install 'rpt[plot]')")
        return None
    stepped = [r for r in report["results"] if r["step"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode in sorted({m for r in stepped for m in r["scores"]}):
        for bucket in BUCKETS:
            xs = [r["step"] for r in stepped if mode in r["scores"]]
            ys = [_percent(r["scores"][mode][bucket]["accuracy"]) for r in stepped if mode in r["scores"]]
            axes[0].plot(
                xs, ys, marker="o", linestyle="-" if mode == "ntp" else "--", label=f"{bucket} ({mode})"
            )
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("next-token accuracy (%)")
    axes[0].set_title("Accuracy by entropy bucket")
    if stepped:  # a legend with no lines only warns
        axes[0].legend(fontsize=8)
    rewards = report.get("train_reward") or []
    if rewards:
        axes[1].plot([s for s, _ in rewards], [r for _, r in rewards], color="tab:green")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("mean training reward")
    axes[1].set_title("RPT training reward")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
