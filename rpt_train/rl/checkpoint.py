"""Training checkpoints: one trainer state dict on disk, as an HF-loadable model directory plus the rest.

The trainer's ``state_dict()`` (torchtitan style: model, optimizer, scheduler, step, data position, RNGs,
the objective's own state) is the unit. ``save_checkpoint`` splits it: the ``model`` entry becomes a
Hugging Face model directory (``rpt_core.model.hf_io``), everything else ``trainer_state.pt``.
``load_checkpoint`` puts the same dict back together. Layout::

    RUN/checkpoints/step-000123/config.json         model config (Hugging Face format)
                               model.safetensors     weights
                               tokenizer.json        copied from the run's tokenizer (+ tokenizer_config.json,
                                                     chat_template.jinja, special_tokens_map.json if present)
                               run_config.json       the resolved run configuration
                               trainer_state.pt      the state dict less its model
    RUN/checkpoints/latest                          text: name of the newest complete step directory

Each step directory is built in a temp directory and renamed into place, and ``latest`` is replaced
atomically after it, so a crash mid-save leaves the previous checkpoint intact and nothing half-written
under a final name. A write that fails (a full disk: torch reports it as a ``RuntimeError ... unexpected
pos``, safetensors as its own error) is one ``RptError`` line naming the file. ``checkpoint_steps`` is the
one listing of a run's checkpoints (the evaluator uses it).
"""

from __future__ import annotations

import contextlib
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from rpt_core.model import hf_io
from rpt_core.model.config import Qwen3Config
from rpt_core.runtime.errors import RptError, first_line
from rpt_core.runtime.files import atomic_dir, write_json_atomic, write_text_atomic
from rpt_core.text.chat_template import SIDECAR_FILES

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"
RUN_CONFIG = "run_config.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write of ``path`` (a full disk, a quota, an I/O error) as one line naming it."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as e:
        why = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[-1]
        if "unexpected pos" in why:  # torch's stream writer says only this when a write came up short
            why = f"{why.split('] . ')[-1]}: a short write, most likely a full disk"
        raise RptError(f"{path}: cannot write the checkpoint ({why}); the previous one is kept") from None


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    model_config: Qwen3Config,
    tokenizer_file: Path | None,
    run_config: dict,
    keep_last: int = 3,
) -> Path:
    """Write ``RUN/checkpoints/step-{step:06d}/`` atomically, point ``latest`` at it, prune old ones.

    ``state["model"]`` is the full model state dict (under FSDP2, gathered with
    ``rpt_core.runtime.distributed.gather_full_state``). ``keep_last <= 0`` keeps every checkpoint. Call on
    the main rank only.
    """
    root = Path(run_dir) / CHECKPOINTS
    name = step_dir_name(step)
    rest = {k: v for k, v in state.items() if k != "model"}
    final = root / name
    with _writing(final), atomic_dir(final) as tmp:
        with _writing(final / hf_io.WEIGHTS_NAME):
            hf_io.save_pretrained(state["model"], model_config, tmp)
        if tokenizer_file is not None:
            tokenizer_file = Path(tokenizer_file)
            if not tokenizer_file.is_file():
                raise RptError(f"tokenizer file not found: {tokenizer_file}")
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            # The chat template and special tokens travel with the weights (the evaluator renders the
            # checkpoint's own template), and transformers' AutoTokenizer opens the checkpoint directly.
            for sidecar_name in SIDECAR_FILES:
                sidecar = tokenizer_file.with_name(sidecar_name)
                if sidecar.is_file():
                    shutil.copyfile(sidecar, tmp / sidecar_name)
        write_json_atomic(tmp / RUN_CONFIG, run_config)
        with _writing(final / TRAINER_STATE):
            torch.save(rest, tmp / TRAINER_STATE)
    with _writing(root / LATEST):
        write_text_atomic(root / LATEST, name + "\n")
    if keep_last > 0:
        for _, old in checkpoint_steps(run_dir)[:-keep_last]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return root / name


def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint of a run, oldest first.

    Temp directories are dot-prefixed and never match; a directory without ``trainer_state.pt`` is not
    complete.
    """
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [(s, p) for s, p in sorted(found) if (p / TRAINER_STATE).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory named in ``latest``, else the highest complete step directory, else None."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text(encoding="utf-8").strip()
        if _STEP_DIR.match(candidate.name) and (candidate / TRAINER_STATE).is_file():
            return candidate
    steps = checkpoint_steps(run_dir)
    return steps[-1][1] if steps else None


def load_trainer_state(ckpt_dir: Path, map_location: Any = "cpu") -> dict:
    """The state dict saved with the checkpoint, less its model (loaded with ``weights_only=True``).

    Keep trainer states to tensors, numbers, strings, lists, tuples and dicts so this safe loader reads them.
    """
    path = Path(ckpt_dir) / TRAINER_STATE
    if not path.is_file():
        raise RptError(f"{ckpt_dir}: not a training checkpoint (no {TRAINER_STATE})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise RptError(f"{path}: cannot read the trainer state ({first_line(e)})") from None


def run_flops(run_dir: str | Path) -> float:
    """The training compute an ``rpt-train run`` recorded in its latest checkpoint (``--match-flops``)."""
    ckpt = latest_checkpoint(Path(run_dir))
    if ckpt is None:
        raise RptError(f"--match-flops {run_dir}: no checkpoint to read the run's compute from")
    flops = load_trainer_state(ckpt).get("train_flops")
    if not flops:
        raise RptError(f"--match-flops {run_dir}: {ckpt} records no training compute (train_flops)")
    return float(flops)


def load_checkpoint(ckpt_dir: Path, dtype: torch.dtype | None = None, device: Any = "cpu") -> dict:
    """The whole state dict ``save_checkpoint`` wrote: the trainer state plus ``model`` (on ``device``)."""
    state = load_trainer_state(ckpt_dir)
    config = hf_io.read_config(Path(ckpt_dir))
    state["model"] = hf_io.load_state(Path(ckpt_dir), config, dtype, torch.device(device))
    return state


# ---- RNG ----
def rng_state() -> dict:
    """Python, NumPy (when installed), torch CPU and every CUDA generator, as plain picklable values."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss))
    except ImportError:
        pass
    return state


def set_rng_state(d: dict) -> None:
    """Restore what ``rng_state`` captured; generators absent from ``d`` (or from this machine) are left."""
    if "python" in d:
        version, internal, gauss = d["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in d:
        torch.set_rng_state(d["torch"].cpu())
    if "cuda" in d and torch.cuda.is_available():
        states = d["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(states):
            torch.cuda.set_rng_state(s.cpu(), i)
    if "numpy" in d:
        try:
            import numpy as np

            kind, keys, pos, has_gauss, gauss = d["numpy"]
            np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        except ImportError:
            pass
