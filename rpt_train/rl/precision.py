"""The trainer's precision machinery: when forwards run under bfloat16 autocast (``--bf16``,
``--cpu-autocast``), when decoder layers are recomputed in backward (``--gradient-checkpointing``), the
bfloat16 copy of the weights that rollouts may run on (``--rollout-weights``), and the update-to-weight
ratio every step logs.

A captured (``--compile-decode``, CUDA graphs) decode step under autocast re-casts every float32 weight to
bfloat16 at each replay: ~3x the weight traffic of a bfloat16 decode step. A bfloat16 copy refreshed
after each optimizer step costs 2 bytes per parameter (1.2 GB for Qwen3-0.6B) and removes the casts.

``update_ratio`` = ||w_after - w_before|| / ||w_before|| of one optimizer step: 0 says the weights did not
move (bfloat16 parameters at an lr below their rounding, an lr of 0), which a loss curve alone hides.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.runtime import distributed as D
from rpt_core.runtime.errors import RptError


def bf16_compute(cfg, device: torch.device) -> bool:
    """bfloat16 compute over the weights: ``--bf16`` on CUDA; on a CPU only with ``--cpu-autocast``."""
    return cfg.runtime.bf16 and (device.type == "cuda" or cfg.runtime.cpu_autocast)


def autocast_factory(
    cfg, device: torch.device, fsdp: bool
) -> Callable[[], contextlib.AbstractContextManager]:
    """What each forward enters: bfloat16 autocast, or nothing (float32, or FSDP2 whose ``param_dtype``
    casts the weights itself)."""
    if bf16_compute(cfg, device) and not fsdp:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def gradient_checkpointing(cfg, device: torch.device) -> bool:
    """``--gradient-checkpointing auto``: on CUDA, where real lengths need it (benchmarks/GPU.md)."""
    return cfg.runtime.gradient_checkpointing == "on" or (
        cfg.runtime.gradient_checkpointing == "auto" and device.type == "cuda"
    )


def rollout_copy(model: Qwen3ForCausalLM, cfg, bf16: bool, fsdp: bool) -> Qwen3ForCausalLM | None:
    """The bfloat16 copy rollouts run on, or None for the policy itself.

    ``cfg.runtime.rollout_weights``: policy, bf16-copy, or auto (the copy with ``compile_decode`` under bf16
    autocast over float32 weights, without FSDP2, whose ranks hold shards only).
    """
    mode = cfg.runtime.rollout_weights
    if mode == "auto":
        wanted = cfg.runtime.compile_decode and bf16 and not fsdp
        mode = "bf16-copy" if wanted and model.dtype == torch.float32 else "policy"
    if mode == "policy":
        return None
    if fsdp:
        raise RptError("--rollout-weights bf16-copy keeps whole weights on every rank; not with --fsdp")
    with torch.device("meta"):
        copy = Qwen3ForCausalLM(model.config)
    state = {k: v.detach().to(torch.bfloat16, copy=True) for k, v in model.state_dict().items()}
    copy.load_state_dict(state, assign=True)
    copy.tie_weights()
    return copy.eval().requires_grad_(False)


@torch.no_grad()
def refresh_rollout_copy(copy: Qwen3ForCausalLM | None, model: torch.nn.Module) -> None:
    """After an optimizer step (or a resume): the rollout copy takes the policy's weights."""
    if copy is not None:
        for c, p in zip(copy.parameters(), model.parameters(), strict=True):
            c.copy_(p)


def local_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """This rank's trained parameters (its shards under FSDP2)."""
    ps = [p for p in model.parameters() if p.requires_grad]
    return [p.to_local() if hasattr(p, "to_local") else p for p in ps]


def update_ratio(model: torch.nn.Module, before: list[torch.Tensor], fsdp: bool = False) -> float:
    """||w_after - w_before|| / ||w_before|| over all parameters (``before``: ``local_params`` copied
    before the step); under FSDP2 the squares are summed over the ranks' shards."""
    after = local_params(model)
    diff = sum(
        float((a.detach().float() - b.float()).norm()) ** 2 for a, b in zip(after, before, strict=True)
    )
    norm = sum(float(b.float().norm()) ** 2 for b in before)
    if fsdp:
        diff, norm = D.all_reduce_sum(diff), D.all_reduce_sum(norm)
    return math.sqrt(diff / max(norm, 1e-30))
