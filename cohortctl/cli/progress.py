"""Progress views on stderr: a bar on a terminal, plain lines otherwise, nothing when quiet.

Both show the same words: ``56,000/500,000 users (11%), 12,345 users/s, ETA 36s``
(thousands separators, the rate since the start, the time left at that rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cohortctl.durations import format_duration

Clock = Callable[[], float]


class Meter:
    """Counts toward a total and says how fast and how long is left."""

    def __init__(self, total: int, unit: str, *, clock: Clock = time.monotonic) -> None:
        self.total = total
        self.unit = unit
        self._clock = clock
        self._start = clock()

    def line(self, done: int, extra: str = "") -> str:
        """``done/total unit (pct), rate unit/s, ETA t`` (+ ``extra``)."""
        elapsed = self._clock() - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = f" ({done * 100 // self.total}%)" if self.total else ""
        parts = [f"{done:,}/{self.total:,} {self.unit}{pct}"]
        if extra:
            parts.append(extra)
        parts.append(f"{rate:,.0f} {self.unit}/s")
        if done >= self.total:
            parts.append(f"done in {format_duration(elapsed)}")
        elif rate > 0:
            parts.append(f"ETA {format_duration((self.total - done) / rate)}")
        else:
            parts.append("ETA -")
        return ", ".join(parts)


def make_bar(label: str, total: int, console: Any) -> tuple[Any, Any]:
    """A transient rich bar on ``console`` whose text is set by ``update(task, line=...)``."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(
        TextColumn(escape(label)),
        BarColumn(bar_width=24 if console.width >= 100 else 12),
        TextColumn("{task.fields[line]}"),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=total or 1, line="")
    return bar, task
