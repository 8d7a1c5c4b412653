"""The per-module table of `bebert report --by-module` on a terminal, at whatever width it has.

A full row (`summary.module_rows`: module, kind, precision, params, bytes, reason) needs ~130
columns for BERT's dotted names (`bert.encoder.layer.0.attention.output.LayerNorm`); squeezed into 80
(a pipe, a CI log, an 80-column terminal) the table would cut names mid-word. Narrower than the full
rows need, the table groups the modules under their block (`bert.encoder.layer.0`, `bert.embeddings`),
shows each one's name inside it, and moves kind and reason, the same few sentences for many rows,
into numbered notes under the table. Markdown and JSON keep the full rows.
"""

from __future__ import annotations

import re

from bebert_cli.report.summary import fmt_bytes, fmt_count, module_rows

_LAYER = re.compile(r"^(.*?\blayers?\.\d+)\.(.+)$")  # `...encoder.layer.3.attention.self.query`
BORDER = 3  # rich's box: "│ " before each cell and " │" after the last: 3 columns per cell, plus 1
# Narrowest a wrapping column may get before its words would be cut (`reason`: "normalisation" fits).
MIN_WRAPPED = 14


def needed_width(head: list[str], body: list[list[str]], wrapped: tuple[int, ...] = ()) -> int:
    """Columns a table needs so that no cell is cut: whole cells, except the `wrapped` columns (which
    wrap between words) at their longest word or MIN_WRAPPED."""
    total = 1
    for i, name in enumerate(head):
        cells = [name, *(str(r[i]) for r in body)]
        if i in wrapped:
            total += max(MIN_WRAPPED, *(len(w) for c in cells for w in c.split())) + BORDER
        else:
            total += max(len(c) for c in cells) + BORDER
    return total


def group_of(name: str) -> tuple[str, str]:
    """(block, name inside it): up to `layer.N` for encoder layers, else the parent module."""
    m = _LAYER.match(name)
    if m:
        return m.group(1), m.group(2)
    parent, dot, leaf = name.rpartition(".")
    return (parent, leaf) if dot else ("", name)


def grouped_rows(entry: dict) -> tuple[list[str], list[list[str]], list[str]]:
    """(head, body, notes): a header row per block, its modules under it by their short names, and the
    kind and reason of each row as a note number."""
    notes: dict[str, int] = {}
    body: list[list[str]] = []
    current = None
    for m in entry.get("modules", []):
        block, short = group_of(m["name"])
        if block != current and block:
            body.append([block, "", "", "", ""])
        current = block
        number = notes.setdefault(_note(m["kind"], m["reason"]), len(notes) + 1)
        body.append([("  " if block else "") + short, m["precision"], fmt_count(m["params"]), fmt_bytes(m["bytes"]),
                     str(number)])
    return ["module", "precision", "params", "bytes", "note"], body, [f"{n}. {text}" for text, n in notes.items()]


def _note(kind: str, reason: str) -> str:
    """The kind and the reason, once: most reasons already begin with what the module is ("LayerNorm: ...")."""
    if not reason:
        return kind
    return reason if re.match(r"^[^:,]{1,40}: ", reason) else f"{kind}: {reason}"


def module_table(entry: dict, width: int) -> tuple[list[str], list[list[str]], list[str]]:
    """The full rows when `width` holds them without cutting a name, else the grouped rows and their notes."""
    head, body = module_rows(entry)
    if needed_width(head, body, wrapped=(head.index("reason"),)) <= width:
        return head, body, []
    return grouped_rows(entry)
