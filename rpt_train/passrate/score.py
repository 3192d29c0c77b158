"""``rpt-train passrate SHARDS --model M``: a model's pass rates on shard positions, before any RL.

Per position of the split (all of them, or ``--max-samples`` chosen by a seeded hash of the row identity):

* ``p_true``: the softmax probability (temperature 1) of the ground-truth next token ``token_id`` after the
  raw context, left-truncated to ``max_prompt_tokens`` as in eval's ``ntp`` mode; ``ntp``: it is the argmax.
* ``greedy``: the greedy training rollout earns the full training reward (eval's ``reasoning`` mode).
* ``n_correct`` of ``k = --samples`` seeded rollouts at the training temperature earn it (eval's
  ``sampled`` mode); ``pass1 = n_correct / k`` and ``passk`` (pass@k) follow (``estimate``).

The rollouts and their scoring are eval's (``rpt_train.eval.score``), so pass rates are measured exactly as
training rolls out and rewards; the template settings come from the recipe's ``[train]`` unless
``[passrate]`` sets them. Output under OUT: ``passrates.parquet`` (the side file keyed by ``(doc_id,
position)``, ``rpt_train.passrate.selection``), ``passrate_summary.json`` (by entropy bucket and span class,
``report``), ``passrate_config.json``; all written atomically. Positions are scored in fixed chunks whose
seeds depend only on the chunk, each saved under ``OUT/.passrate_parts/`` as it finishes: an interrupted
run resumes where it stopped, a finished one reruns for free, a larger ``--max-samples`` scores only the
new positions (the sample is a prefix of one seeded order), and each gives the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rpt_core.data.shards import check_schema, check_tokenizer, checked_manifest, iter_rows, shard_paths
from rpt_core.model import Qwen3ForCausalLM
from rpt_core.model.hf_io import weights_sha256
from rpt_core.runtime.config import check, config_to_dict, identity_dict, option
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import write_json_atomic
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.progress import Progress
from rpt_core.text.pairing import check_model
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.eval.score import (
    EvalSettings,
    RolloutOptions,
    encode_prompts,
    reasoning_correct,
    sampled_accuracy,
)
from rpt_train.passrate import report
from rpt_train.passrate.estimate import pass_at_k
from rpt_train.passrate.selection import SIDE_FILE, split_fingerprint, write_side_file

CHUNK = 256  # positions per saved part; each part's rollouts draw from their own seed
PARTS, SUMMARY, CONFIG = ".passrate_parts", "passrate_summary.json", "passrate_config.json"
COLUMNS = ("doc_id", "position", "context", "label", "boundaries", "entropy", "token_id")


@dataclass
class PassRateConfig(RolloutOptions):
    shards: str = option(
        "shards", "RPT shard directory (from `rpt-data build`).", argument=True, required=True
    )
    model: str = option("", "The policy before RL: an HF-format model directory.", required=True)
    out: str = option("passrates", "Where passrates.parquet and passrate_summary.json go.", identity=False)
    split: str = option("train", "Shard split to score (selection for `rpt-train run` needs train).")
    samples: int = option(8, "k: seeded training rollouts per position.", ge=1)
    max_samples: int | None = option(
        None,
        "Score at most this many positions, chosen by a seeded hash of (doc_id, position).",
        ge=1,
        identity=False,
    )
    temperature: float = option(0.8, "Temperature of the sampled rollouts (the training temperature).", gt=0)
    seed: int = option(0, "Seed of the position sample and of the sampled rollouts.")
    quiet: bool = option(False, "No progress line or table.", identity=False)

    def __post_init__(self) -> None:
        check(self)
        if not self.model:
            raise RptError("no model to score with: give --model DIR")

    def settings(self, tok: Tokenizer, chunk: int) -> EvalSettings:
        """Eval's rollout settings for chunk ``chunk`` (its own seed, so chunks are scored independently)."""
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{chunk}".encode()).digest()[:6], "little")
        return self.eval_settings(tok.chat, self.temperature, seed, self.samples)


def order_key(seed: int, row: dict[str, Any]) -> str:
    """The seeded rank of a row in the position sample (as ``rpt_train.eval.score.select_samples``)."""
    return hashlib.sha256(f"{seed}:{row['doc_id']}:{row['position']}".encode()).hexdigest()


def load_rows(cfg: PassRateConfig) -> tuple[list[dict[str, Any]], str, int]:
    """(the positions to score in scoring order, the split's fingerprint, rows skipped for an empty
    context); ``span_class`` comes along when the shards have it."""
    paths = shard_paths(cfg.shards, cfg.split)
    extra = ["span_class"] if all("span_class" in check_schema(p).names for p in paths) else []
    rows = list(iter_rows(paths, [*COLUMNS, *extra]))
    fingerprint = split_fingerprint((r["doc_id"], int(r["position"]), int(r["token_id"])) for r in rows)
    scorable = sorted((r for r in rows if r["context"]), key=lambda r: order_key(cfg.seed, r))
    return scorable[: cfg.max_samples], fingerprint, len(rows) - len(scorable)


@torch.no_grad()
def true_token_probs(
    model: Qwen3ForCausalLM, tok: Tokenizer, rows: list[dict], s: EvalSettings
) -> tuple[list[float], list[bool]]:
    """(softmax probability of each row's ``token_id`` after its context, whether it is the argmax).

    Contexts are right-padded: under the causal mask a real token never sees the padding after it."""
    probs: list[float] = []
    top: list[bool] = []
    for i in range(0, len(rows), s.batch_size):
        chunk = rows[i : i + s.batch_size]
        ids = encode_prompts(tok, [r["context"] for r in chunk], s.max_prompt_tokens)
        width = max(map(len, ids))
        x = torch.tensor([p + [tok.pad_id or 0] * (width - len(p)) for p in ids], device=model.device)
        last = torch.tensor([len(p) - 1 for p in ids], device=model.device)
        hidden = model.hidden_states(x)[torch.arange(len(ids), device=model.device), last]
        p = torch.softmax(model.logits(hidden), dim=-1)
        target = torch.tensor([int(r["token_id"]) for r in chunk], device=model.device)
        probs += p.gather(1, target[:, None])[:, 0].tolist()
        top += (p.argmax(dim=-1) == target).tolist()
    return probs, top


