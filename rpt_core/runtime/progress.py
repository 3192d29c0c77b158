"""A one-line terminal progress display (count, named values, rate, ETA) that is silent when not on a TTY
or quiet.

Long jobs (shard building, pretraining, training, evaluation) report through this so they all look alike and
all respect ``--quiet``: ``pretrain | 120/800 steps (15%) | loss 2.312 | 8,512 tok/s | elapsed 00:14 | ETA
01:20``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_LINE = "\r\033[K"


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _fmt_value(value: object) -> str:
    value = value() if callable(value) else value
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """``Progress(total, unit="docs")``; call ``update(n, **counters)``, ``set_postfix(**values)`` and
    ``close()``.

    ``counters`` are extra amounts (e.g. ``tok=512``) shown as per-second rates averaged since the start;
    ``set_rate(name, per_s)`` shows a rate the caller measured instead. ``message(text)`` prints a one-off
    line without garbling the progress line; it is the one output that is not silent off a TTY (only quiet
    silences it).
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
        self.quiet = quiet
        self.enabled = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.unit, self.desc = total, unit, desc
        self.n = self.initial = 0
        self.counters: dict[str, float] = {}
        self.rates: dict[str, float] = {}
        self.postfix: dict[str, object] = {}
        self.start = self._last = time.perf_counter()
        self.min_interval = min_interval
        self._shown = False

    def start_from(self, n: int) -> None:
        """Count ``n`` items as done before this run (e.g. steps before a resume): they place the line
        (``n/total``) but do not count toward the ETA."""
        self.n = self.initial = n

    def set_postfix(self, **values: str | float | Callable[[], object] | None) -> None:
        """The named values shown after the count (replacing the previous ones), drawn by the next update:
        ``set_postfix(loss=2.31, acc="38.5%")`` shows ``loss 2.31 | acc 38.5%``. Floats are shown to 4
        significant digits, strings as they are; ``None`` hides a value; a callable is called only when the
        line is drawn (e.g. to read a GPU tensor no more often than that)."""
        self.postfix = {k: v for k, v in values.items() if v is not None}

    def set_rate(self, name: str, per_s: float | None) -> None:
        """Show ``per_s`` as the ``name/s`` rate (e.g. measured over the last step) instead of the average
        of a ``name`` counter; ``None`` removes it."""
        if per_s is None:
            self.rates.pop(name, None)
        else:
            self.rates[name] = per_s

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
        parts += [f"{k} {_fmt_value(v)}" for k, v in self.postfix.items()]
        rates = {k: v / elapsed for k, v in self.counters.items()} | self.rates
        parts += [f"{v:,.0f} {k}/s" for k, v in rates.items()]
        parts.append(f"elapsed {_fmt_seconds(elapsed)}")
        if self.total:
            done = self.n - self.initial
            eta = (self.total - self.n) * elapsed / done if done > 0 else float("nan")
            parts.append(f"ETA {_fmt_seconds(eta)}")
        self.stream.write(CLEAR_LINE + " | ".join(parts))
        self.stream.flush()
        self._shown = True

    def message(self, text: str) -> None:
        """Print ``text`` on a line of its own (above the progress line, which is drawn again)."""
        if self.quiet:
            return
        if self._shown:
            self.stream.write(CLEAR_LINE)
        print(text, file=self.stream, flush=True)
        if self._shown:
            self._render(time.perf_counter())

    def close(self) -> None:
        """Draw the final line and end it; later calls (and updates) draw nothing."""
        if self.enabled:
            self._render(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
