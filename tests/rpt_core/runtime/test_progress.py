"""Progress: the one console line (count, named values, rate, ETA) on a TTY, and silence elsewhere."""

from __future__ import annotations

import io
import types

import pytest

from rpt_core.runtime import progress as progress_module
from rpt_core.runtime.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """Seconds on a fake ``time.perf_counter``: set ``clock[0]``."""
    now = [0.0]
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_tty_line_shows_count_values_rate_and_eta(clock):
    tty = _Tty()
    p = Progress(100, unit="steps", desc="pretrain", stream=tty, min_interval=0)
    clock[0] = 100.0
    p.set_postfix(loss=2.31, acc="38.5%", skipped=None)
    p.update(50, tok=5000)
    assert tty.getvalue() == (
        "\r\033[Kpretrain | 50/100 steps (50%) | loss 2.31 | acc 38.5% | 50 tok/s | elapsed 01:40 | ETA 01:40"
    )


@pytest.mark.parametrize("stream, quiet", [(io.StringIO(), False), (_Tty(), True)], ids=["not-tty", "quiet"])
def test_nothing_written_off_a_tty_or_when_quiet(stream, quiet):
    with Progress(10, stream=stream, quiet=quiet, min_interval=0) as p:
        p.set_postfix(loss=1.0)
        p.update(5, tok=10)
    assert stream.getvalue() == ""


def test_message_keeps_the_line_whole():
    tty = _Tty()
    p = Progress(4, unit="steps", stream=tty, min_interval=0)
    p.update(1)
    p.message("checkpoint saved")
    out = tty.getvalue()
    assert out.startswith("\r\033[K1/4 steps (25%)")
    assert "\r\033[Kcheckpoint saved\n\r\033[K1/4 steps (25%)" in out  # line cleared, message, line redrawn


def test_message_off_a_tty_is_a_plain_line_and_quiet_drops_it():
    plain, quiet = io.StringIO(), _Tty()
    Progress(4, stream=plain).message("done")
    Progress(4, stream=quiet, quiet=True).message("done")
    assert (plain.getvalue(), quiet.getvalue()) == ("done\n", "")


def test_start_from_places_the_line_but_eta_counts_only_this_run(clock):
    tty = _Tty()
    p = Progress(100, unit="steps", stream=tty, min_interval=0)
    p.start_from(40)  # e.g. resumed at step 40
    clock[0] = 10.0
    p.update(10)
    assert "50/100 steps (50%)" in tty.getvalue() and tty.getvalue().endswith("ETA 00:50")


def test_set_rate_replaces_the_average_and_none_removes_it(clock):
    tty = _Tty()
    p = Progress(None, stream=tty, min_interval=0)
    clock[0] = 10.0
    p.set_rate("tok", 1234.0)
    p.update(1, tok=100)
    p.set_rate("tok", None)
    p.update(1, tok=100)
    first, second = tty.getvalue().split("\r\033[K")[1:]
    assert "1,234 tok/s" in first and "20 tok/s" in second


def test_callable_values_are_read_only_when_drawn():
    calls = []

    def loss() -> str:
        calls.append(1)
        return "2.000"

    tty = _Tty()
    p = Progress(3, stream=tty, min_interval=3600)  # updates within the interval draw nothing
    for _ in range(3):
        p.set_postfix(loss=loss)
        p.update(1)
    assert calls == [] and tty.getvalue() == ""
    p.close()
    p.close()  # closing twice ends the line once
    assert len(calls) == 1 and "loss 2.000" in tty.getvalue() and tty.getvalue().count("\n") == 1
