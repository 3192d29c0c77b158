"""``TrainConfig``: every option of ``rpt-train run`` (GRPO on RPT shards), typed, with defaults and help.

Precedence is the dataclass default < ``[train]`` of ``--config FILE.toml`` < command-line options (the
mechanism is ``rpt_core.runtime.config``). Each field's help, choices and bounds are also its ``--option``:
``rpt_train.cli.run`` builds its options from these fields, so a new setting is added here only.
Defaults follow the RPT paper where it says (G = 8, temperature 0.8, lr 1e-6 constant after warmup, no
KL) and verl / TRL elsewhere. The builders (``rollout_spec``, ``loss_config``, ...) turn the flat config
into the small objects the trainer's parts take.

The options are grouped in sections (``IoSettings`` ... ``LogSettings``, as ``cfg.optim.lr``), but only in
Python: the command line, a recipe's ``[train]`` and ``run_config.json`` name every option flat (``--lr``,
``lr = 1e-6``, ``"lr"``), as before the sections existed (``rpt_core.runtime.config``). Tests and scripts
build one with ``TrainConfig.from_flat(lr=...)``.

``resumable=True`` on a field (collected in ``RESUMABLE``) and ``resume_differences`` decide what a
resumed run may change (applied and recorded) and what it may not (refused). The resumable options say how
long the run goes on, what it logs and keeps, where it runs and how it splits work to fit in memory. None
of them changes what a step computes from the saved state (micro-batching and chunking change
floating-point summation order only; rollout_batch_size changes which random numbers each sample draws,
not their distribution; tf32 and rollout_weights change rounding only (of float32 matmuls, of the
rollout's weights); a resume on another kind of device is refused when the checkpoint's sampler state does
not fit it). Any other difference from the saved run is refused: it would be recorded but not in force for
the steps before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rpt_core.model.decode import DecodeOptions
from rpt_core.model.generation import SamplingParams
from rpt_core.reward import REWARDS
from rpt_core.runtime.config import check, config_to_dict, from_flat, resumable_fields, section
from rpt_core.runtime.config import option as _opt
from rpt_core.runtime.errors import RptError
from rpt_core.text.prompts import TEMPLATES, PromptTemplate, load_template
from rpt_train.passrate.estimate import Band
from rpt_train.rl.grpo import ADVANTAGES, LOSS_AGG, GrpoLossConfig, silent_with_one_completion
from rpt_train.rl.objective import OBJECTIVE_NAMES
from rpt_train.rl.rollout import RolloutSpec, sampling_params

if TYPE_CHECKING:
    from rpt_core.text.chat_template import Chat
    from rpt_core.text.tokenizer import Tokenizer

DTYPES = ("float32", "bfloat16")
ROLLOUT_WEIGHTS = ("auto", "policy", "bf16-copy")
# Half a bfloat16 unit (8 significant bits) at |w| = 0.02, a typical weight: 2^-6 * 2^-7 / 2 = 2^-14 = 6.1e-5.
# AdamW moves each weight by about lr per step, so a smaller lr on bfloat16 parameters changes nothing.
BF16_MIN_LR = 2.0**-14


@dataclass
class IoSettings:
    """Inputs and outputs. ``TrainConfig.io``."""

    shards: str = _opt(
        "", "RPT shard directory (from `rpt-data build`): SHARDS/train and SHARDS/val.", argument=True
    )
    model: str = _opt("Qwen/Qwen3-0.6B", "Policy: HF-format model directory or hub id.")
    tokenizer: str | None = _opt(None, "tokenizer.json or its directory (default: the model's).")
    out: str = _opt("runs/rpt", "Run directory: checkpoints, metrics.jsonl, run_config.json.", resumable=True)
    resume: bool = _opt(False, "Continue from the latest checkpoint in --out.", resumable=True)


@dataclass
class TaskSettings:
    """What is learned: the objective, its prompts and its rewards. ``TrainConfig.task``."""

    objective: str = _opt(
        "rpt",
        "Training objective: rpt (prefix reward of the prediction, GRPO) or rlp (information gain of the "
        "thought over an EMA no-think baseline; needs a thinking template; --reward and --advantage apply "
        "to rpt only).",
        choices=OBJECTIVE_NAMES,
    )
    template: str = _opt("qwen3-think", "Prompt template.", choices=TEMPLATES)
    instruction_file: str | None = _opt(None, "Text file replacing the template's instruction.")
    answer_tokens: int = _opt(
        1, "plain: the prediction is the first N generated tokens; think: the first N after </think>.", ge=1
    )
    max_prompt_tokens: int = _opt(
        1024, "Contexts are left-truncated to this many tokens (the end kept).", ge=1
    )
    max_new_tokens: int = _opt(1024, "Completion length cap; a cut-off completion has no prediction.", ge=1)
    reward: str = _opt("prefix", "Reward of an extracted prediction.", choices=REWARDS)
    format_penalty: float = _opt(0.0, "Reward for a completion with no extractable prediction.")
    rlp_tokens: int = _opt(
        1, "rlp: ground-truth tokens after the thought whose log-likelihood gains are summed (k).", ge=1
    )
    ema_decay: float = _opt(
        0.999,
        "rlp: decay of the no-think baseline's EMA of the policy weights, per optimizer step.",
        ge=0,
        le=1,
    )


@dataclass
class SamplingSettings:
    """Rollout sampling and how a step's sequences are batched. ``TrainConfig.sampling``."""

    num_generations: int = _opt(8, "G: completions sampled per context.", ge=1)
    temperature: float = _opt(
        0.8, "Sampling temperature, > 0 (log-probs are taken at the same temperature).", ge=0
    )
    top_p: float = _opt(1.0, "Nucleus sampling threshold (1 = off).", gt=0, le=1)
    top_k: int = _opt(0, "Top-k sampling (0 = off).", ge=0)
    batch_size: int = _opt(8, "Contexts (groups) per step and rank.", ge=1)
    rollout_batch_size: int = _opt(
        0,
        "Contexts per generate() call (0 = the whole batch at once; on CUDA, as many as fit).",
        ge=0,
        resumable=True,
    )
    micro_batch_size: int = _opt(
        8, "Sequences per forward/backward; gradients are accumulated.", ge=1, resumable=True
    )