def score_chunk(model, tok: Tokenizer, rows: list[dict], s: EvalSettings, progress: Progress) -> dict:
    """The scores of one chunk of positions (plain lists, as saved in a part)."""
    p_true, ntp = true_token_probs(model, tok, rows, s)
    progress.update(len(rows))
    greedy = reasoning_correct(model, tok, rows, s, progress)
    shares = sampled_accuracy(model, tok, rows, s, progress)
    return {
        "p_true": p_true,
        "ntp": ntp,
        "greedy": greedy,
        "n_correct": [round(x * s.samples) for x in shares],
    }


def records(rows: list[dict], scores: dict[str, list], k: int) -> list[dict[str, Any]]:
    """Side-file rows: the identity and entropy (and span class) of each position with its scores."""
    out = []
    for i, r in enumerate(rows):
        c = int(scores["n_correct"][i])
        out.append(
            {
                "doc_id": r["doc_id"],
                "position": int(r["position"]),
                "token_id": int(r["token_id"]),
                "entropy": float(r["entropy"]),
                "span_class": r.get("span_class"),
                "p_true": float(scores["p_true"][i]),
                "ntp": bool(scores["ntp"][i]),
                "greedy": bool(scores["greedy"][i]),
                "n_correct": c,
                "k": k,
                "pass1": c / k,
                "passk": pass_at_k(k, c, k),
            }
        )
    return out


def run_passrate(cfg: PassRateConfig) -> dict[str, Any]:
    """Score the positions, write the side file, summary and config; return the summary. OUT is locked."""
    with output_lock(cfg.out, "rpt-train passrate"):
        return _run(cfg)


def _run(cfg: PassRateConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows, fingerprint, empty = load_rows(cfg)
    if not rows:
        raise RptError(f"{cfg.shards}: no {cfg.split} positions with a context to score")
    manifest = checked_manifest(cfg.shards, shard_paths(cfg.shards, cfg.split), warn, cfg.quiet)
    tok = Tokenizer.load(cfg.model)
    check_tokenizer(manifest, tok, f"{cfg.model}'s tokenizer")
    check_model(cfg.model, tok, cfg.model)
    cfg.settings(tok, 0)  # a bad template option fails here, before the model is loaded
    out = Path(cfg.out)
    # Fields marked identity=False change no score: out, quiet, and --max-samples, which only says how many
    # of the same ranked positions are scored, so raising it reuses every full chunk already scored.
    key = identity_dict(cfg)
    key.update(fingerprint=fingerprint, weights=weights_sha256(Path(cfg.model)), chunk=CHUNK)
    parts = _parts_dir(out, key)
    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    todo = [i for i, chunk in enumerate(chunks) if _saved_size(parts / f"{i:06d}.json") != len(chunk)]
    model = (
        Qwen3ForCausalLM.from_pretrained(cfg.model, dtype=cfg.dtype, device=cfg.device).eval()
        if todo
        else None
    )
    progress = Progress(
        3 * sum(len(chunks[i]) for i in todo), unit="passes", desc="passrate", quiet=cfg.quiet
    )
    scores: dict[str, list] = {"p_true": [], "ntp": [], "greedy": [], "n_correct": []}
    for i, chunk in enumerate(chunks):
        path = parts / f"{i:06d}.json"
        if i in todo:
            scored = score_chunk(model, tok, chunk, cfg.settings(tok, i), progress)
            write_json_atomic(path, {"n": len(chunk), **scored})
        part = json.loads(path.read_text(encoding="utf-8"))
        for name in scores:
            scores[name] += part[name]
    progress.close()
    recs = records(rows, scores, cfg.samples)
    meta = {
        "split": cfg.split,
        "k": cfg.samples,
        "fingerprint": fingerprint,
        "model": cfg.model,
        "weights_sha256": key["weights"],
    }
    write_side_file(out / SIDE_FILE, recs, meta)
    table, kept = report.summary_table(recs, cfg.samples), report.preview(recs)
    seconds = time.perf_counter() - t0
    scored_now = sum(len(chunks[i]) for i in todo)
    summary = {
        **meta,
        "positions": len(recs),
        "skipped_empty_context": empty,
        "groups": table,
        "preview": kept,
        "seconds": seconds,
        "scored_now": scored_now,
    }
    write_json_atomic(out / SUMMARY, summary)
    write_json_atomic(out / CONFIG, config_to_dict(cfg))
    if not cfg.quiet:
        print(report.format_table(table, cfg.samples, kept))
        print(f"scored {scored_now} of {len(recs)} positions in {seconds:.1f} s; wrote {out / SIDE_FILE}")
    return summary


def _saved_size(path: Path) -> int | None:
    """Positions in a saved part (None when there is none): a last chunk of another size is scored again,
    since its rollouts were batched differently."""
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["n"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _parts_dir(out: Path, key: dict[str, Any]) -> Path:
    """``OUT/.passrate_parts`` for these settings: parts saved under other settings are removed."""
    parts = out / PARTS
    try:
        same = json.loads((parts / "key.json").read_text(encoding="utf-8")) == key
    except (OSError, json.JSONDecodeError):
        same = False
    if not same:
        shutil.rmtree(parts, ignore_errors=True)
        write_json_atomic(parts / "key.json", key)
    return parts
