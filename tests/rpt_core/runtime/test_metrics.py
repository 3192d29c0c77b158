"""MetricsLogger: JSONL lines, rank gating, console line (a Progress), TensorBoard fallback, truncation on
resume."""

from __future__ import annotations

import io
import json
import math
import time
import types

import numpy as np
import pytest
import torch

from rpt_core.runtime import metrics as metrics_module
from rpt_core.runtime import progress as progress_module
from rpt_core.runtime.metrics import MetricsLogger, prompt_tail, to_jsonable, truncate_jsonl


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_log_writes_one_flushed_line_per_step(tmp_path):
    log = MetricsLogger(tmp_path, quiet=True)
    log.log(1, {"reward": torch.tensor(0.5), "acc": np.float32(0.25), "lr": 1e-6, "loss": float("nan")})
    # Flushed immediately: readable before close.
    rows = _lines(tmp_path / "metrics.jsonl")
    assert rows[0]["step"] == 1 and rows[0]["reward"] == 0.5 and rows[0]["acc"] == 0.25
    assert rows[0]["loss"] is None and rows[0]["lr"] == 1e-6 and "time" in rows[0]
    log.log(2, {"reward": 0.75, "hist": torch.tensor([1, 2])})
    log.close()
    rows = _lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["hist"] == [1, 2]


def test_other_ranks_write_nothing(tmp_path):
    log = MetricsLogger(tmp_path / "run", rank=1)
    log.log(1, {"reward": 1.0})
    log.log_samples(1, [{"prompt": "p"}])
    assert log.truncate_after(0) == 0
    log.close()
    assert not (tmp_path / "run").exists()


def test_samples_keep_prompt_tail(tmp_path):
    with MetricsLogger(tmp_path, quiet=True) as log:
        samples = [
            {"prompt": "x" * 1000 + "END", "completion": "c", "prediction": "p", "reward": 1.0},
            {"prompt": "short", "completion": "d", "prediction": None, "reward": 0.0},
        ]
        log.log_samples(3, samples)
    rows = _lines(tmp_path / "samples.jsonl")
    assert len(rows) == 2 and rows[0]["step"] == 3
    assert rows[0]["prompt"].endswith("END") and len(rows[0]["prompt"]) == 401
    assert rows[1]["prompt"] == "short" and rows[1]["prediction"] is None


def test_truncate_after_resume(tmp_path):
    with MetricsLogger(tmp_path, quiet=True) as log:
        for step in range(1, 7):
            log.log(step, {"reward": step / 10})
            log.log_samples(step, [{"completion": str(step)}])
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "rew')  # torn line from a crash
    log = MetricsLogger(tmp_path, quiet=True)
    assert log.truncate_after(4) == 3 + 2
    log.log(5, {"reward": 0.0})
    log.close()
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in _lines(tmp_path / "samples.jsonl")] == [1, 2, 3, 4]
    assert truncate_jsonl(tmp_path / "missing.jsonl", 3) == 0


def test_truncate_after_closes_open_files(tmp_path):
    log = MetricsLogger(tmp_path, quiet=True)
    for step in range(1, 4):
        log.log(step, {"a": step})
    log.truncate_after(1)
    log.log(2, {"a": 20})
    log.close()
    assert [(r["step"], r["a"]) for r in _lines(tmp_path / "metrics.jsonl")] == [(1, 1), (2, 20)]


def test_console_line_only_on_tty_and_not_quiet(tmp_path):
    tty = _Tty()
    log = MetricsLogger(tmp_path, max_steps=10, stream=tty)
    log.log(1, {"reward": 0.5, "acc": 0.25, "lr": 3e-6, "tokens_per_s": 1234.0, "loss": 0.1})
    log.message("saved checkpoint")
    log.close()
    out = tty.getvalue()
    assert "train | 1/10 steps (10%) | reward 0.500 | acc 25.0% | lr 3.0e-06 | 1,234 tok/s | elapsed" in out
    assert "ETA" in out and "saved checkpoint\n" in out and out.endswith("\n")
    for stream, quiet in ((io.StringIO(), False), (_Tty(), True)):
        with MetricsLogger(tmp_path, quiet=quiet, stream=stream) as log:
            log.log(1, {"reward": 0.5})
        assert stream.getvalue() == ""


@pytest.fixture
def now(monkeypatch):
    """Seconds on a fake ``time.perf_counter`` of the logger and its Progress: set ``now[0]``."""
    clock = [0.0]
    fake = types.SimpleNamespace(perf_counter=lambda: clock[0], time=time.time)
    monkeypatch.setattr(metrics_module, "time", fake)
    monkeypatch.setattr(progress_module, "time", fake)
    return clock


def test_console_eta_after_resume_counts_only_this_runs_steps(tmp_path, now):
    tty = _Tty()
    log = MetricsLogger(tmp_path, max_steps=100, stream=tty)
    now[0] = 10.0
    log.log(41, {})  # resumed at step 40: one step in 10 s, 59 to go
    assert tty.getvalue().endswith("41/100 steps (41%) | elapsed 00:10 | ETA 09:50")


def test_tokens_become_a_rate_over_the_time_between_logs(tmp_path, now):
    tty = _Tty()
    log = MetricsLogger(tmp_path, max_steps=10, stream=tty)
    now[0] = 2.0
    log.log(1, {"tokens": 1000})
    now[0] = 2.5
    log.log(2, {"tokens": 1000})
    first, second = tty.getvalue().split("\r\033[K")[1:]
    assert "| 500 tok/s |" in first and "| 2,000 tok/s |" in second


def test_nothing_logged_ends_no_line(tmp_path):
    tty = _Tty()
    log = MetricsLogger(tmp_path, max_steps=10, stream=tty)
    log.close()
    log.message("stopped")
    assert tty.getvalue() == "stopped\n"


def test_tensorboard_missing_is_a_warning(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with MetricsLogger(tmp_path, quiet=True, tensorboard=True) as log:
        log.log(1, {"reward": 1.0})
    err = capsys.readouterr().err
    assert "tensorboard is not installed" in err and len(err.strip().splitlines()) == 1
    assert log.writer is None and _lines(tmp_path / "metrics.jsonl")[0]["reward"] == 1.0


def test_to_jsonable_and_prompt_tail():
    assert to_jsonable({"a": np.int64(3), "b": (1.5, math.inf), "c": b"\xff", 4: object}) == {
        "a": 3,
        "b": [1.5, None],
        "c": "\ufffd",
        "4": str(object),
    }
    assert prompt_tail("abc", 5) == "abc" and prompt_tail("abcdef", 2) == "…ef"


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_non_finite_never_breaks_json(tmp_path, bad):
    with MetricsLogger(tmp_path, quiet=True) as log:
        log.log(1, {"x": bad, "y": torch.tensor(bad)})
    assert _lines(tmp_path / "metrics.jsonl")[0] == {
        **_lines(tmp_path / "metrics.jsonl")[0],
        "x": None,
        "y": None,
    }
