"""The output-directory lock: one writer per OUT, stale locks taken over or explained, one-line errors for
an OUT that cannot be created or written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpt_core.runtime.errors import RptError
from rpt_core.runtime.lock import LOCK_NAME, Holder, OutputLock, output_lock
from tests.helpers import TWO_RANKS, dead_pid, unwritable_dir, write_lock

REPO = Path(__file__).resolve().parents[3]


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, "rpt-train run"):
        holder = Holder.parse((out / LOCK_NAME).read_text())
        assert holder.pid == os.getpid() and holder.command == "rpt-train run"
        with pytest.raises(RptError, match=r"is in use by rpt-train run \(pid \d+ on .*wait for it"):
            OutputLock.acquire(out, "rpt-train eval")
    assert not (out / LOCK_NAME).exists()
    OutputLock.acquire(out, "rpt-train eval").release()  # free again


def test_the_lock_is_released_when_the_command_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError), output_lock(out, "rpt-data build"):
        raise ValueError("boom")
    assert not (out / LOCK_NAME).exists() and out.is_dir()


def test_a_lock_of_a_process_that_died_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path / "out"
    write_lock(out, pid=dead_pid())
    with output_lock(out, "rpt-train run"):
        assert Holder.parse((out / LOCK_NAME).read_text()).pid == os.getpid()
    assert "no longer running; taking it over" in capsys.readouterr().err


def test_a_recycled_pid_is_not_the_holder(tmp_path):
    """Same pid, but a process that started at another time: the holder is gone."""
    out = tmp_path / "out"
    me = Holder.me("x")
    if me.process_start is None:
        pytest.fail("this test needs /proc (Linux)")
    write_lock(out, process_start=me.process_start + 1)
    OutputLock.acquire(out, "rpt-train run").release()
    write_lock(out, process_start=me.process_start)  # the same process: alive
    with pytest.raises(RptError, match="in use"):
        OutputLock.acquire(out, "rpt-train run")


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    out = tmp_path / "out"
    lock = write_lock(out, host="elsewhere", pid=dead_pid())
    with pytest.raises(RptError) as e:
        OutputLock.acquire(out, "rpt-train run")
    assert "locked by rpt-train run (pid" in str(e.value) and f"rm '{lock}'" in str(e.value)
    assert lock.exists()


def test_an_unreadable_lock_is_refused_while_young_and_taken_over_when_old(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # a creator that has not written its record yet
    with pytest.raises(RptError, match="being locked by another command"):
        OutputLock.acquire(out, "rpt-train run")
    old = time.time() - 3600
    os.utime(out / LOCK_NAME, (old, old))  # left by a crash long ago
    OutputLock.acquire(out, "rpt-train run").release()


def test_impossible_outputs_are_one_line_errors(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(RptError, match="exists and is not a directory"):
        OutputLock.acquire(a_file, "rpt-train eval")
    with pytest.raises(RptError, match="cannot create the directory|not a directory"):
        OutputLock.acquire(a_file / "out", "rpt-train eval")
    with pytest.raises(RptError, match="cannot create the directory|not writable"):
        OutputLock.acquire(unwritable_dir(tmp_path), "rpt-train eval")


def test_an_out_the_lock_created_is_removed_when_nothing_was_written(tmp_path):
    out = tmp_path / "new" / "out"
    with output_lock(out, "rpt-train eval"):
        assert out.is_dir()
    assert not out.exists()
    with output_lock(out, "rpt-train eval"):
        (out / "eval.json").write_text("{}")
    assert (out / "eval.json").is_file() and not (out / LOCK_NAME).exists()


HOLD = """
import sys, time
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.lock import OutputLock
try:
    lock = OutputLock.acquire(sys.argv[1], "holder")
    print("locked", flush=True)
    time.sleep(3)
    lock.release()
except RptError as e:
    print("refused:", e, flush=True)
"""


def test_two_processes_started_together_get_one_lock(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", HOLD, str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outputs[0] == "locked" and outputs[1].startswith("refused:") and "in use by holder" in outputs[1]
    assert not (out / LOCK_NAME).exists()


RANKS = """
import sys
from rpt_core.runtime import distributed as D
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.lock import output_lock
info = D.init_distributed("cpu")
try:
    with output_lock(sys.argv[1], "rpt-train run"):
        result = "locked"
except RptError as e:
    result = f"refused: {e}"
open(f"rank{info.rank}.txt", "w").write(result)
D.cleanup()
"""


def test_under_torchrun_rank_0_locks_and_every_rank_learns_a_refusal(tmp_path):
    out = tmp_path / "out"
    write_lock(out)  # held by this test process
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [*TWO_RANKS, str(script), str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert results[0] == results[1] and results[0].startswith(f"refused: {out} is in use by rpt-train run")
