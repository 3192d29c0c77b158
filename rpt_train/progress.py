"""A one-line terminal progress display (count, rate, ETA) that is silent when not on a TTY or quiet.

Long jobs (shard building, training, evaluation) report through this so they all look alike and all
respect ``--quiet``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """``Progress(total, unit="docs")``; call ``update(n, **rates)`` and ``close()``.

    ``rates`` are extra counters (e.g. ``tokens=512``) shown as per-second rates.
    """

    def __init__(
        self,
        total: int | None,
        unit: str = "it",
        desc: str = "",
        quiet: bool = False,
        stream: TextIO | None = None,
        min_interval: float = 0.2,
    ):
        self.stream = stream or sys.stderr
        self.enabled = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.unit, self.desc = total, unit, desc
        self.n = 0
        self.counters: dict[str, float] = {}
        self.start = self._last = time.perf_counter()
        self.min_interval = min_interval

    def update(self, n: int = 1, **counters: float) -> None:
        self.n += n
        for k, v in counters.items():
            self.counters[k] = self.counters.get(k, 0.0) + v
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.min_interval):
            self._last = now
            self._render(now)

    def _render(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        parts = [self.desc] if self.desc else []
        if self.total:
            parts.append(f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n} {self.unit}")
        for k, v in self.counters.items():
            parts.append(f"{v / elapsed:,.0f} {k}/s")
        eta = (self.total - self.n) * elapsed / self.n if self.total and self.n else float("nan")
        parts.append(f"elapsed {_fmt_seconds(elapsed)}")
        if self.total:
            parts.append(f"ETA {_fmt_seconds(eta)}")
        self.stream.write("\r\033[K" + " | ".join(parts))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._render(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
