"""What compression bought: parameters by precision, bytes, FLOPs and metrics of checkpoints.

    from bebert_cli.report import count_checkpoint, summarize, compare, write_model_card

Everything is counted from the checkpoint files (safetensors headers and config.json); no model is
built and no weights are read, so a report costs milliseconds. See docs/report.md.
Importing this package is light (no torch, matplotlib or huggingface_hub).
"""

from __future__ import annotations

from bebert_cli.report.counting import PRECISION_LABELS, PRECISIONS, Count, count_checkpoint  # noqa: F401
from bebert_cli.report.flops import CONVENTIONS, count_flops  # noqa: F401
from bebert_cli.report.summary import (  # noqa: F401 - the package's public names
    PARAM_COLUMNS, build_report, compare, convention_lines, fmt_bytes, fmt_count, fmt_delta,
    fmt_metric, fmt_ratio, md_table, module_rows, param_columns, render_markdown, saved_metrics, summarize, tables,
)


def write_model_card(path, **kwargs):
    """Write (atomically) the Hugging Face model card `path/README.md`; returns its path."""
    from bebert_cli.report.card import write_model_card as _write

    return _write(path, **kwargs)


__all__ = [
    "Count", "count_checkpoint", "count_flops", "summarize", "compare", "build_report", "render_markdown", "tables",
    "write_model_card", "saved_metrics",
]
