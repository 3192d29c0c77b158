"""The training loop of ``rpt-train run``: rollout -> objective (rewards, advantages) -> update, with
checkpoints, exact resume, validation, logging and data parallelism.

One step (``Trainer.train_step``, top to bottom): draw B contexts from this rank's shard stream, roll out
G completions each (``rpt_train.rl.rollout``, with the objective's rollout settings) and let the
objective score them (``rpt_train.rl.objective``); with dynamic sampling, draw and score more contexts
until B groups have unequal rewards (``rollout.DynamicSampling``); then compute old / reference log-probs
when they are needed and run ``num_iterations`` optimizer updates over micro-batches
(``rpt_train.rl.update``), telling the objective after each (RLP moves its EMA baseline there); then
the step's metrics (``rpt_train.rl.step_metrics``). Ranks may hold different numbers of sequences
(dynamic sampling): the short ones run zero-weight micro-batches so every rank calls backward equally
often. Every rank draws its own contexts; metrics are all-reduced. What is checked and built before the
first step is in ``rpt_train.rl.run_setup``.

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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rpt_core.data.stream import ShardStream
from rpt_core.model import resolve_model_dir
from rpt_core.model.logprobs import LogprobModule
from rpt_core.runtime import distributed as D
from rpt_core.runtime.config import config_to_dict
from rpt_core.runtime.errors import RptError, warn
from rpt_core.runtime.files import write_json_atomic
from rpt_core.runtime.metrics import MetricsLogger
from rpt_core.text.tokenizer import Tokenizer, resolve_tokenizer_file
from rpt_train.passrate.selection import selected_rows
from rpt_train.rl import precision, run_setup
from rpt_train.rl.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    run_flops,
    save_checkpoint,
    set_rng_state,
)
from rpt_train.rl.config import TrainConfig, format_differences
from rpt_train.rl.objective import ObjectiveContext, build_objective
from rpt_train.rl.rollout import (
    DynamicSampling,
    RolloutBatch,
    RolloutSpec,
    rollout,
    sample_records,
    stop_token_ids,
)
from rpt_train.rl.step_metrics import step_metrics, update_metrics, validation_metrics
from rpt_train.rl.update import (
    MicroBatchSettings,
    backward_micro_batches,
    batched_logprobs,
    plan_micro_batches,
)

COLUMNS = ("doc_id", "position", "context", "label", "boundaries")  # and the objective's own ``columns``


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
        self.rank, self.world = rank, world = self.info.rank, self.info.world_size
        self.device = torch.device(cfg.runtime.device) if cfg.runtime.device else self.info.device
        self.run_dir = Path(cfg.io.out)
        if self.device.type == "cuda" and cfg.runtime.tf32:  # float32 matmuls (eval, the EMA): tensor cores
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
            run_setup.check_fresh_resume(self.run_dir, self._warn)
        resumed_changes = run_setup.resume_changes(ckpt, cfg, self._warn) if ckpt is not None else {}
        model_dir = resolve_model_dir(ckpt or cfg.io.model)
        run_setup.check_model_fits(self.tokenizer, model_dir, cfg.sampling.top_k)
        train_paths, val_paths = run_setup.open_shards(cfg, self.tokenizer, self._warn)
        # On resume the architecture comes from the checkpoint (no hub fetch); load_state_dict sets it all.
        self.model = run_setup.load_policy(
            ckpt or cfg.io.model, cfg, self.device, precision.gradient_checkpointing(cfg, self.device)
        )
        self.ref = run_setup.load_reference(cfg, self.device) if cfg.grpo.beta > 0 else None
        self.logprob_module = LogprobModule(self.model, cfg.runtime.logprob_chunk)
        self.fsdp = fsdp = cfg.runtime.fsdp and self.info.distributed
        bf16 = precision.bf16_compute(cfg, self.device)
        self.autocast = precision.autocast_factory(cfg, self.device, fsdp)
        self.policy, self.sync_module = run_setup.wrap_parallel(self.logprob_module, self.info, fsdp, bf16)
        # None: rollouts run on the policy itself
        self.rollout_model = precision.rollout_copy(self.model, cfg, bf16, fsdp)
        tok, mbs = self.tokenizer, cfg.sampling.micro_batch_size
        chunk, stops = cfg.runtime.logprob_chunk, stop_token_ids(tok)
        ctx = ObjectiveContext(self.model, tok, mbs, chunk, self.autocast, stops, tok.pad_id or 0, fsdp)
        self.objective.attach(ctx)
        self.columns = (*COLUMNS, *self.objective.columns)
        self.optimizer, self.scheduler = run_setup.build_optimizer(self.model, cfg)
        seed, epochs = cfg.optim.seed, cfg.data.epochs or None
        self.stream = ShardStream(
            train_paths, seed, cfg.data.shuffle_buffer, rank, world, epochs, self.columns
        )
        self._rows = iter(self.stream)
        self.validating = bool(val_paths)
        self.val_rows = run_setup.val_rows(val_paths, self.columns, cfg.log.val_samples, rank, world)
        self.generator = torch.Generator(self.device).manual_seed(seed * 1_000_003 + self.rank)
        self.spec = self._spec()
        temperature, log = cfg.sampling.temperature, cfg.log
        self.mb = MicroBatchSettings(self.objective, temperature, mbs, world, self.autocast, self.sync_module)
        self.logger = MetricsLogger(self.run_dir, log.quiet, log.tensorboard, rank, cfg.optim.max_steps)
        if cfg.data.pass_rates:  # only the positions the band keeps (the stream still counts every row read)
            self._rows = selected_rows(
                cfg, self.stream, self.run_dir, ckpt is not None, self.logger.message, self.info.is_main
            )
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
            precision.refresh_rollout_copy(self.rollout_model, self.model)
        elif dropped := self.logger.truncate_after(0):  # an earlier attempt's lines: steps never go back
            self._warn(
                f"starting at step 0: dropped {dropped} lines of an earlier attempt from "
                f"{self.run_dir}'s metrics and samples"
            )

    def _warn(self, text: str) -> None:
        """A warning on the main rank's stderr, also under --quiet (it is not progress)."""
        if self.info.is_main:
            warn(text)

    # ---- setup ----
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
            raise RptError(
                f"the checkpoint was written by {state['world_size']} ranks; resume with as many "
                f"(now {self.world}) to continue the data streams exactly"
            )
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
            path = save_checkpoint(
                self.run_dir,
                self.step,
                state,
                self.model.config,
                self.tokenizer_file,
                config_to_dict(self.cfg),
                self.cfg.log.keep_last,
            )
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

    def _roll(self, rows: list[dict], spec: RolloutSpec | None = None, generator=None) -> RolloutBatch:
        """Roll out ``rows`` (no grad, on the rollout weights) and let the objective score them."""
        with torch.no_grad(), self.autocast(), D.fsdp_gathered(self.model):
            model = self.rollout_model or self.model
            batch = rollout(model, self.tokenizer, self.template, rows, spec or self.spec, generator)
        return self.objective.score(batch)

    def _update(self, batch: RolloutBatch, old_logp, ref_logp) -> dict[str, float]:
        """``num_iterations`` optimizer updates on ``batch``; the last one's metrics (``skipped``: a
        non-finite loss or gradient, whose update was dropped and ends the step's updates)."""
        loss_mask = batch.loss_mask(self.cfg.grpo.mask_truncated)  # (S, T)
        plan = plan_micro_batches(batch, loss_mask, self.mb)
        max_norm = self.cfg.optim.max_grad_norm or math.inf
        out: dict[str, float] = {}
        for _ in range(self.cfg.grpo.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            sums = backward_micro_batches(
                self.policy,
                batch,
                loss_mask=loss_mask,
                settings=self.mb,
                plan=plan,
                old_logp=old_logp,
                ref_logp=ref_logp,
            )
            totals = D.all_reduce_sum(torch.tensor(list(sums.values()), dtype=torch.float64))
            sums = dict(zip(sums, totals.tolist(), strict=True))
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2: a DTensor
            lr = self.optimizer.param_groups[0]["lr"]
            out = update_metrics(sums, self.world, norm, lr, self.ref is not None)
            if not (math.isfinite(out["loss"]) and math.isfinite(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                out["skipped"] = 1
                return out
            self._stepped = True  # from here on a mid-step interrupt has no consistent state to save
            before = [p.detach().clone() for p in precision.local_params(self.model)]
            self.optimizer.step()
            out["update_ratio"] = precision.update_ratio(self.model, before, fsdp=self.fsdp)
            self.scheduler.step()
            self.objective.after_step(self.model)
            precision.refresh_rollout_copy(self.rollout_model, self.model)
        return out

    def train_step(self) -> dict | None:
        """One GRPO step; None when some rank's data ran out (every rank then stops together)."""
        c, t0 = self.cfg, time.perf_counter()
        self._snapshot, self._stepped = self._rank_state(), False
        # rows
        rows = self._next_rows(c.sampling.batch_size)
        if D.all_reduce_sum(float(not rows)) > 0:
            return None
        # rollout, scored by the objective; dynamic sampling tops up with more contexts while it must
        batch = drawn = self._roll(rows, generator=self.generator)
        extra_draws = None
        if c.grpo.dynamic_sampling:
            sampler = DynamicSampling(c.sampling.batch_size, c.grpo.max_resample_batches, self.spec.pad_id)
            sampler.add(batch)
            while sampler.wants_more() and (more := self._next_rows(c.sampling.batch_size)):
                sampler.add(self._roll(more, generator=self.generator))
            (batch, drawn), extra_draws = sampler.result(), sampler.extra_draws
        # update: old log-probs (only several updates per batch move off-policy), reference log-probs
        args = (c.sampling.temperature, c.sampling.micro_batch_size, self.autocast)
        old = batched_logprobs(self.logprob_module, batch, *args) if c.grpo.num_iterations > 1 else None
        ref = batched_logprobs(self.ref, batch, *args) if self.ref is not None else None
        t2 = time.perf_counter()
        upd = self._update(batch, old, ref)
        t3 = time.perf_counter()
        self.step, self._snapshot, self._stepped = self.step + 1, None, False  # consistent again
        # metrics
        m = step_metrics(
            drawn,
            batch,
            self.objective,
            n_params=self.n_params,
            iterations=c.grpo.num_iterations,
            has_ref=self.ref is not None,
            seconds=(t2 - t0, t3 - t0),
            extra_draws=extra_draws,
            skipped_rows=self.skipped_rows,
            world=self.world,
        )
        self.train_flops += m["flops"]  # all ranks' compute
        m["train_flops"] = self.train_flops
        m.update(upd)
        self.bad_steps = self.bad_steps + 1 if "skipped" in upd else 0
        if self.bad_steps:
            self.logger.message(f"step {self.step}: non-finite loss or gradient, update skipped")
        if c.log.sample_every and self.step % c.log.sample_every == 0:
            self.logger.log_samples(self.step, sample_records(batch, self.tokenizer, c.log.num_samples))
        return m

    def validate(self) -> dict[str, float]:
        """Greedy mean reward, format failures and the objective's metrics (RPT: ``acc``) on the fixed
        val contexts, each a mean over every rank's completions."""
        spec, B = self._spec(greedy=True), self.cfg.sampling.batch_size
        batches = [self._roll(self.val_rows[i : i + B], spec) for i in range(0, len(self.val_rows), B)]
        return validation_metrics(batches, self.objective)

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
                raise RptError(
                    f"{self.bad_steps} steps in a row had a non-finite loss or gradient (last: "
                    f"step {self.step}); lower --lr or check the model and data"
                )
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
