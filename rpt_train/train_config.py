"""``TrainConfig``: every option of ``rpt-train run`` (GRPO on RPT shards), typed, with defaults and help.

Precedence is the dataclass default < ``[train]`` of ``--config FILE.toml`` < command-line options (see
``rpt_train.config.resolve_config``). Each field's ``help`` metadata is also the ``--option`` help text:
``rpt_train.cli_run`` builds its options from these fields, so a new setting is added here only.
Defaults follow the RPT paper where it says (G = 8, temperature 0.8, lr 1e-6 constant after warmup, no
KL) and verl / TRL elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rpt_train.errors import RptError
from rpt_train.grpo import ADVANTAGES, LOSS_AGG
from rpt_train.prompts import TEMPLATES
from rpt_train.reward import REWARDS


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # ---- inputs / outputs
    shards: str = _opt("", "RPT shard directory (from `rpt-data build`): SHARDS/train and SHARDS/val.")
    model: str = _opt("Qwen/Qwen3-0.6B", "Policy: HF-format model directory or hub id.")
    tokenizer: str | None = _opt(None, "tokenizer.json or its directory (default: the model's).")
    out: str = _opt("runs/rpt", "Run directory: checkpoints, metrics.jsonl, run_config.json.")
    resume: bool = _opt(False, "Continue from the latest checkpoint in --out.")
    # ---- prompts and rewards
    template: str = _opt("qwen3-think", f"Prompt template: {' | '.join(TEMPLATES)}.")
    instruction_file: str | None = _opt(None, "Text file replacing the template's instruction.")
    answer_tokens: int = _opt(1, "plain template: the prediction is the first N generated tokens.")
    max_prompt_tokens: int = _opt(1024, "Contexts are left-truncated to this many tokens (the end kept).")
    max_new_tokens: int = _opt(1024, "Completion length cap; a cut-off completion has no prediction.")
    reward: str = _opt("prefix", f"Reward: {' | '.join(REWARDS)}.")
    format_penalty: float = _opt(0.0, "Reward for a completion with no extractable prediction.")
    # ---- sampling
    num_generations: int = _opt(8, "G: completions sampled per context.")
    temperature: float = _opt(0.8, "Sampling temperature (log-probs are taken at the same temperature).")
    top_p: float = _opt(1.0, "Nucleus sampling threshold (1 = off).")
    top_k: int = _opt(0, "Top-k sampling (0 = off).")
    batch_size: int = _opt(8, "Contexts (groups) per step and rank.")
    rollout_batch_size: int = _opt(0, "Contexts per generate() call (0 = the whole batch at once).")
    micro_batch_size: int = _opt(8, "Sequences per forward/backward; gradients are accumulated.")
    # ---- GRPO
    advantage: str = _opt("group", f"Advantage estimator: {' | '.join(ADVANTAGES)}.")
    loss_agg: str = _opt("token-mean", f"Loss aggregation: {' | '.join(LOSS_AGG)}.")
    epsilon: float = _opt(0.2, "Clip range below (ratio >= 1 - epsilon).")
    epsilon_high: float | None = _opt(None, "Clip range above (DAPO clip-higher; default = epsilon).")
    num_iterations: int = _opt(1, "Policy updates per rollout batch (against stored old log-probs).")
    beta: float = _opt(0.0, "k3 KL coefficient to a frozen reference (loaded only when > 0).")
    mask_truncated: bool = _opt(False, "Leave completions cut off at --max-new-tokens out of the loss.")
    dynamic_sampling: bool = _opt(False, "DAPO: draw more contexts until B groups have unequal rewards.")
    max_resample_batches: int = _opt(4, "Dynamic sampling: extra draws per step at most.")
    # ---- optimisation
    lr: float = _opt(1e-6, "Peak learning rate (constant after warmup).")
    warmup_steps: int = _opt(10, "Linear warmup from 0 over this many optimizer steps.")
    weight_decay: float = _opt(0.01, "AdamW weight decay.")
    adam_beta1: float = _opt(0.9, "AdamW beta1.")
    adam_beta2: float = _opt(0.999, "AdamW beta2.")
    adam_eps: float = _opt(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _opt(1.0, "Gradient clipping by global norm (0 = off).")
    max_steps: int = _opt(1000, "Training steps (rollout batches).")
    seed: int = _opt(0, "Seed of data order, sampling and initialisation.")
    max_bad_steps: int = _opt(5, "Stop after this many non-finite losses in a row.")
    # ---- machinery
    device: str | None = _opt(
        None, "cpu | cuda | cuda:N (default: CUDA when present; LOCAL_RANK under torchrun)."
    )
    dtype: str = _opt("float32", "Parameter dtype (float32 | bfloat16); AdamW states follow it.")
    bf16: bool = _opt(True, "bfloat16 autocast for forward passes (CUDA only; ignored on CPU).")
    gradient_checkpointing: bool = _opt(False, "Recompute decoder layers in backward to save memory.")
    compile: bool = _opt(False, "torch.compile the decoder layers.")
    fsdp: bool = _opt(False, "Shard parameters with FSDP2 instead of replicating with DDP (torchrun).")
    logprob_chunk: int = _opt(1024, "Completion tokens per LM-head chunk when computing log-probs.")
    # ---- data
    shuffle_buffer: int = _opt(10000, "Rows in the streaming shuffle buffer.")
    epochs: int = _opt(0, "Passes over SHARDS/train (0 = repeat until --max-steps).")
    # ---- validation, logging, checkpoints
    val_every: int = _opt(0, "Greedy mean reward on SHARDS/val every N steps (0 = off).")
    val_samples: int = _opt(64, "Fixed number of val contexts.")
    save_every: int = _opt(100, "Checkpoint every N steps (and always at the end).")
    keep_last: int = _opt(3, "Checkpoints kept.")
    sample_every: int = _opt(50, "Log a few completions with their rewards every N steps (0 = off).")
    num_samples: int = _opt(4, "Completions per sample log.")
    tensorboard: bool = _opt(False, "Also write TensorBoard event files.")
    quiet: bool = _opt(False, "No console progress line.")

    def __post_init__(self) -> None:
        checks = {
            "template": (self.template in TEMPLATES, f"one of {', '.join(TEMPLATES)}"),
            "reward": (self.reward in REWARDS, f"one of {', '.join(REWARDS)}"),
            "advantage": (self.advantage in ADVANTAGES, f"one of {', '.join(ADVANTAGES)}"),
            "loss_agg": (self.loss_agg in LOSS_AGG, f"one of {', '.join(LOSS_AGG)}"),
            "dtype": (self.dtype in ("float32", "bfloat16"), "float32 or bfloat16"),
            "num_generations": (self.num_generations >= 1, ">= 1"),
            "temperature": (self.temperature > 0, "> 0"),
            "top_p": (0 < self.top_p <= 1, "in (0, 1]"),
            "top_k": (self.top_k >= 0, ">= 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "rollout_batch_size": (self.rollout_batch_size >= 0, ">= 0"),
            "micro_batch_size": (self.micro_batch_size >= 1, ">= 1"),
            "max_prompt_tokens": (self.max_prompt_tokens >= 1, ">= 1"),
            "max_new_tokens": (self.max_new_tokens >= 1, ">= 1"),
            "answer_tokens": (self.answer_tokens >= 1, ">= 1"),
            "epsilon": (0 < self.epsilon < 1, "in (0, 1)"),
            "epsilon_high": (self.epsilon_high is None or self.epsilon_high > 0, "> 0"),
            "num_iterations": (self.num_iterations >= 1, ">= 1"),
            "beta": (self.beta >= 0, ">= 0"),
            "max_resample_batches": (self.max_resample_batches >= 0, ">= 0"),
            "lr": (self.lr >= 0, ">= 0"),
            "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
            "max_grad_norm": (self.max_grad_norm >= 0, ">= 0"),
            "max_steps": (self.max_steps >= 1, ">= 1"),
            "max_bad_steps": (self.max_bad_steps >= 1, ">= 1"),
            "logprob_chunk": (self.logprob_chunk >= 1, ">= 1"),
            "epochs": (self.epochs >= 0, ">= 0"),
            "val_every": (self.val_every >= 0, ">= 0"),
            "val_samples": (self.val_samples >= 1, ">= 1"),
            "save_every": (self.save_every >= 0, ">= 0"),
            "keep_last": (self.keep_last >= 1, ">= 1"),
            "sample_every": (self.sample_every >= 0, ">= 0"),
            "shuffle_buffer": (self.shuffle_buffer >= 1, ">= 1"),
        }
        for name, (ok, want) in checks.items():
            if not ok:
                raise RptError(f"{name.replace('_', '-')} must be {want}, got {getattr(self, name)!r}")
