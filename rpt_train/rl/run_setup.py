"""What ``rpt-train run`` checks and builds before its first step, beside the trainer's own state.

A resume compares this run's settings with the checkpoint's ``run_config.json``: those in ``RESUMABLE``
(``rpt_train.rl.config``) are applied (and recorded), any other difference is refused; ``--resume`` with
no checkpoint starts fresh only when the run never logged a step. The tokenizer must belong to the
policy. The policy, the frozen reference (``--beta``), AdamW with its warmup schedule and the fixed
validation rows are built here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import torch

from rpt_core.data.shards import (
    check_context_cap,
    check_tokenizer,
    checked_manifest,
    iter_rows,
    shard_paths,
)
from rpt_core.model import Qwen3ForCausalLM, resolve_model_dir
from rpt_core.model.logprobs import LogprobModule
from rpt_core.runtime import distributed as D
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.metrics import METRICS_FILE, last_logged_step
from rpt_core.text.pairing import check_model
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.rl.checkpoint import CHECKPOINTS, RUN_CONFIG, TRAINER_STATE
from rpt_train.rl.config import TrainConfig, format_differences, resume_differences


def lr_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warmup, then constant."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


# ------------------------------------------------------------------------------------------ checks


def check_fresh_resume(run_dir: Path, warn: Callable[[str], None]) -> None:
    """--resume without a loadable checkpoint: start fresh with a note when the run never logged a step,
    refuse when it did (its steps would be trained again from other weights without a word)."""
    logged = last_logged_step(run_dir / METRICS_FILE)
    if logged:
        raise RptError(
            f"--resume: {run_dir} logged steps up to {logged} but holds no loadable checkpoint "
            f"(no {CHECKPOINTS}/step-*/{TRAINER_STATE}); rerun without --resume to start over "
            "(its logs are replaced), or train into another --out"
        )
    warn(f"--resume: no checkpoint in {run_dir}; starting fresh at step 0")


def resume_changes(ckpt: Path, cfg: TrainConfig, warn: Callable[[str], None]) -> dict:
    """The settings that differ from the saved run's and may change (see ``RESUMABLE``); refuse others."""
    try:
        saved = json.loads((ckpt / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        warn(
            f"{ckpt / RUN_CONFIG} is missing or unreadable: cannot compare this run's settings "
            "with the saved run's"
        )
        return {}
    applied, refused = resume_differences(saved, cfg)
    if refused:
        raise RptError(
            f"--resume: settings that cannot change mid-run differ from the saved run ({ckpt}): "
            f"{format_differences(refused)}; resume with the saved values, or train into another --out"
        )
    return applied


def check_model_fits(tokenizer: Tokenizer, model_dir: Path, top_k: int) -> None:
    """The tokenizer must belong to the policy (``rpt_core.text.pairing``, the check build and eval make
    too; a --tokenizer other than the model's own must have its base vocabulary), and --top-k fit it."""
    config = check_model(model_dir, tokenizer, f"the policy {model_dir}")
    if top_k > config.vocab_size:
        raise RptError(f"--top-k {top_k} is larger than the policy's vocabulary ({config.vocab_size})")


# ------------------------------------------------------------------------------------------ builders


def load_policy(source, cfg: TrainConfig, device: torch.device, checkpointing: bool) -> Qwen3ForCausalLM:
    """The policy from a model directory, hub id or checkpoint, in training mode."""
    model_dir = resolve_model_dir(source)
    torch.manual_seed(cfg.optim.seed)
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=cfg.runtime.dtype, device=device)
    model.gradient_checkpointing = checkpointing
    if cfg.runtime.compile:
        for layer in model.model.layers:
            layer.compile(dynamic=True)
    return model.train()


def load_reference(cfg: TrainConfig, device: torch.device) -> LogprobModule:
    """The frozen reference of the KL term: the starting model, never the checkpoint's weights."""
    ref = Qwen3ForCausalLM.from_pretrained(cfg.io.model, dtype=cfg.runtime.dtype, device=device)
    return LogprobModule(ref.eval().requires_grad_(False), cfg.runtime.logprob_chunk)


def wrap_parallel(
    module: LogprobModule, info: D.DistInfo, fsdp: bool, bf16: bool
) -> tuple[torch.nn.Module, ...]:
    """The policy as the update calls it, and the module ``no_sync`` acts on: under torchrun, FSDP2 shards
    the model in place (bf16 compute as its param dtype) or DDP wraps the log-prob module; one process:
    the module itself, twice."""
    if fsdp:
        D.wrap_fsdp2(module.model, info, param_dtype=torch.bfloat16 if bf16 else None)
        # The LM head runs outside the root's forward (chunked, in rpt_core.model.logprobs): keep the
        # root's parameters gathered after hidden_states() until backward reshards them.
        module.model.set_reshard_after_forward(False, recurse=False)
        return module, module.model
    policy = D.wrap_ddp(module, info)
    return policy, policy


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay on matrices only) and its schedule: linear warmup, then the peak lr."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},  # norms: no decay
    ]
    optimizer = torch.optim.AdamW(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
        eps=cfg.optim.adam_eps,
        fused=True,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.optim.warmup_steps)
    )


def open_shards(cfg: TrainConfig, tokenizer: Tokenizer, warn: Callable[[str], None]) -> tuple[list, list]:
    """The train and val shard paths, once the shards match their manifest (sha256, checked on the main
    rank), were built with this tokenizer and --max-prompt-tokens does not cut below their context cap.
    Validation reads SHARDS/val (a flat directory's shards are all train)."""
    train_paths = shard_paths(cfg.io.shards, "train")
    has_val = cfg.log.val_every and (Path(cfg.io.shards) / "val").is_dir()
    val_paths = shard_paths(cfg.io.shards, "val", required=False) if has_val else []
    if cfg.log.val_every and not val_paths:
        warn(f"--val-every {cfg.log.val_every}: {cfg.io.shards} has no val/ shards; validation is off")
    manifest = D.on_main_rank(
        lambda: checked_manifest(cfg.io.shards, train_paths + val_paths, warn, cfg.log.quiet)
    )
    check_tokenizer(manifest, tokenizer, "the policy's tokenizer")
    check_context_cap(manifest, cfg.task.max_prompt_tokens, warn)
    return train_paths, val_paths


def val_rows(paths: list[Path], columns: tuple[str, ...], n: int, rank: int, world: int) -> list[dict]:
    """This rank's share of the first ``n`` validation rows (the same rows at every validation)."""
    return list(islice(iter_rows(paths, columns), n))[rank::world]
