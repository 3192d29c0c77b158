"""The training loop of ``rpt-train run``: rollout -> objective (rewards, advantages) -> update, with
checkpoints, exact resume, validation, logging and data parallelism.

One step: draw B contexts from this rank's shard stream, roll out G completions each
(``rpt_train.rl.rollout``, with the objective's rollout settings), let the objective score them
(``rpt_train.rl.objective``), compute old / reference log-probs when they are needed, then run
``num_iterations`` optimizer updates over micro-batches (``rpt_train.rl.update``), telling the objective
after each (RLP moves its EMA baseline there). Ranks may hold different numbers of sequences (dynamic
sampling): the short ones run zero-weight micro-batches so every rank calls backward equally often.
Every rank draws its own contexts; metrics are all-reduced.

The trainer's whole resumable state is ``state_dict()`` / ``load_state_dict()`` (model, optimizer,
scheduler, step, every rank's data position and RNGs, the objective's own state); a checkpoint is that
dict on disk (``rpt_train.rl.checkpoint``). A resume compares this run's settings with the checkpoint's
``run_config.json``: those in ``RESUMABLE`` are applied (and recorded), any other difference is refused.
Before any step the shards are checked against their manifest (sha256, tokenizer) and the tokenizer
against the policy's own.

The run ends at ``max_steps``, once ``train_flops`` has reached ``max_flops`` (``--match-flops RUN``:
another run's recorded compute; the last step may pass it by less than one step's compute), or after
the step in which ``train(stop=...)``'s ``stop()`` turned true (the CLI's Ctrl-C flag), and writes a
checkpoint. A KeyboardInterrupt mid-step saves the state from the start of that step (data
position, RNGs), unless the optimizer had already stepped in it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from rpt_core.data.shards import check_context_cap, check_tokenizer, checked_manifest, iter_rows, shard_paths
from rpt_core.data.stream import ShardStream
from rpt_core.model import Qwen3ForCausalLM, resolve_model_dir
from rpt_core.model.hf_io import read_config
from rpt_core.model.logprobs import LogprobModule
from rpt_core.runtime import distributed as D
from rpt_core.runtime.config import config_to_dict
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import write_json_atomic
from rpt_core.runtime.metrics import METRICS_FILE, MetricsLogger, last_logged_step
from rpt_core.text.pairing import check_pair, own_tokenizer
from rpt_core.text.tokenizer import Tokenizer, resolve_tokenizer_file
from rpt_train.compute import rl_step_flops
from rpt_train.passrate.selection import selected_rows
from rpt_train.rl.checkpoint import (
    CHECKPOINTS,
    RUN_CONFIG,
    TRAINER_STATE,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    run_flops,
    save_checkpoint,
    set_rng_state,
)
from rpt_train.rl.config import TrainConfig, format_differences, resume_differences
from rpt_train.rl.objective import ObjectiveContext, build_objective
from rpt_train.rl.precision import local_params, refresh_rollout_copy, rollout_copy, update_ratio
from rpt_train.rl.rollout import (
    RolloutBatch,
    RolloutSpec,
    dynamic_batch,
    rollout,
    rollout_metrics,
    sample_records,
    stop_token_ids,
)
from rpt_train.rl.update import MicroBatchSettings, backward_micro_batches, batched_logprobs

COLUMNS = ("doc_id", "position", "context", "label", "boundaries")  # and the objective's own ``columns``


def lr_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warmup, then constant."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    stopped: str  # "max_steps" | "max_flops" | "interrupted" | "data_exhausted"


# ------------------------------------------------------------------------------------------ the loop


class Trainer:
    """``Trainer(cfg).train()``; under torchrun each rank builds one and they step in lockstep."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo | None = None):
        self.cfg = cfg
        self.info = info or D.init_distributed()
        self.rank, self.world = self.info.rank, self.info.world_size
        self.device = torch.device(cfg.runtime.device) if cfg.runtime.device else self.info.device
        self.run_dir = Path(cfg.io.out)
        if (
            self.device.type == "cuda" and cfg.runtime.tf32
        ):  # float32 matmuls (evaluation, the EMA) on tensor cores
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if not cfg.io.shards:
            raise RptError("no shard directory given (SHARDS)")
        self.tokenizer_file = resolve_tokenizer_file(cfg.io.tokenizer or resolve_model_dir(cfg.io.model))
        self.tokenizer = Tokenizer.load(self.tokenizer_file)
        self.template = cfg.template_obj(self.tokenizer.chat)
        self.objective = build_objective(cfg)
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is not None and not cfg.io.resume:
            raise RptError(f"{self.run_dir} already holds checkpoints; pass --resume or choose another --out")
        if ckpt is None and cfg.io.resume:
            self._check_fresh_resume()
        resumed_changes = self._resume_changes(ckpt) if ckpt is not None else {}
        self._check_model_fits(resolve_model_dir(ckpt or cfg.io.model))
        train_paths = shard_paths(cfg.io.shards, "train")
        has_val = (
            cfg.log.val_every and (Path(cfg.io.shards) / "val").is_dir()
        )  # not a flat dir's train shards
        val_paths = shard_paths(cfg.io.shards, "val", required=False) if has_val else []
        manifest = D.on_main_rank(
            lambda: checked_manifest(cfg.io.shards, train_paths + val_paths, self._warn, cfg.log.quiet)
        )
        check_tokenizer(manifest, self.tokenizer, "the policy's tokenizer")
        check_context_cap(manifest, cfg.task.max_prompt_tokens, self._warn)
        # On resume the architecture comes from the checkpoint (no hub fetch); load_state_dict sets it all.
        self.model = self._load_model(ckpt or cfg.io.model)
        self.ref = self._reference() if cfg.grpo.beta > 0 else None
        self.logprob_module = LogprobModule(self.model, cfg.runtime.logprob_chunk)
        fsdp = cfg.runtime.fsdp and self.info.distributed
        if fsdp:
            D.wrap_fsdp2(self.model, self.info, param_dtype=torch.bfloat16 if self._bf16 else None)
            # The LM head runs outside the root's forward (chunked, in rpt_core.model.logprobs): keep the
            # root's parameters gathered after hidden_states() until backward reshards them.
            self.model.set_reshard_after_forward(False, recurse=False)
        self.policy = self.logprob_module if fsdp else D.wrap_ddp(self.logprob_module, self.info)
        self.sync_module = self.model if fsdp else self.policy  # what no_sync acts on
        # None: rollouts run on the policy itself
        self.rollout_model = rollout_copy(self.model, cfg, self._bf16, fsdp)
        self.objective.attach(ObjectiveContext(
            self.model, self.tokenizer, cfg.sampling.micro_batch_size, cfg.runtime.logprob_chunk,
            self._autocast,
            stop_token_ids(self.tokenizer), self.tokenizer.pad_id or 0, fsdp,
        ))  # fmt: skip
        self.columns = (*COLUMNS, *self.objective.columns)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.optim.warmup_steps)
        )
        self.stream = ShardStream(train_paths, cfg.optim.seed, cfg.data.shuffle_buffer,
                                  self.rank, self.world, cfg.data.epochs or None, self.columns)  # fmt: skip
        self._rows = iter(self.stream)
        self.validating = bool(val_paths)
        if cfg.log.val_every and not val_paths:
            self._warn(
                f"--val-every {cfg.log.val_every}: {cfg.io.shards} has no val/ shards; validation is off"
            )
        self.val_rows = self._val_rows(val_paths) if self.validating else []
        self.generator = torch.Generator(self.device).manual_seed(cfg.optim.seed * 1_000_003 + self.rank)
        self.spec = self._spec()
        self.mb = MicroBatchSettings(self.objective, cfg.sampling.temperature, cfg.sampling.micro_batch_size)
        self.logger = MetricsLogger(
            self.run_dir, cfg.log.quiet, cfg.log.tensorboard, self.rank, cfg.optim.max_steps
        )
        if cfg.data.pass_rates:  # only the positions the band keeps (the stream still counts every row read)
            self._rows = selected_rows(cfg, self.stream, self.run_dir, ckpt is not None, self.logger.message,
                                       self.info.is_main)  # fmt: skip
        self.step, self.bad_steps, self.skipped_rows = 0, 0, 0
        self.n_params, self.train_flops = self.model.num_parameters(), 0.0  # rpt_train.compute
        self.max_flops = run_flops(cfg.optim.match_flops) if cfg.optim.match_flops else cfg.optim.max_flops
        self._snapshot: dict | None = None  # this rank's state at the start of the step in progress
        self._stepped, self._saved_step, self._last_ckpt = False, -1, ckpt
        if ckpt is not None:
            self.load_state_dict(load_checkpoint(ckpt, self.model.dtype))
            self.logger.truncate_after(self.step)
            self.logger.message(f"resumed from {ckpt} at step {self.step}")
            if resumed_changes:
                self.logger.message(f"resume: applying {format_differences(resumed_changes)}")
            self._saved_step = self.step
            refresh_rollout_copy(self.rollout_model, self.model)
        elif dropped := self.logger.truncate_after(0):  # an earlier attempt's lines: steps never go back
            self._warn(f"starting at step 0: dropped {dropped} lines of an earlier attempt from "
                       f"{self.run_dir}'s metrics and samples")  # fmt: skip

    def _check_fresh_resume(self) -> None:
        """--resume without a loadable checkpoint: start fresh with a note when the run never logged a step,
        refuse when it did (its steps would be trained again from other weights without a word)."""
        logged = last_logged_step(self.run_dir / METRICS_FILE)
        if logged:
            raise RptError(
                f"--resume: {self.run_dir} logged steps up to {logged} but holds no loadable checkpoint "
                f"(no {CHECKPOINTS}/step-*/{TRAINER_STATE}); rerun without --resume to start over "
                "(its logs are replaced), or train into another --out"
            )
        self._warn(f"--resume: no checkpoint in {self.run_dir}; starting fresh at step 0")

    def _warn(self, text: str) -> None:
        """A warning on the main rank's stderr, also under --quiet (it is not progress)."""
        if self.info.is_main:
            warn(text)

    def _resume_changes(self, ckpt: Path) -> dict:
        """The settings that differ from the saved run's and may change (see ``RESUMABLE``); refuse others."""
        try:
            saved = json.loads((ckpt / RUN_CONFIG).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self._warn(f"{ckpt / RUN_CONFIG} is missing or unreadable: cannot compare this run's settings "
                       "with the saved run's")  # fmt: skip
            return {}
        applied, refused = resume_differences(saved, self.cfg)
        if refused:
            raise RptError(
                f"--resume: settings that cannot change mid-run differ from the saved run ({ckpt}): "
                f"{format_differences(refused)}; resume with the saved values, or train into another --out"
            )
        return applied

    # ---- setup ----
    @property
    def _bf16(self) -> bool:
        return self.cfg.runtime.bf16 and (self.device.type == "cuda" or self.cfg.runtime.cpu_autocast)

    def _autocast(self):
        if self._bf16 and not (self.cfg.runtime.fsdp and self.info.distributed):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def _checkpointing(self) -> bool:
        """``--gradient-checkpointing auto``: on CUDA, where real lengths need it (benchmarks/GPU.md)."""
        mode = self.cfg.runtime.gradient_checkpointing
        return mode == "on" or (mode == "auto" and self.device.type == "cuda")

    def _check_model_fits(self, model_dir: Path) -> None:
        """The tokenizer must belong to the policy (``rpt_core.text.pairing``, the check build and eval make
        too; a --tokenizer other than the model's own must have its base vocabulary), and --top-k fit it."""
        config = read_config(model_dir)
        check_pair(
            self.tokenizer, config, f"the policy {model_dir}", own_tokenizer(model_dir, self.tokenizer)
        )
        if self.cfg.sampling.top_k > config.vocab_size:
            raise RptError(
                f"--top-k {self.cfg.sampling.top_k} is larger than the policy's vocabulary "
                f"({config.vocab_size})"
            )

    def _load_model(self, source) -> Qwen3ForCausalLM:
        model_dir = resolve_model_dir(source)
        torch.manual_seed(self.cfg.optim.seed)
        model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=self.cfg.runtime.dtype, device=self.device)
        model.gradient_checkpointing = self._checkpointing
        if self.cfg.runtime.compile:
            for layer in model.model.layers:
                layer.compile(dynamic=True)
        return model.train()

    def _reference(self) -> LogprobModule:
        ref = Qwen3ForCausalLM.from_pretrained(
            self.cfg.io.model, dtype=self.cfg.runtime.dtype, device=self.device
        )
        return LogprobModule(ref.eval().requires_grad_(False), self.cfg.runtime.logprob_chunk)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.cfg.optim.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},  # norms: no decay
        ]
        o = self.cfg.optim
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps, fused=True
        )

    def _val_rows(self, paths: list[Path]) -> list[dict]:
        return list(islice(iter_rows(paths, self.columns), self.cfg.log.val_samples))[self.rank :: self.world]

    def _spec(self, greedy: bool = False) -> RolloutSpec:
        """The run's rollout settings as the objective needs them (RLP: thoughts stop at ``</think>``)."""
        spec = self.cfg.rollout_spec(self.template, self.tokenizer, greedy)
        return self.objective.rollout_spec(spec, self.tokenizer)

    # ---- state ----
    def _rank_state(self) -> dict:
        """This rank's resumable position: data stream, sampler and global RNGs."""
        return {"stream": self.stream.state_dict(), "sampler": self.generator.get_state(), "rng": rng_state()}

    def state_dict(self, snapshot: dict | None = None) -> dict[str, Any]:
        """Everything a resume needs, full (unsharded) on the main rank. A collective: call on every rank.

        ``snapshot``: this rank's position saved at the start of an interrupted step (see ``train``).
        """
        model_sd, optim_sd = D.gather_full_state(self.model, self.optimizer)  # collective under FSDP2
        return {
            "model": model_sd,
            "optimizer": optim_sd,
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "bad_steps": self.bad_steps,
            "world_size": self.world,
            "ranks": D.all_gather_objects(snapshot or self._rank_state()),
            "objective": self.objective.state_dict(),
            "train_flops": self.train_flops,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned: weights and optimizer in one place, then the rest."""
        if state["world_size"] != self.world:
            raise RptError(f"the checkpoint was written by {state['world_size']} ranks; resume with as many "
                           f"(now {self.world}) to continue the data streams exactly")  # fmt: skip
        D.load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        mine = state["ranks"][self.rank]
        self.stream.load_state_dict(mine["stream"])
        try:
            self.generator.set_state(mine["sampler"])
        except RuntimeError:  # a CPU generator's state does not fit a CUDA one, and vice versa
            raise RptError(
                f"the checkpoint's sampler state was saved on another kind of device than {self.device}; "
                "resume on the device type the run was started on"
            ) from None
        set_rng_state(mine["rng"])
        self.objective.load_state_dict(state.get("objective", {}))
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.train_flops = float(state.get("train_flops", 0.0))

    def save(self, snapshot: dict | None = None) -> Path | None:
        state = self.state_dict(snapshot)
        path = None
        if self.info.is_main:
            path = save_checkpoint(self.run_dir, self.step, state, self.model.config, self.tokenizer_file,
                                   config_to_dict(self.cfg), self.cfg.log.keep_last)  # fmt: skip
            self.logger.message(f"checkpoint: {path}")
        D.barrier()
        self._saved_step, self._last_ckpt = self.step, path
        return path

    # ---- one step ----
    def _next_rows(self, n: int) -> list[dict]:
        """Up to n rows; an empty context (nothing to condition on) is skipped and counted."""
        rows = []
        for row in self._rows:
            if row["context"]:
                rows.append(row)
            else:
                self.skipped_rows += 1
            if len(rows) == n:
                break
        return rows

    def _rollout(self, rows: list[dict], spec: RolloutSpec | None = None, generator=None) -> RolloutBatch:
        with torch.no_grad(), self._autocast(), D.fsdp_gathered(self.model):
            model = self.rollout_model or self.model
            batch = rollout(model, self.tokenizer, self.template, rows, spec or self.spec, generator)
        return self.objective.score(batch)

    def _draw(self, rows: list[dict]) -> tuple[RolloutBatch, RolloutBatch, int]:
        """(training batch, everything drawn, extra draws); see ``rpt_train.rl.rollout.dynamic_batch``."""
        roll, c = (lambda r: self._rollout(r, generator=self.generator)), self.cfg
        if c.grpo.dynamic_sampling:
            return dynamic_batch(
                roll,
                rows,
                self._next_rows,
                c.sampling.batch_size,
                c.grpo.max_resample_batches,
                self.spec.pad_id,
            )
        batch = roll(rows)
        return batch, batch, 0

    def _update(self, batch: RolloutBatch, old_logp, ref_logp) -> dict[str, float]:
        loss_mask = batch.loss_mask(self.cfg.grpo.mask_truncated)  # (S, T)
        n_micro = int(D.all_reduce_max(math.ceil(batch.num_sequences / self.cfg.sampling.micro_batch_size)))
        global_denom = D.all_reduce_sum(float(self.objective.loss_agg.normaliser(loss_mask)))
        out: dict[str, float] = {}
        for _ in range(self.cfg.grpo.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            sums = backward_micro_batches(
                self.policy, batch, loss_mask, old_logp, ref_logp, self.mb, n_micro, global_denom, self.world,
                self._autocast, self.sync_module,
            )  # fmt: skip
            totals = D.all_reduce_sum(torch.tensor(list(sums.values()), dtype=torch.float64))
            sums = dict(zip(sums, totals.tolist(), strict=True))
            norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.optim.max_grad_norm or math.inf
            )
            norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            loss = sums["loss"] / self.world
            out = {"loss": loss, "grad_norm": norm, "lr": self.optimizer.param_groups[0]["lr"]}
            tokens = max(sums["tokens"], 1.0)
            out.update({k: sums[k] / tokens for k in ("clip_frac", "ppo_kl")})
            out["entropy"] = sums["entropy"] / max(sums["entropy_tokens"], 1.0)
            if self.ref is not None:
                out["kl"] = sums["kl"] / tokens
            if not (math.isfinite(loss) and math.isfinite(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                out["skipped"] = 1
                return out
            self._stepped = True
            before = [p.detach().clone() for p in local_params(self.model)]
            self.optimizer.step()
            out["update_ratio"] = update_ratio(
                self.model, before, fsdp=self.cfg.runtime.fsdp and self.info.distributed
            )
            self.scheduler.step()
            self.objective.after_step(self.model)
            refresh_rollout_copy(self.rollout_model, self.model)
        return out

    def train_step(self) -> dict | None:
        """One GRPO step; None when some rank's data ran out (every rank then stops together)."""
        t0 = time.perf_counter()
        self._snapshot, self._stepped = self._rank_state(), False
        rows = self._next_rows(self.cfg.sampling.batch_size)
        if D.all_reduce_sum(float(not rows)) > 0:
            return None
        batch, drawn, tries = self._draw(rows)
        args = (self.cfg.sampling.temperature, self.cfg.sampling.micro_batch_size, self._autocast)
        old = (
            batched_logprobs(self.logprob_module, batch, *args) if self.cfg.grpo.num_iterations > 1 else None
        )
        ref = batched_logprobs(self.ref, batch, *args) if self.ref is not None else None
        t2 = time.perf_counter()
        upd = self._update(batch, old, ref)
        t3 = time.perf_counter()
        self.step, self._snapshot, self._stepped = self.step + 1, None, False  # consistent again
        gen_s = drawn.seconds.get("generate", 0.0)
        m = {**rollout_metrics(drawn), **self.objective.metrics(drawn)}
        G, iters = batch.group_size, self.cfg.grpo.num_iterations
        m["flops"] = rl_step_flops(
            self.n_params,
            rollout_tokens=int(drawn.prompt_mask.sum()) + int(drawn.completion_mask.sum()),
            update_tokens=G * int(batch.prompt_mask.sum()) + int(batch.completion_mask.sum()),
            updates=iters,
            extra_forwards=int(iters > 1) + int(self.ref is not None),
            score_tokens=drawn.score_tokens,
        )
        m.update(tokens_per_s=float(drawn.completion_mask.sum()) / max(t3 - t0, 1e-9), time_generate=gen_s,
                 time_score=t2 - t0 - gen_s, time_update=t3 - t2)  # fmt: skip
        if self.cfg.grpo.dynamic_sampling:
            m.update(groups=batch.num_groups, resample_batches=tries)
        m["skipped_rows"] = self.skipped_rows  # empty contexts so far (this run, all ranks)
        m = D.mean_over_ranks(m)
        m.update(
            {k: m[k] * self.world for k in ("tokens_per_s", "groups", "skipped_rows", "flops") if k in m}
        )
        self.train_flops += m["flops"]  # all ranks' compute
        m["train_flops"] = self.train_flops
        m.update(upd)
        self.bad_steps = self.bad_steps + 1 if "skipped" in upd else 0
        if self.bad_steps:
            self.logger.message(f"step {self.step}: non-finite loss or gradient, update skipped")
        if self.cfg.log.sample_every and self.step % self.cfg.log.sample_every == 0:
            self.logger.log_samples(
                self.step, sample_records(batch, self.tokenizer, self.cfg.log.num_samples)
            )
        return m

    def validate(self) -> dict[str, float]:
        """Greedy mean reward, format failures and the objective's metrics (RPT: ``acc``) on the fixed
        val contexts, each a mean over every rank's completions."""
        spec = self._spec(greedy=True)
        batches = [self._rollout(self.val_rows[i : i + self.cfg.sampling.batch_size], spec)
                   for i in range(0, len(self.val_rows), self.cfg.sampling.batch_size)]  # fmt: skip
        per_batch = [(b.num_sequences, self.objective.metrics(b)) for b in batches]
        names = sorted(set().union(*D.all_gather_objects(sorted(per_batch[0][1]) if per_batch else [])))
        sums = [
            sum(float(b.rewards.double().sum()) for b in batches),
            sum(float(b.format_failed.sum()) for b in batches),
            *(sum(n * m.get(k, 0.0) for n, m in per_batch) for k in names),
            float(sum(n for n, _ in per_batch)),
        ]
        totals = D.all_reduce_sum(torch.tensor(sums, dtype=torch.float64)).tolist()
        n = max(totals[-1], 1.0)
        keys = ("reward", "format_fail", *names)
        return {f"val_{k}": v / n for k, v in zip(keys, totals[:-1], strict=True)}

    # ---- the loop ----
    def _loop(self, stop: Callable[[], bool]) -> str:
        while self.step < self.cfg.optim.max_steps:
            if self.max_flops and self.train_flops >= self.max_flops:
                return "max_flops"
            m = self.train_step()
            if m is None:
                return "data_exhausted"
            if self.validating and self.step % self.cfg.log.val_every == 0:
                m.update(self.validate())
            self.logger.log(self.step, m)
            if self.bad_steps >= self.cfg.optim.max_bad_steps:
                raise RptError(f"{self.bad_steps} steps in a row had a non-finite loss or gradient (last: "
                               f"step {self.step}); lower --lr or check the model and data")  # fmt: skip
            if self.cfg.log.save_every and self.step % self.cfg.log.save_every == 0:
                self.save()
            if D.all_reduce_sum(float(stop())) > 0:  # every rank stops after the same step
                return "interrupted"
        return "max_steps"

    def train(self, stop: Callable[[], bool] = lambda: False) -> TrainResult:
        """Run to ``max_steps``, data exhaustion, ``stop()`` or KeyboardInterrupt; save at the end.

        The CLI passes a ``stop`` that turns true on Ctrl-C, so the step in progress completes first.
        """
        if self.info.is_main:
            write_json_atomic(self.run_dir / "run_config.json", config_to_dict(self.cfg))
        try:
            stopped = self._loop(stop)
            ckpt = self._last_ckpt if self._saved_step == self.step else self.save()
        except KeyboardInterrupt:
            stopped = "interrupted"
            if self._stepped:  # parameters already moved in this step: no consistent state to save
                self.logger.message("interrupted mid-update; not saved (resume from the last checkpoint)")
                ckpt = latest_checkpoint(self.run_dir)
            else:  # the state before the interrupted step (or after the last one, if between steps)
                ckpt = self.save(self._snapshot)
        finally:
            self.logger.close()
        self.logger.message(f"stopped ({stopped}) at step {self.step}; checkpoint: {ckpt}")
        return TrainResult(self.step, ckpt, stopped)
