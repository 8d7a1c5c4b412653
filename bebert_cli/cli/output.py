"""One output sink for every command: human (rich tables), JSON (one object on stdout), quiet.

Logs and progress bars always go to stderr so that `--json` stdout is machine-readable.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bebert_cli.progress import LineProgress, NullProgress


# Set once a command has printed its JSON result: a failure after it (the quality gate's exit 3) must not
# print a second object on stdout (`cli/main.py`).
result_printed = False


class Output:
    """The terminal's `progress.Sink`: rich tables and bars, or one JSON object, or nothing."""

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

    def result(self, payload: dict, kind: str) -> None:
        """The command's machine-readable result, an object of schema `bebert.KIND` (docs/json.md): printed
        only in JSON mode, exactly once."""
        global result_printed
        if self.json_mode and self.is_main:
            from bebert_cli.schema import with_schema

            sys.stdout.write(json.dumps(with_schema(kind, payload), sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
            result_printed = True

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


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
