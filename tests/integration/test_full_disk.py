"""A full disk is one line naming the file (or ``--out``), never a traceback, and what was on disk stays.

``/dev/full`` makes the failures real: every write to it fails with ENOSPC, the way a full filesystem
fails (torch's stream writer then says only ``unexpected pos``; a Parquet or JSON writer names no file).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import rpt_core.data.shards as shards
import rpt_train.rl.checkpoint as checkpoint
from rpt_core.runtime.cli import config_command
from rpt_core.runtime.config import option
from rpt_core.runtime.files import atomic_path
from rpt_data.cli import main as rpt_data
from rpt_train.cli.run import run
from rpt_train.rl.checkpoint import latest_checkpoint, load_checkpoint
from tests.rpt_data.build.test_build_guards import proxy, write_corpus
from tests.rpt_train.rl.test_run_guards import cli_args, task

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)"),
]
__all__ = ["proxy", "task"]  # fixtures, used by name


def test_an_atomic_write_on_a_full_disk_names_its_file(tmp_path):
    target = tmp_path / "eval.json"
    with pytest.raises(OSError) as e:
        with atomic_path(target), open("/dev/full", "w") as f:  # the text reaches a full disk
            f.write("x" * 100_000)
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))
    assert not target.exists() and list(tmp_path.iterdir()) == []  # nothing half-written, no temp file


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_previous_one(
    task, tmp_path, monkeypatch
):
    real_save, calls = torch.save, []

    def second_save_fills_the_disk(obj, path):
        calls.append(path)
        real_save(obj, "/dev/full" if len(calls) == 2 else path)

    monkeypatch.setattr(checkpoint.torch, "save", second_save_fills_the_disk)
    out = tmp_path / "run"
    result = CliRunner().invoke(run, cli_args(task, out, "--save-every", "1"))
    assert result.exit_code == 1, result.output
    step2 = out / "checkpoints" / "step-000002" / "trainer_state.pt"
    assert result.stderr.startswith(f"error: {step2}: cannot write the checkpoint (unexpected pos ")
    assert "a short write, most likely a full disk); the previous one is kept\n" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert (
        latest_checkpoint(out).name == "step-000001" and load_checkpoint(latest_checkpoint(out))["step"] == 1
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001", "latest"] or sorted(
        p.name for p in (out / "checkpoints").iterdir()
    ) == ["latest", "step-000001"]


def test_a_full_disk_during_a_build_names_the_shard(proxy, tmp_path, monkeypatch):
    real = pq.write_table

    def onto_a_full_disk(table, where, **kw):  # a file object: given a path, pyarrow deletes it on failure
        with open("/dev/full", "wb") as f:
            real(table, f, **kw)

    monkeypatch.setattr(shards.pq, "write_table", onto_a_full_disk)
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    args = ["build", "--dataset", str(corpus), "--proxy-model", str(proxy), "--text-template", "{problem}",
            "--val-docs", "2", "--rows-per-shard", "50", "--block-docs", "4", "--quiet",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(rpt_data, args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"error: {out}/") and ".parquet: " in result.stderr
    assert "No space left on device" in result.stderr and os.path.exists("/dev/full")


@dataclass
class Writes:
    out: str = option("o", "Output directory.")


@config_command(Writes, "demo", name="writes")
def writes(cfg: Writes) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")  # a writer that names no file


def test_an_unnamed_os_error_names_the_commands_out(tmp_path):
    result = CliRunner().invoke(writes, ["--out", str(tmp_path / "x")])
    assert (result.exit_code, result.output) == (
        1,
        f"error: {tmp_path / 'x'}: No space left on device (while writing the output)\n",
    )
