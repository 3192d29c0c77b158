"""Training checkpoints: an HF-loadable model directory plus everything needed to resume the run exactly.

Layout::

    RUN/checkpoints/step-000123/config.json         model config (Hugging Face format)
                               model.safetensors     weights (rpt_train.model.checkpoint.save_pretrained)
                               tokenizer.json        copied from the run's tokenizer (+ tokenizer_config.json)
                               run_config.json       the resolved run configuration
                               trainer_state.pt      torch.save(trainer_state): optimizer, scheduler, step,
                                                     RNG states, data-stream position ...
    RUN/checkpoints/latest                          text: name of the newest complete step directory

Each step directory is built in a temp directory and renamed into place, and ``latest`` is replaced
atomically after it, so a crash mid-save leaves the previous checkpoint intact and nothing half-written
under a final name. The model half is written by ``rpt_train.model.checkpoint`` (not duplicated here).
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from rpt_train.errors import RptError
from rpt_train.io import atomic_dir, write_json_atomic, write_text_atomic
from rpt_train.model.checkpoint import save_pretrained

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"
RUN_CONFIG = "run_config.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


class _FullState:
    """Stands in for a model in ``save_pretrained`` when the weights come as a gathered full state dict."""

    def __init__(self, config: Any, state: dict[str, torch.Tensor]):
        self.config, self._state = config, state
        self.dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer_file: Path | None,
    trainer_state: dict,
    run_config: dict,
    keep_last: int = 3,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step-{step:06d}/`` atomically, point ``latest`` at it, prune old ones.

    ``model`` is the bare ``Qwen3ForCausalLM`` (``rpt_train.distributed.unwrap``). Under FSDP2 pass the
    full weights from ``rpt_train.distributed.gather_full_state`` as ``model_state`` (the module then only
    supplies its config). ``keep_last <= 0`` keeps every checkpoint. Call on the main rank only.
    """
    root = Path(run_dir) / CHECKPOINTS
    name = step_dir_name(step)
    with atomic_dir(root / name) as tmp:
        save_pretrained(_FullState(model.config, model_state) if model_state is not None else model, tmp)
        if tokenizer_file is not None:
            tokenizer_file = Path(tokenizer_file)
            if not tokenizer_file.is_file():
                raise RptError(f"tokenizer file not found: {tokenizer_file}")
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            sidecar = tokenizer_file.with_name("tokenizer_config.json")
            if sidecar.is_file():  # lets transformers' AutoTokenizer open the checkpoint directly
                shutil.copyfile(sidecar, tmp / "tokenizer_config.json")
        write_json_atomic(tmp / RUN_CONFIG, run_config)
        torch.save(trainer_state, tmp / TRAINER_STATE)
    write_text_atomic(root / LATEST, name + "\n")
    if keep_last > 0:
        for old in _step_dirs(root)[:-keep_last]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return root / name


def _step_dirs(root: Path) -> list[Path]:
    """Complete step directories (temp dirs are dot-prefixed and never match), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory named in ``latest``, else the highest complete step directory, else None."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text(encoding="utf-8").strip()
        if _STEP_DIR.match(candidate.name) and (candidate / TRAINER_STATE).is_file():
            return candidate
    dirs = _step_dirs(root)
    return dirs[-1] if dirs else None


def load_trainer_state(ckpt_dir: Path, map_location: Any = "cpu") -> dict:
    """The ``trainer_state`` dict saved with the checkpoint (loaded with ``weights_only=True``).

    Keep trainer states to tensors, numbers, strings, lists, tuples and dicts so this safe loader reads them.
    """
    path = Path(ckpt_dir) / TRAINER_STATE
    if not path.is_file():
        raise RptError(f"{ckpt_dir}: not a training checkpoint (no {TRAINER_STATE})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RptError(f"{path}: cannot read the trainer state ({first_line})") from None


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
