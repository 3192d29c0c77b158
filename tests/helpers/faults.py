"""Broken files and hostile places for the robustness tests: corrupt Parquet pages behind an intact footer,
truncated weights, an unwritable directory, a lock held by a live (or dead) process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from rpt_core.runtime.lock import LOCK_NAME


def corrupt_data_pages(path: Path, column: str = "context") -> Path:
    """Flip 100 bytes inside ``column``'s first data page of row group 0; the footer stays intact, so the
    file still opens and reports its schema and row counts, and only decoding fails."""
    md = pq.read_metadata(path)
    index = md.schema.to_arrow_schema().names.index(column)
    start = md.row_group(0).column(index).data_page_offset + 20
    data = bytearray(path.read_bytes())
    data[start : start + 100] = bytes(b ^ 0xFF for b in data[start : start + 100])
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def unwritable_dir(tmp_path: Path) -> Path:
    """A path no directory can be created at: under a read-only directory, or (as root, who may write
    anywhere) under sysfs."""
    if os.geteuid() == 0:
        return Path("/sys/rpt-robustness-test")
    ro = tmp_path / "read-only"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    return ro / "out"


def write_lock(out: Path, **fields) -> Path:
    """A lock on ``out`` held by this (live) process unless ``fields`` say otherwise."""
    out.mkdir(parents=True, exist_ok=True)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": "2026-01-01 00:00:00 +0000",
        "command": "rpt-train run",
        **fields,
    }
    (out / LOCK_NAME).write_text(json.dumps(holder))
    return out / LOCK_NAME


def dead_pid() -> int:
    """The pid of a process that has exited (pids are not reused this quickly)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)
