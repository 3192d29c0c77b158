"""Training logs: ``RUN/metrics.jsonl`` (one JSON line per logged step), ``RUN/samples.jsonl`` (example
rollouts), a one-line console progress display, and optional TensorBoard scalars.

Only rank 0 writes; on other ranks every method is a no-op. Lines are flushed as they are written so a
crash loses at most the line being written, and ``truncate_after(step)`` trims both files back to a resumed
checkpoint so a resumed run never shows the abandoned steps twice. Non-finite floats are written as null
(strict JSON readers such as polars and jq reject NaN).

Console keys (shown when present in the metrics dict): ``reward``, ``acc``, ``lr``, and ``tokens_per_s`` or
``tokens`` (tokens processed in this step; turned into a rate over the wall time between logs).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rpt_train.io import atomic_path
from rpt_train.progress import _fmt_seconds

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
TENSORBOARD_DIR = "tensorboard"
PROMPT_TAIL_CHARS = 400  # samples keep the end of the prompt: the part the completion continues


def to_jsonable(value: Any) -> Any:
    """Tensors and NumPy scalars to Python numbers, non-finite floats to None, containers recursively."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    elif hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def prompt_tail(text: str, chars: int = PROMPT_TAIL_CHARS) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]


def format_progress(step: int, max_steps: int | None, metrics: dict, elapsed: float, steps_done: int,
                    tokens_per_s: float | None) -> str:  # fmt: skip
    """The console line: ``step 120/1000 (12%) | reward 0.412 | acc 38.5% | lr 1.0e-06 | 850 tok/s | ETA``."""
    parts = [f"step {step}/{max_steps} ({100.0 * step / max_steps:.0f}%)" if max_steps else f"step {step}"]
    if isinstance(metrics.get("reward"), (int, float)):
        parts.append(f"reward {metrics['reward']:.3f}")
    if isinstance(metrics.get("acc"), (int, float)):
        parts.append(f"acc {100.0 * metrics['acc']:.1f}%")
    if isinstance(metrics.get("lr"), (int, float)):
        parts.append(f"lr {metrics['lr']:.1e}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    parts.append(f"elapsed {_fmt_seconds(elapsed)}")
    if max_steps and steps_done > 0:
        parts.append(f"ETA {_fmt_seconds((max_steps - step) * elapsed / steps_done)}")
    return " | ".join(parts)


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None  # a line cut short by a crash
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def truncate_jsonl(path: Path, step: int) -> int:
    """Keep lines whose ``step`` is <= ``step``; return how many lines were dropped (rewrite is atomic)."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if (s := _step_of(ln)) is not None and s <= step]
    if len(kept) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    return len(lines) - len(kept)


class MetricsLogger:
    """``log(step, metrics)``, ``log_samples(step, samples)``, ``truncate_after(step)``, ``close()``."""

    def __init__(self, run_dir: Path, quiet: bool = False, tensorboard: bool = False, rank: int = 0,
                 max_steps: int | None = None, stream: TextIO | None = None):  # fmt: skip
        self.run_dir = Path(run_dir)
        self.enabled = rank == 0
        self.quiet = quiet
        self.max_steps = max_steps
        self.stream = stream or sys.stderr
        self.console = self.enabled and not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._files: dict[str, TextIO] = {}
        self._start = self._last_time = time.perf_counter()
        self._first_step: int | None = None
        self._shown = False
        self.writer = None
        if self.enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self.writer = self._tensorboard_writer()

    def _tensorboard_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("warning: tensorboard is not installed; TensorBoard logging is off "
                  "(pip install tensorboard to enable it)", file=sys.stderr)  # fmt: skip
            return None
        return SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))

    def _append(self, name: str, record: dict) -> None:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self.run_dir / name, "a", encoding="utf-8")
        f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        values = {k: to_jsonable(v) for k, v in metrics.items()}
        self._append(METRICS_FILE, {"step": step, "time": round(time.time(), 3), **values})
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, step)
        if self._first_step is None:
            self._first_step = step - 1  # the first logged step counts as one step of elapsed time
        if self.console:
            rate = values.get("tokens_per_s")
            if rate is None and isinstance(values.get("tokens"), (int, float)):
                rate = values["tokens"] / max(now - self._last_time, 1e-9)
            line = format_progress(
                step, self.max_steps, values, now - self._start, step - self._first_step, rate
            )
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self._shown = True
        self._last_time = now

    def log_samples(self, step: int, samples: list[dict]) -> None:
        """One line per sample; a long ``prompt`` is cut to its tail."""
        if not self.enabled:
            return
        for sample in samples:
            record = {"step": step, **{k: to_jsonable(v) for k, v in sample.items()}}
            if isinstance(record.get("prompt"), str):
                record["prompt"] = prompt_tail(record["prompt"])
            self._append(SAMPLES_FILE, record)

    def message(self, text: str) -> None:
        """A one-off line (checkpoint saved, eval result) that does not garble the progress line."""
        if not self.enabled or self.quiet:
            return
        if self.console and self._shown:
            self.stream.write("\r\033[K")
        print(text, file=self.stream, flush=True)

    def truncate_after(self, step: int) -> int:
        """On resume from ``step``: drop metric and sample lines of later steps (and any torn line)."""
        if not self.enabled:
            return 0
        for f in self._files.values():
            f.close()
        self._files.clear()
        return sum(truncate_jsonl(self.run_dir / name, step) for name in (METRICS_FILE, SAMPLES_FILE))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.console and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
