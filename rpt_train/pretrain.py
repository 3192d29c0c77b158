"""Next-token pretraining of our Qwen3 from scratch on an OmniMATH-format corpus.

This makes a small base model cheap to produce offline: the demo uses it both as the RPT proxy and as the
policy (RPT from an early stage of training is an open question the RPT authors name). Documents are read
with the same reader as ``rpt-data build``, tokenized, joined with the end-of-text token into one stream,
and trained on random windows. The model is saved in Hugging Face format beside its tokenizer and the
resolved config; each eval point is a line of OUT/metrics.jsonl (the format of ``rpt-train run``'s).

Stopping and resuming: ``pretrain(cfg, stop)`` checks ``stop()`` between steps (the CLI's Ctrl-C / SIGTERM
flag) and then saves a checkpoint, as it does every ``save_every`` steps, in ``rpt-train run``'s format
(``rpt_train.rl.checkpoint``: OUT/checkpoints/step-N/, the model plus ``trainer_state.pt``). Its state is
the model, the AdamW state, the step (the schedule is a function of it), the window sampler's generator
(the data position) and the global RNGs, so ``--resume`` continues to the same bytes as a run that was
never stopped. A stopped run writes no final model: OUT then holds only its checkpoint and logs.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpt_core.data.corpus import DEFAULT_TEMPLATE, ReadStats, iter_documents
from rpt_core.data.corpus.documents import content_id
from rpt_core.data.shards import Manifest
from rpt_core.model import PRESETS, Qwen3Config, Qwen3ForCausalLM, default_device
from rpt_core.runtime import distributed as D
from rpt_core.runtime.config import check, config_to_dict, option, resumable_fields, unescape
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import write_json_atomic
from rpt_core.runtime.lock import output_lock
from rpt_core.runtime.metrics import METRICS_FILE, MetricsLogger, last_logged_step
from rpt_core.runtime.progress import Progress
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.compute import pretrain_flops
from rpt_train.rl.checkpoint import (
    RUN_CONFIG,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    run_flops,
    save_checkpoint,
    set_rng_state,
)


@dataclass
class PretrainConfig:
    corpus: list[str] = option(
        default_factory=list, help="OmniMATH-format files, globs, dirs or a hub id.", argument=True
    )
    tokenizer: str = option("", "tokenizer.json, or a directory holding one (default with --init: its own).")
    init: str | None = option(
        None, "Continue from this HF-format model instead of a fresh one (continued pretraining)."
    )
    exclude_val: str | None = option(
        None, "A shard directory: leave out the documents its build held out for validation."
    )
    match_flops: str | None = option(
        None, "An `rpt-train run` directory: train for as many FLOPs as it spent (this sets max-steps)."
    )
    out: str = option(
        "runs/base",
        "Output directory (HF format: config.json, model.safetensors, tokenizer.json).",
        resumable=True,
    )
    preset: str = option("tiny", "Model shape preset.", choices=PRESETS)
    text_template: str = option(DEFAULT_TEMPLATE, "Document text from record fields.", callback=unescape)
    split: str = option("train", "Hub dataset split.")
    seq_len: int = option(256, "Training window in tokens.", ge=1)
    batch_size: int = option(32, "Windows per step.", ge=1)
    max_steps: int = option(800, "Optimizer steps.", ge=1)
    lr: float = option(3e-3, "Peak learning rate (warmup, then cosine decay).", gt=0)
    min_lr_ratio: float = option(0.1, "Final learning rate as a fraction of the peak.", ge=0, le=1)
    warmup_steps: int = option(50, "Linear warmup steps.", ge=0)
    weight_decay: float = option(0.1, "AdamW weight decay.", ge=0)
    grad_clip: float = option(1.0, "Gradient clipping by global norm.", gt=0)
    eval_fraction: float = option(0.02, "Share of the token stream held out to report eval loss.", ge=0, lt=1)
    eval_every: int = option(100, "Eval loss every N steps (and at the end).", ge=1)
    seed: int = option(0, "Seed of initialisation and window sampling.")
    device: str | None = option(None, "cpu, cuda, cuda:1 (default: CUDA when present).", resumable=True)
    bf16_autocast: bool = option(
        True, "bfloat16 matmuls (AMX on CPU, tensor cores on CUDA); weights stay float32."
    )
    save_every: int = option(
        0,
        "Checkpoint every N steps (0: only when stopped by Ctrl-C or SIGTERM); see --resume.",
        ge=0,
        resumable=True,
    )
    resume: bool = option(
        False, "Continue from OUT's latest checkpoint (exactly: same bytes as unstopped).", resumable=True
    )
    quiet: bool = option(False, "No progress output.", resumable=True)

    def __post_init__(self) -> None:
        check(self)


# Settings a resumed pretraining may change (the fields marked ``resumable=True``): they do not touch what
# is computed. Any other difference would make the continuation differ from the run it continues, so it is
# refused. A test pins this set.
RESUMABLE = resumable_fields(PretrainConfig)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def token_stream(
    cfg: PretrainConfig, tok: Tokenizer, stats: ReadStats, exclude: frozenset[str] = frozenset()
) -> np.ndarray:
    """All documents (but those whose doc id or ``content_id`` is in ``exclude``) tokenized and joined by
    the end-of-text token (int32)."""
    sep = tok.pad_id
    if sep is None:
        raise RptError(f"tokenizer {tok.source} has no <|endoftext|> token to separate documents")
    chunks: list[np.ndarray] = []
    texts: list[str] = []

    def flush() -> None:
        for ids in tok.encode_batch(texts):  # byte spans are not needed here: plain ids are cheaper
            chunks.append(np.asarray([*ids, sep], dtype=np.int32))
        texts.clear()

    for doc in iter_documents(cfg.corpus, cfg.text_template, split=cfg.split, stats=stats):
        if exclude and (doc.doc_id in exclude or content_id(doc.text) in exclude):
            stats.skipped["held_out_for_val"] += 1
            continue
        texts.append(doc.text)
        if len(texts) >= 512:
            flush()
    flush()
    if not chunks:
        raise RptError("pretraining corpus has no usable documents")
    return np.concatenate(chunks)


def sample_batch(stream: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator) -> torch.Tensor:
    """Random windows of seq_len + 1 tokens (B, seq_len + 1); every start that fits is possible."""
    starts = rng.integers(0, len(stream) - seq_len, size=batch)  # last start: len - seq_len - 1
    return torch.from_numpy(np.stack([stream[s : s + seq_len + 1] for s in starts]).astype(np.int64))


def lm_loss(model: Qwen3ForCausalLM, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy of (B, T+1) windows."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)  # (B, T, V) float32
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def eval_loss(
    model: Qwen3ForCausalLM, stream: np.ndarray, seq_len: int, autocast, max_windows: int = 64
) -> float:
    """Mean loss over consecutive (not random) windows of the held-out stream: a fixed yardstick.

    A held-out stream shorter than one window is scored as one shorter window rather than not at all.
    """
    seq_len = min(seq_len, len(stream) - 1)
    if seq_len < 1:
        return float("nan")
    model.eval()
    n = min(max_windows, (len(stream) - 1) // seq_len)
    windows = np.stack([stream[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)]).astype(np.int64)
    losses = []
    for chunk in torch.from_numpy(windows).to(model.device).split(16):
        with autocast():
            losses.append(lm_loss(model, chunk).item() * len(chunk))
    model.train()
    return sum(losses) / n


def checkpoint_to_resume(cfg: PretrainConfig) -> Path | None:
    """OUT's latest checkpoint when ``--resume`` (None: none, start fresh with a note); refuse a checkpoint
    without ``--resume``, and ``--resume`` of an OUT that logged steps but holds no loadable state."""
    out = Path(cfg.out)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not cfg.resume:
        raise RptError(
            f"{out} holds a pretraining checkpoint ({ckpt.name}); pass --resume to continue it, "
            "or choose another --out"
        )
    if ckpt is None and cfg.resume:
        if logged := last_logged_step(out / METRICS_FILE):
            raise RptError(
                f"--resume: {out} logged steps up to {logged} but holds no loadable checkpoint; "
                "rerun without --resume to start over, or choose another --out"
            )
        warn(f"--resume: no checkpoint in {out}; starting fresh at step 0")
    return ckpt


def _check_same_run(cfg: PretrainConfig, ckpt: Path) -> None:
    saved = json.loads((ckpt / RUN_CONFIG).read_text(encoding="utf-8"))
    now = json.loads(json.dumps(config_to_dict(cfg)))
    diff = [
        f"{k.replace('_', '-')}: {saved[k]!r} -> {v!r}"
        for k, v in now.items()
        if k in saved and k not in RESUMABLE and saved[k] != v
    ]
    if diff:
        raise RptError(
            f"--resume: settings differ from the saved run ({ckpt}): {', '.join(diff)}; resume "
            "with the saved values, or pretrain into another --out"
        )


def _save(cfg, model, opt, rng, step: int, history: list, train_flops: float) -> Path:
    model_sd, optim_sd = D.gather_full_state(model, opt)
    state = {
        "model": model_sd,
        "optimizer": optim_sd,
        "step": step,
        "history": history,
        "sampler": rng.bit_generator.state,
        "rng": rng_state(),
        "train_flops": train_flops,
    }
    return save_checkpoint(Path(cfg.out), step, state, model.config, None, config_to_dict(cfg), keep_last=1)


def pretrain(cfg: PretrainConfig, stop: Callable[[], bool] = lambda: False) -> dict:
    """Train a model from scratch; returns a summary dict (also written to OUT/pretrain_summary.json).

    ``stop()`` is checked after every step: when true, a checkpoint is saved and the summary's ``stopped``
    is set (no final model is written). OUT is locked meanwhile (``rpt_core.runtime.lock``); one that cannot
    be written fails before any work."""
    with output_lock(cfg.out, "rpt-train pretrain"):
        return _pretrain(cfg, stop)


def _pretrain(cfg: PretrainConfig, stop: Callable[[], bool]) -> dict:
    if not cfg.corpus:
        raise RptError("no pretraining corpus given")
    if not cfg.tokenizer and not cfg.init:
        raise RptError("--tokenizer is required (train one with `rpt-data tokenizer train`)")
    ckpt = checkpoint_to_resume(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    random.seed(cfg.seed)
    tok = Tokenizer.load(cfg.tokenizer or cfg.init)
    stats = ReadStats()
    exclude = frozenset()
    if cfg.exclude_val:
        manifest = Manifest.read(cfg.exclude_val)
        if manifest is None or manifest.val_doc_ids is None:
            raise RptError(
                f"{cfg.exclude_val}: no manifest with the held-out document ids (rebuild the shards)"
            )
        exclude = frozenset(manifest.val_doc_ids) | frozenset(manifest.val_content_ids or ())
    stream = token_stream(cfg, tok, stats, exclude)
    n_eval = int(len(stream) * cfg.eval_fraction)
    train_stream, eval_stream = stream[: len(stream) - n_eval], stream[len(stream) - n_eval :]
    if len(train_stream) <= cfg.seq_len + 1:
        raise RptError(f"corpus too small: {len(train_stream)} tokens for seq_len {cfg.seq_len}")

    device = torch.device(cfg.device) if cfg.device else default_device()
    if cfg.init:
        model = Qwen3ForCausalLM.from_pretrained(cfg.init, dtype="float32", device=device).train()
    else:
        model_cfg = Qwen3Config.preset(
            cfg.preset,
            vocab_size=tok.vocab_size,
            eos_token_id=tok.eos_id,
            pad_token_id=tok.pad_id,
            torch_dtype="float32",
        )
        model = Qwen3ForCausalLM(model_cfg).to(device).train()
    step_flops = pretrain_flops(model.num_parameters(), cfg.batch_size * cfg.seq_len)
    if cfg.match_flops:
        cfg = replace(cfg, max_steps=max(1, round(run_flops(cfg.match_flops) / step_flops)))
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(0.9, 0.95),
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda",
    )

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast)

    out = Path(cfg.out)
    start, history = 0, []
    if ckpt is not None:
        _check_same_run(cfg, ckpt)
        state = load_checkpoint(ckpt, torch.float32)
        D.load_full_state(model, opt, state["model"], state["optimizer"])
        rng.bit_generator.state = state["sampler"]
        set_rng_state(state["rng"])
        start, history = state["step"], state["history"]
        if not cfg.quiet:
            print(f"resumed from {ckpt} at step {start}", flush=True)
    logger = MetricsLogger(out, quiet=True)  # OUT/metrics.jsonl only: the console line is `progress`
    logger.truncate_after(start)  # a new run into the same OUT replaces an earlier run's lines
    progress = Progress(cfg.max_steps, unit="steps", desc="pretrain", quiet=cfg.quiet)
    progress.start_from(start)
    t0 = t_log = time.perf_counter()
    tokens, last_eval, stopped = 0, None, None
    for step in range(start, cfg.max_steps):
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sample_batch(train_stream, cfg.batch_size, cfg.seq_len, rng).to(device)
        with autocast():
            loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tokens += batch.numel()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            train_loss = loss.item()  # waits for the step, so the rate covers its compute (not eval's)
            tokens_per_s = tokens / max(time.perf_counter() - t_log, 1e-9)
            held_out = eval_loss(model, eval_stream, cfg.seq_len, autocast)
            losses = {"train_loss": train_loss, "eval_loss": held_out}
            history.append({"step": step + 1, **losses})
            logger.log(step + 1, {**losses, "lr": lr, "tokens_per_s": tokens_per_s})
            last_eval = f"{held_out:.3f}"
            t_log, tokens = time.perf_counter(), 0
        # The loss is read (a device sync) only when the line is drawn, at most every 0.2 s.
        progress.set_postfix(loss=lambda t=loss.detach(): f"{t.item():.3f}", eval_loss=last_eval)
        progress.update(1, tok=batch.numel())
        stopping = stop() and step + 1 < cfg.max_steps
        if stopping or (cfg.save_every and (step + 1) % cfg.save_every == 0):
            saved = _save(cfg, model, opt, rng, step + 1, history, step_flops * (step + 1))
        if stopping:
            stopped = {"step": step + 1, "checkpoint": str(saved)}
            break
    progress.close()
    logger.close()
    if stopped is not None:
        return {"config": config_to_dict(cfg), "stopped": stopped, "history": history}

    model.eval().save_pretrained(out)
    tok.save(out)
    summary = {
        "config": config_to_dict(cfg),
        "parameters": model.num_parameters(),
        "train_flops": step_flops * cfg.max_steps,  # rpt_train.compute: 6 N per trained token
        "tokens_in_corpus": int(len(stream)),
        "documents_read": stats.documents_read,
        "documents_skipped": dict(stats.skipped),
        "seconds": round(time.perf_counter() - t0, 1),
        "history": history,
    }
    write_json_atomic(out / "pretrain_summary.json", summary)
    return summary
