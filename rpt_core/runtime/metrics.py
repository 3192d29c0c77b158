"""Training logs: ``RUN/metrics.jsonl`` (one JSON line per logged step), ``RUN/samples.jsonl`` (example
rollouts), a one-line console progress display (a ``Progress``: silent off a TTY or quiet), and optional
TensorBoard scalars.

Only rank 0 writes; on other ranks every method is a no-op. Lines are flushed as they are written so a
crash loses at most the line being written, and ``truncate_after(step)`` trims both files back to a resumed
checkpoint so a resumed run never shows the abandoned steps twice. Non-finite floats are written as null
(strict JSON readers such as polars and jq reject NaN).

Console keys (shown when present in the metrics dict): ``reward``, ``acc``, ``lr``, and ``tokens_per_s`` or
``tokens`` (tokens processed in this step; turned into a rate over the wall time between logs), as in
``train | 120/1000 steps (12%) | reward 0.412 | acc 38.5% | lr 1.0e-06 | 850 tok/s | elapsed 02:00 | ETA
14:40``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rpt_core.runtime.files import atomic_path
from rpt_core.runtime.progress import Progress

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


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None  # a line cut short by a crash
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def last_logged_step(path: Path) -> int:
    """The highest ``step`` of a JSONL log (0 when there is none or no such file)."""
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8", errors="replace") as f:
        return max((s for line in f if (s := _step_of(line)) is not None), default=0)


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


def _num(value: Any, fmt: str) -> str | None:
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class MetricsLogger:
    """``log(step, metrics)``, ``log_samples(step, samples)``, ``message(text)``, ``truncate_after(step)``,
    ``close()``; ``desc`` names the console line (``train``, ``pretrain``)."""

    def __init__(
        self,
        run_dir: Path,
        quiet: bool = False,
        tensorboard: bool = False,
        rank: int = 0,
        max_steps: int | None = None,
        stream: TextIO | None = None,
        desc: str = "train",
    ):
        self.run_dir = Path(run_dir)
        self.enabled = rank == 0
        self.progress = Progress(
            max_steps,
            unit="steps",
            desc=desc,
            quiet=quiet or not self.enabled,
            stream=stream,
            min_interval=0.0,
        )
        self._files: dict[str, TextIO] = {}
        self._last_time = self.progress.start
        self._logged = False
        self.writer = None
        if self.enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self.writer = self._tensorboard_writer()

    def _tensorboard_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "warning: tensorboard is not installed; TensorBoard logging is off "
                "(pip install tensorboard to enable it)",
                file=sys.stderr,
            )
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
        if not self._logged:
            # A resumed run's ETA counts only this run's steps; the first one took the time since __init__.
            self.progress.start_from(step - 1)
            self._logged = True
        rate = values.get("tokens_per_s")
        if rate is None and isinstance(values.get("tokens"), (int, float)):
            rate = values["tokens"] / max(now - self._last_time, 1e-9)
        self._last_time = now
        self.progress.set_postfix(
            reward=_num(values.get("reward"), "{:.3f}"),
            acc=_num(values.get("acc"), "{:.1%}"),
            lr=_num(values.get("lr"), "{:.1e}"),
        )
        self.progress.set_rate("tok", rate if isinstance(rate, (int, float)) else None)
        self.progress.update(step - self.progress.n)

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
        if self.enabled:
            self.progress.message(text)

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
        if self._logged:  # nothing logged: no line to end (a "0/N steps" line would mislead after a resume)
            self.progress.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
