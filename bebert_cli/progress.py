"""What a long-running step reports to, below every command: a progress display and a log.

The training loop and the workflows take a `Sink` (log lines, warnings, a progress display) and the
`Progress` it hands out; `cli/output.py` implements both for a terminal, a CI log or `--json`. Kept here,
torch-free and importing nothing of bebert, so that nothing below the CLI imports the CLI.
"""

from __future__ import annotations

import os
import time
from typing import ContextManager, Protocol


class Progress(Protocol):
    """The part of rich's `Progress` the training loop and the evaluations use."""

    def add_task(self, description: str, total=None, completed=0, **fields) -> int: ...

    def update(self, task_id: int, completed=None, advance=None, **fields) -> None: ...

    def advance(self, task_id: int, advance=1) -> None: ...

    def remove_task(self, task_id: int) -> None: ...


class Sink(Protocol):
    """Where a workflow speaks: log lines and warnings (stderr), and a progress display."""

    def log(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, enabled: bool = True) -> ContextManager[Progress]: ...


LINE_INTERVAL = float(os.environ.get("BEBERT_PROGRESS_INTERVAL", "60"))  # seconds between progress lines


class LineProgress:
    """Progress for logs without a terminal: `description: 120/900 (13%) loss 0.41 ... elapsed 1:02 ETA 6:43`,
    at most every `interval` seconds per task, and a last line when a task that printed one finishes."""

    def __init__(self, log, interval: float | None = None, clock=time.monotonic):
        self.log, self.interval, self.clock = log, LINE_INTERVAL if interval is None else interval, clock
        self.tasks: dict[int, dict] = {}

    def add_task(self, description, total=None, completed=0, **fields):
        now = self.clock()
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": completed,
                                       "start_completed": completed, "start": now, "last": now, "printed": False,
                                       "info": fields.get("info", "")}
        return len(self.tasks) - 1

    def update(self, task_id, completed=None, advance=None, info=None, **fields):
        t = self.tasks.get(task_id)
        if t is None:
            return
        if completed is not None:
            t["completed"] = completed
        if advance:
            t["completed"] += advance
        if info is not None:
            t["info"] = info
        now = self.clock()
        done = t["total"] is not None and t["completed"] >= t["total"]
        if now - t["last"] >= self.interval or (done and t["printed"]):
            self._line(t, now)

    def advance(self, task_id, advance=1):
        self.update(task_id, advance=advance)

    def remove_task(self, task_id):
        self.tasks.pop(task_id, None)

    def _line(self, t, now):
        t["last"], t["printed"] = now, True
        elapsed = now - t["start"]
        parts = [f"{t['description']}: {t['completed']}"]
        if t["total"]:
            parts[0] += f"/{t['total']} ({100 * t['completed'] / t['total']:.0f}%)"
        if t["info"]:
            parts.append(str(t["info"]))
        parts.append(f"elapsed {_clock(elapsed)}")
        moved = t["completed"] - t["start_completed"]
        if t["total"] and 0 < moved and t["completed"] < t["total"]:
            parts.append(f"ETA {_clock(elapsed / moved * (t['total'] - t['completed']))}")
        self.log(" ".join(parts))


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class NullProgress:
    """Progress that shows nothing: quiet runs, processes other than the first, no sink at all."""

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass

    def remove_task(self, *args, **kwargs):
        pass
