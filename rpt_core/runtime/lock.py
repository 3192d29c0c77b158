"""One writer per output directory: the exclusive lock every writing command holds on its OUT.

``rpt-data build``, ``rpt-train run``, ``rpt-train pretrain`` and ``rpt-train eval`` hold
``OUT/.rpt.lock`` while they work, so a second command on the same OUT stops with one line instead of
interleaving its files with the first one's. The lock file appears atomically with its content (a hard
link to a private file; ``O_CREAT | O_EXCL`` where links are unsupported) and holds its holder as JSON:
pid, host, start time and command, plus the boot id and the process start time so a recycled pid is not
mistaken for the holder. It is removed on exit (also after an error or
Ctrl-C). A lock left behind by a process that was killed is *stale*:

- same host, holder no longer running: taken over, with a note;
- another host (a shared filesystem): refused, with the command that removes it, since this machine
  cannot tell whether that process still runs.

Taking the lock is also the first write into OUT, so an OUT that cannot be created or written fails here,
before any work (an evaluation would otherwise lose its results at the end). Under torchrun only rank 0
takes the lock (the ranks together are one writer) and every rank learns the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rpt_core.runtime.errors import RptError

LOCK_NAME = ".rpt.lock"
UNREADABLE_GRACE_S = 10.0  # a lock file this young may still be being written by its creator
SETTLE_S = 2.0  # how long to re-read a young unreadable lock before refusing as "being locked right now"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: what the lock file says."""

    pid: int
    host: str
    started: str
    command: str
    boot_id: str | None = None
    process_start: int | None = None

    @classmethod
    def me(cls, command: str) -> Holder:
        pid = os.getpid()
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        return cls(pid, socket.gethostname(), started, command, _boot_id(), _process_start(pid))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(
                int(d["pid"]),
                str(d["host"]),
                str(d["started"]),
                str(d["command"]),
                d.get("boot_id"),
                d.get("process_start"),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on {self.host}, started {self.started})"

    def running(self) -> bool:
        """Whether the holder still runs; only meaningful on the holder's own host."""
        if self.boot_id and self.boot_id != _boot_id():
            return False  # the machine rebooted since
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        now = _process_start(self.pid)
        return self.process_start is None or now is None or now == self.process_start


class OutputLock:
    """``OutputLock.acquire(out, command)`` ... ``release()``; see the module docstring."""

    def __init__(self, path: Path, holder: Holder, created_dir: bool):
        self.path, self.holder, self.created_dir = path, holder, created_dir

    @classmethod
    def acquire(cls, out: str | Path, command: str) -> OutputLock:
        out = Path(out)
        created = _make_dir(out)
        path = out / LOCK_NAME
        me = Holder.me(command)
        for _ in range(3):  # a stale lock taken over is one more try
            if _create(path, me):
                return cls(path, me, created)
            text = _read_settled(path)
            if text is None:
                continue  # released meanwhile
            holder = Holder.parse(text)
            if holder is None:
                if time.time() - _mtime(path) < UNREADABLE_GRACE_S:
                    raise RptError(
                        f"{out} is being locked by another command right now ({path}); "
                        "choose another --out or try again"
                    )
                note = f"note: {path} is unreadable (left by a crash); taking it over"
            elif holder.host != me.host:
                raise RptError(
                    f"{out} is locked by {holder.describe()}; this machine cannot tell whether that process "
                    f"still runs: if it does not, remove the lock (rm '{path}') and rerun"
                )
            elif holder.running():
                raise RptError(
                    f"{out} is in use by {holder.describe()}; wait for it to finish or choose another --out"
                )
            else:
                note = f"note: {path} was left by {holder.describe()}, no longer running; taking it over"
            if _remove_if_unchanged(path, text):
                print(note, file=sys.stderr, flush=True)
        raise RptError(f"{out}: could not take the lock {path} (other commands keep taking it)")

    def release(self) -> None:
        """Remove the lock if it is still this holder's; remove OUT too if this lock created it empty."""
        if Holder.parse(_read(self.path) or "") == self.holder:
            self.path.unlink(missing_ok=True)
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only succeeds when nothing was written


def _make_dir(out: Path) -> bool:
    """Create OUT (and parents); True when it did not exist. One-line errors for an impossible OUT."""
    if out.exists():
        if not out.is_dir():
            raise RptError(f"--out {out}: exists and is not a directory")
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        if not out.is_dir():
            raise RptError(f"--out {out}: a path component is not a directory") from None
        return False  # another command created it meanwhile
    except OSError as e:
        raise RptError(f"--out {out}: cannot create the directory ({e.strerror})") from None
    return True


def _create(path: Path, holder: Holder) -> bool:
    """Create the lock file with ``holder`` in it, atomically; False when it already exists.

    The holder is written to a private file first and then hard-linked to the lock's name (``link`` fails
    when the name exists), so no other command ever sees a lock file without its holder. A filesystem
    without hard links falls back to ``O_CREAT | O_EXCL`` and a write, where a reader may briefly find
    the file empty (``acquire`` waits a moment for that).
    """
    text = json.dumps(asdict(holder)) + "\n"
    tmp = path.with_name(f"{LOCK_NAME}.new-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RptError(f"--out {path.parent}: not writable ({e.strerror})") from None
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network or FUSE filesystems)
        return _create_exclusive(path, text)
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as e:
        raise RptError(f"--out {path.parent}: not writable ({e.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:  # e.g. a full disk
        path.unlink(missing_ok=True)
        raise RptError(f"--out {path.parent}: cannot write {path.name} ({e.strerror})") from None
    return True


def _read_settled(path: Path) -> str | None:
    """The lock file's text; a young unreadable one is re-read a moment (its creator may be writing it)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        text = _read(path)
        if text is None or Holder.parse(text) is not None or time.monotonic() > deadline:
            return text
        if time.time() - _mtime(path) >= UNREADABLE_GRACE_S:
            return text  # old and unreadable: left by a crash, no point waiting
        time.sleep(0.02)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _remove_if_unchanged(path: Path, text: str) -> bool:
    """Remove a stale lock unless another command replaced it meanwhile (then put that one back)."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another command removed it first
    if _read(aside) == text:
        aside.unlink(missing_ok=True)
        return True
    with contextlib.suppress(OSError):  # we moved a live lock: restore it
        os.rename(aside, path)
    return False


@contextlib.contextmanager
def output_lock(out: str | Path, command: str) -> Iterator[None]:
    """Hold OUT's lock for the block: on rank 0 only under torchrun, its refusal raised on every rank."""
    from rpt_core.runtime import distributed as D  # deferred: torch is not needed to read or take a lock

    held: list[OutputLock] = []
    D.on_main_rank(lambda: held.append(OutputLock.acquire(out, command)))
    try:
        yield
    finally:
        for lock in held:
            lock.release()
