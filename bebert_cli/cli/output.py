"""One output sink for every command: human (rich tables), JSON (one object on stdout), quiet.

Logs and progress bars always go to stderr so that `--json` stdout is machine-readable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False):
        # Under torchrun / accelerate launch only the first process speaks; the others stay silent.
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self.json_mode = json_mode
        self.quiet = quiet or not self.is_main
        self.err = Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)
        if quiet:
            silence_library_warnings()

    @property
    def show_progress(self) -> bool:
        # No bars for pipelines, quiet runs or logs redirected to a file.
        return not (self.json_mode or self.quiet) and self.err.is_terminal

    def log(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        """A warning on stderr; -q silences it with the rest (errors are not warnings: they always print)."""
        if not self.quiet:
            self.err.print(f"[yellow]Warning:[/yellow] {message}")

    def table(self, title: str, columns: list[str], rows: list[list]) -> None:
        if self.json_mode or self.quiet:
            return
        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*[_fmt(v) for v in r])
        self.out.print(table)

    def result(self, payload: dict) -> None:
        """The command's machine-readable result: printed only in JSON mode, exactly once."""
        if self.json_mode and self.is_main:
            sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()

    @contextmanager
    def progress(self, enabled: bool = True):
        """A rich progress display on stderr on a terminal; elsewhere (CI logs, files) a compact line at
        most every LINE_INTERVAL seconds; a no-op stand-in when quiet."""
        if not (enabled and self.show_progress):
            yield LineProgress(self.log) if enabled and not self.quiet else NullProgress()
            return
        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.err, transient=False,
        )
        with bar:
            yield bar


# Libraries that log warnings through `logging`; their levels are raised to ERROR under -q.
LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "torch", "safetensors", "tokenizers")


def silence_library_warnings() -> None:
    """-q: no Python warnings (torch's, transformers' UserWarnings...) and no library log lines below ERROR.

    The environment variables cover libraries imported later (they read them when they set up their
    loggers); the levels cover those already imported. Errors still print."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    for var in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY"):
        os.environ[var] = "error"
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


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
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass

    def remove_task(self, *args, **kwargs):
        pass


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
