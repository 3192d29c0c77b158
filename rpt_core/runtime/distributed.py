"""Process-group setup and data-parallel wrapping for the trainer (torchrun env; no-op in one process).

The model code knows nothing about parallelism: the trainer calls ``init_distributed`` once, wraps the bare
``Qwen3ForCausalLM`` with ``wrap_ddp`` or ``wrap_fsdp2``, and reaches the bare module again through
``unwrap`` (for generation, saving, or reading the config). Every collective here is a no-op returning its
input when no process group is running, so single-process code paths need no branches.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from rpt_core.runtime.errors import RptError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800  # rollouts of long completions can keep ranks apart for minutes between collectives


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise RptError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


def _device(requested: str | None, local_rank: int) -> torch.device:
    """The requested device (``cuda`` alone means this rank's GPU), else this rank's GPU, else the CPU."""
    cuda = torch.cuda.is_available()
    if requested is None:
        return torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as e:
        raise RptError(f"invalid --device {requested!r} ({e})") from None
    if device.type == "cuda" and not cuda:
        raise RptError(f"--device {requested}: CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(
    device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, backend: str | None = None
) -> DistInfo:
    """This process's rank, world size and device; joins the torchrun process group when there is one
    (nccl on CUDA, gloo on CPU). The one entry point of ``rpt-data build`` and ``rpt-train run``.

    ``device`` overrides the default (this rank's GPU when CUDA is present, else the CPU). Idempotent: a
    second call returns the same description without re-initialising.
    """
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world_size = (_env_int("RANK"), _env_int("WORLD_SIZE")) if launched else (0, 1)
    local_rank = _env_int("LOCAL_RANK") if launched and "LOCAL_RANK" in os.environ else rank
    if device is None and torch.cuda.is_available() and local_rank >= torch.cuda.device_count():
        raise RptError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices visible")
    dev = _device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if launched and world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=backend or ("nccl" if dev.type == "cuda" else "gloo"),
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,  # binds NCCL to this GPU eagerly
        )
    return DistInfo(rank, world_size, local_rank, dev, rank == 0)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def _all_reduce(x: T, mean: bool) -> T:
    if not is_initialized():
        return x
    t = x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)
    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    if mean:
        buf = buf / dist.get_world_size()
    if isinstance(x, torch.Tensor):
        return buf.to(x.device, x.dtype if not mean or x.is_floating_point() else torch.float32)
    return float(buf.item())


def all_reduce_mean(x: T) -> T:
    """Mean over ranks of a tensor (returned on its own device) or a float (returned as float)."""
    return _all_reduce(x, mean=True)


def all_reduce_sum(x: T) -> T:
    """Sum over ranks (token counts, correct answers) of a tensor or a number (returned as float)."""
    return _all_reduce(x, mean=False)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (picklable objects: configs, paths, resume states)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def on_main_rank(fn: Callable[[], T]) -> T | None:
    """Call ``fn`` on rank 0 only and return its result on every rank. An ``RptError`` it raises is raised
    on every rank, so no rank waits at a later collective for one that stopped (locks, input checks)."""
    if not is_initialized():
        return fn()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except RptError as e:
            error = str(e)
    result, error = broadcast_object((result, error))
    if error is not None:
        raise RptError(error)
    return result


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


# ---- model wrapping ----
def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``info.device``); unchanged in one process."""
    if not is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def wrap_fsdp2(
    model: nn.Module,
    info: DistInfo,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """FSDP2: ``fully_shard`` each decoder layer, then the root (embeddings, final norm, lm_head).

    ``param_dtype`` (e.g. bf16) is the compute dtype; gradients are reduced in ``reduce_dtype``. The model
    is sharded in place and returned. ``hidden_states`` and ``logits`` are registered as forward methods so
    callers that skip ``forward`` (rollouts, chunked log-probs) still gather the root's parameters. Build
    the optimizer after this call. Unchanged in one process.
    """
    if not is_initialized():
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    bare = unwrap(model)
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for layer in bare.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(bare, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    if param_dtype is not None and hasattr(bare, "compute_dtype"):
        bare.compute_dtype = param_dtype  # what forward runs in (rollouts size their KV cache by it)
    for method in ("hidden_states", "logits"):
        if hasattr(bare, method):
            register_fsdp_forward_method(bare, method)
    return bare


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under torch.compile (``_orig_mod``) and DDP (``.module``); FSDP2 shards in place."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, DistributedDataParallel):
            model = model.module
        else:
            return model


@contextlib.contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """Skip the gradient reduction for all but the last micro-batch of an accumulation (DDP or FSDP2)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    inner = model._orig_mod if hasattr(model, "_orig_mod") else model
    if isinstance(inner, DistributedDataParallel):
        with inner.no_sync():
            yield
    elif isinstance(inner, FSDPModule):
        inner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)
    else:
        yield


# ---- full (unsharded) state for checkpoints ----
def gather_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Full (unsharded) CPU state dicts of the model and optimizer, for any wrapping.

    A collective under FSDP2: call it on every rank; rank 0 receives the full dicts, the other ranks may
    receive empty ones. The optimizer state is keyed by parameter name (not index), so a checkpoint saved
    under FSDP2 resumes under DDP or in one process and vice versa. Unsharded tensors (everything without
    FSDP2 on CPU; the optimizer's ``step`` counters even under FSDP2) alias the live state, as
    ``state_dict()`` does: write the dicts out before the next optimizer step, or deep-copy them.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    bare = unwrap(model)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(bare, options=opts)
    optim_sd = get_optimizer_state_dict(bare, optimizer, options=opts) if optimizer is not None else None
    return model_sd, optim_sd


def load_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, model_sd: dict | None, optim_sd: dict | None
) -> None:
    """Inverse of ``gather_full_state``; pass ``None`` (or, outside FSDP2, ``{}``) to skip a part.

    Under FSDP2 this is a collective: rank 0's dicts are broadcast and sharded, so the other ranks may pass
    the empty dicts ``gather_full_state`` gave them (but not ``None`` unless rank 0 does too). Otherwise
    each rank loads its own dicts, which must then be full on every rank (e.g. read from the checkpoint).
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    bare = unwrap(model)
    if is_initialized() and _is_fsdp2(bare):
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        if model_sd is not None:
            set_model_state_dict(bare, model_sd, options=opts)
        if optimizer is not None and optim_sd is not None:
            set_optimizer_state_dict(bare, optimizer, optim_sd, options=opts)
        return
    opts = StateDictOptions(full_state_dict=True)
    if model_sd:
        set_model_state_dict(bare, model_sd, options=opts)
    if optimizer is not None and optim_sd:
        set_optimizer_state_dict(bare, optimizer, optim_sd, options=opts)


def _is_fsdp2(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_max(x: float) -> float:
    if not is_initialized():
        return x
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(float(x), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Every value averaged over ranks, except ``*_max`` keys (maximum): two collectives in all."""
    keys = sorted(metrics)
    means = all_reduce_mean(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64))
    out = {k: float(v) for k, v in zip(keys, means, strict=True)}
    out.update({k: all_reduce_max(metrics[k]) for k in keys if k.endswith("_max")})
    return out


@contextlib.contextmanager
def fsdp_gathered(model: torch.nn.Module):
    """Under FSDP2 keep parameters unsharded through a rollout (else every decode step all-gathers)."""
    from torch.distributed.fsdp import FSDPModule

    mods = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)  # the root stays gathered: see below