@dataclass
class GrpoSettings:
    """The GRPO loss, its advantages and DAPO's dynamic sampling. ``TrainConfig.grpo``."""

    advantage: str = _opt("group", "Advantage estimator.", choices=ADVANTAGES)
    loss_agg: str = _opt("token-mean", "Loss aggregation (verl's names).", choices=LOSS_AGG)
    epsilon: float = _opt(0.2, "Clip range below (ratio >= 1 - epsilon).", gt=0, lt=1)
    epsilon_high: float | None = _opt(None, "Clip range above (DAPO clip-higher; default = epsilon).", gt=0)
    num_iterations: int = _opt(1, "Policy updates per rollout batch (against stored old log-probs).", ge=1)
    beta: float = _opt(0.0, "k3 KL coefficient to a frozen reference (loaded only when > 0).", ge=0)
    mask_truncated: bool = _opt(False, "Leave completions cut off at --max-new-tokens out of the loss.")
    dynamic_sampling: bool = _opt(False, "DAPO: draw more contexts until B groups have unequal rewards.")
    max_resample_batches: int = _opt(4, "Dynamic sampling: extra draws per step at most.", ge=0)


@dataclass
class OptimSettings:
    """AdamW, its schedule, and how long the run goes on. ``TrainConfig.optim``."""

    lr: float = _opt(1e-6, "Peak learning rate (constant after warmup).", ge=0)
    warmup_steps: int = _opt(10, "Linear warmup from 0 over this many optimizer steps.", ge=0)
    weight_decay: float = _opt(0.01, "AdamW weight decay.")
    adam_beta1: float = _opt(0.9, "AdamW beta1.")
    adam_beta2: float = _opt(0.999, "AdamW beta2.")
    adam_eps: float = _opt(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _opt(1.0, "Gradient clipping by global norm (0 = off).", ge=0)
    max_steps: int = _opt(1000, "Training steps (rollout batches).", ge=1, resumable=True)
    max_flops: float = _opt(
        0.0,
        "Also stop after the step that brings train_flops to at least this (0 = off).",
        ge=0,
        resumable=True,
    )
    match_flops: str | None = _opt(
        None,
        "An `rpt-train run` directory: stop at the training compute it recorded (sets --max-flops).",
        resumable=True,
    )
    seed: int = _opt(0, "Seed of data order, sampling and initialisation.")
    max_bad_steps: int = _opt(5, "Stop after this many non-finite losses in a row.", ge=1, resumable=True)


@dataclass
class RuntimeSettings:
    """Where and how it runs: device, dtypes, compilation, sharding. ``TrainConfig.runtime``."""

    device: str | None = _opt(
        None, "cpu | cuda | cuda:N (default: CUDA when present; LOCAL_RANK under torchrun).", resumable=True
    )
    dtype: str = _opt("float32", "Parameter dtype; AdamW states follow it.", choices=DTYPES)
    bf16: bool = _opt(
        True,
        "bfloat16 autocast for forward passes over float32 master weights (CUDA; on a CPU only with "
        "--cpu-autocast). Under --fsdp it is FSDP2's param_dtype instead.",
    )
    cpu_autocast: bool = _opt(
        False,
        "Also apply --bf16 on a CPU: the GPU's dtype setup (bfloat16 compute and KV cache over "
        "float32 weights), as the tests run it; fast only where the CPU has bfloat16 matrix units (AMX).",
    )
    tf32: bool = _opt(
        True, "CUDA: TF32 tensor cores for float32 matmuls (what autocast leaves in float32).", resumable=True
    )
    gradient_checkpointing: str = _opt(
        "auto",
        "Recompute decoder layers in backward to save memory; auto = on on CUDA (real lengths need "
        "it: benchmarks/GPU.md), off on a CPU.",
        choices=("auto", "on", "off"),
        resumable=True,
    )
    compile: bool = _opt(False, "torch.compile the decoder layers.", resumable=True)
    compile_decode: bool = _opt(
        False, "Rollouts: torch.compile a fixed-shape decode step (replayed from CUDA graphs on CUDA)."
    )
    rollout_weights: str = _opt(
        "auto",
        "Weights rollouts run on: policy, or bf16-copy (a bfloat16 copy refreshed after each "
        "optimizer step, 2 bytes per parameter: a captured --compile-decode step then reads bf16 weights "
        "instead of re-casting float32 ones at every replay); auto = bf16-copy with --compile-decode under "
        "--bf16 autocast (not --fsdp), else policy.",
        choices=ROLLOUT_WEIGHTS,
        resumable=True,
    )
    fsdp: bool = _opt(
        False, "Shard parameters with FSDP2 instead of replicating with DDP (torchrun).", resumable=True
    )
    logprob_chunk: int = _opt(
        1024, "Completion tokens per LM-head chunk when computing log-probs.", ge=1, resumable=True
    )


@dataclass
class DataSettings:
    """The order of the training rows and which of them are kept. ``TrainConfig.data``."""

    shuffle_buffer: int = _opt(10000, "Rows in the streaming shuffle buffer.", ge=1)
    epochs: int = _opt(0, "Passes over SHARDS/train (0 = repeat until --max-steps).", ge=0, resumable=True)
    pass_rates: str | None = _opt(
        None,
        "Train only on positions chosen by their pass rates: the OUT of `rpt-train passrate` on "
        "SHARDS/train (unscored positions are dropped and counted; see OUT/selection.json).",
    )
    pass_above: float = _opt(
        0.0, "--pass-rates: keep positions whose sampled pass@1 is above this (strict; 0: not all wrong)."
    )
    pass_below: float = _opt(
        1.0, "--pass-rates: ... and below this (strict; 1: not all right, above 1 keeps those too)."
    )
    pass_margin: float | None = _opt(
        None,
        "--pass-rates: ... and whose pass@1 exceeds the next-token probability of the true token by "
        "at least this (off by default).",
    )


@dataclass
class LogSettings:
    """Validation, logging and checkpoints. ``TrainConfig.log``."""

    val_every: int = _opt(
        0, "Greedy mean reward on SHARDS/val every N steps (0 = off).", ge=0, resumable=True
    )
    val_samples: int = _opt(64, "Fixed number of val contexts.", ge=1, resumable=True)
    save_every: int = _opt(100, "Checkpoint every N steps (and always at the end).", ge=0, resumable=True)
    keep_last: int = _opt(3, "Checkpoints kept.", ge=1, resumable=True)
    sample_every: int = _opt(
        50, "Log a few completions with their rewards every N steps (0 = off).", ge=0, resumable=True
    )
    num_samples: int = _opt(4, "Completions per sample log.", ge=0, resumable=True)
    tensorboard: bool = _opt(False, "Also write TensorBoard event files.", resumable=True)
    quiet: bool = _opt(False, "No console progress line.", resumable=True)


@dataclass
class TrainConfig:
    """Every option of ``rpt-train run``, grouped in sections; flat outside Python (``--lr``, ``lr = ...``
    in ``[train]``, ``"lr"`` in run_config.json): build one with ``TrainConfig.from_flat(lr=...)`` or
    ``build_config(TrainConfig, {...})``."""

    io: IoSettings = section(IoSettings)  # inputs / outputs
    task: TaskSettings = section(TaskSettings)  # prompts and rewards
    sampling: SamplingSettings = section(SamplingSettings)  # sampling
    grpo: GrpoSettings = section(GrpoSettings)  # GRPO
    optim: OptimSettings = section(OptimSettings)  # optimisation
    runtime: RuntimeSettings = section(RuntimeSettings)  # machinery
    data: DataSettings = section(DataSettings)  # data
    log: LogSettings = section(LogSettings)  # validation, logging, checkpoints

    @classmethod
    def from_flat(cls, **values: Any) -> TrainConfig:
        """``TrainConfig`` from flat option names: ``TrainConfig.from_flat(lr=1e-5, template="plain")``."""
        return from_flat(cls, **values)

    def __post_init__(self) -> None:
        check(self)
        if self.sampling.temperature == 0:  # 0 means greedy everywhere else (eval, SamplingParams)
            raise RptError(
                "temperature 0 (greedy decoding) cannot train: GRPO needs the log-probs of the distribution "
                "the rollouts are sampled from, and greedy decoding samples from none; use a temperature > 0"
            )
        if self.sampling.num_generations == 1 and silent_with_one_completion(self.grpo.advantage):
            raise RptError(
                f"--num-generations 1 with --advantage {self.grpo.advantage}: one completion per context "
                "has no group to compare with, so every advantage is 0 and nothing is learned; use "
                "--num-generations >= 2 (or --advantage anchor)"
            )
        if self.runtime.dtype == "bfloat16" and 0 < self.optim.lr < BF16_MIN_LR:  # lr 0: a dry run, allowed
            raise RptError(
                f"--lr {self.optim.lr:g} with --dtype bfloat16: an AdamW step moves a weight by about lr, "
                "less than "
                f"half a bfloat16 unit at |w| ~ 0.02 ({BF16_MIN_LR:.1e}), so updates round away; train "
                "float32 master weights (--dtype float32, the default; --bf16 autocasts the compute)"
            )
        if self.data.pass_rates and not self.data.pass_above < self.data.pass_below:
            raise RptError(
                f"--pass-above {self.data.pass_above} must be below --pass-below "
                f"{self.data.pass_below}: the band keeps pass rates strictly between "
                "them"
            )
        if self.sampling.num_generations == 1 and self.grpo.dynamic_sampling:
            raise RptError(
                "--dynamic-sampling keeps groups whose rewards differ, which needs --num-generations >= 2"
            )

    # ---- builders: the small objects the trainer's parts take
    def band(self) -> Band:
        """What ``--pass-rates`` keeps (``rpt_train.passrate.estimate.Band``)."""
        return Band(self.data.pass_above, self.data.pass_below, self.data.pass_margin)

    def template_obj(self, chat: Chat | None = None) -> PromptTemplate:
        """The prompt template; ``chat`` is the policy's own chat format (``Tokenizer.chat``)."""
        return load_template(self.task.template, self.task.instruction_file, self.task.answer_tokens, chat)

    def sampling_params(
        self, template: PromptTemplate, tokenizer: Tokenizer, greedy: bool = False
    ) -> SamplingParams:
        """Sampling settings; a template with its own cap (``plain``) replaces ``max_new_tokens``."""
        return sampling_params(
            template,
            tokenizer,
            self.task.max_new_tokens,
            self.sampling.temperature,
            self.sampling.top_k,
            self.sampling.top_p,
            greedy,
        )

    def rollout_spec(
        self, template: PromptTemplate, tokenizer: Tokenizer, greedy: bool = False
    ) -> RolloutSpec:
        """Training rollouts (G samples per context), or with ``greedy`` one greedy completion each."""
        return RolloutSpec(
            sampling=self.sampling_params(template, tokenizer, greedy),
            num_generations=1 if greedy else self.sampling.num_generations,
            max_prompt_tokens=self.task.max_prompt_tokens,
            rollout_batch_size=0 if greedy else self.sampling.rollout_batch_size,
            pad_id=tokenizer.pad_id or 0,
            decode=DecodeOptions(compile=self.runtime.compile_decode),
        )

    def loss_config(self) -> GrpoLossConfig:
        """Clip range and aggregation; ``max_len`` (Dr. GRPO's constant) is the run's completion cap."""
        max_len = self.template_obj().max_new_tokens or self.task.max_new_tokens
        return GrpoLossConfig(self.grpo.epsilon, self.grpo.epsilon_high, self.grpo.loss_agg, max_len)


# What ``rpt-train run --resume`` may change from the saved run (the fields marked ``resumable=True``; why:
# the module docstring). A test pins this set.
RESUMABLE = resumable_fields(TrainConfig)
_PATHS = ("shards", "model", "tokenizer", "instruction_file", "out", "pass_rates")


def _same(name: str, a: Any, b: Any) -> bool:
    """Equal settings; paths compare as the files they name (``shards/`` is ``./shards``)."""
    if name in _PATHS and isinstance(a, str) and isinstance(b, str):
        canon = lambda p: str(Path(p).resolve()) if Path(p).exists() else os.path.normpath(p)  # noqa: E731
        return canon(a) == canon(b)
    return a == b


def resume_differences(saved: dict[str, Any], cfg: TrainConfig) -> tuple[dict, dict]:
    """``(applied, refused)``: ``{name: (saved value, new value)}`` for every setting of ``cfg`` that differs
    from the ``saved`` run's (``run_config.json``), split by ``RESUMABLE``. Keys the saved run does not have
    (written by an older rpt) are not compared."""
    now = json.loads(json.dumps(config_to_dict(cfg)))  # the same JSON types as the saved file
    diff = {k: (saved[k], v) for k, v in now.items() if k in saved and not _same(k, saved[k], v)}
    applied = {k: d for k, d in diff.items() if k in RESUMABLE}
    return applied, {k: d for k, d in diff.items() if k not in RESUMABLE}


def format_differences(diff: dict[str, tuple[Any, Any]]) -> str:
    """``lr: 0.0001 -> 0.005, seed: 0 -> 1`` (option names as typed on the command line)."""
    return ", ".join(f"{k.replace('_', '-')}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
