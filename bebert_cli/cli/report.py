"""`bebert report`: parameters by precision, bytes, FLOPs and metrics of checkpoints, against a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bebert_cli.cli import options as opt


@opt.data_options
def report_command(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="Checkpoint directories: full precision, packed binary or ensemble.")],
    baseline: Annotated[
        Optional[Path], typer.Option("--baseline", "-b", metavar="TEACHER", help="Checkpoint to compare with (the teacher): ratios and deltas.")
    ] = None,
    seq_len: Annotated[
        Optional[int],
        typer.Option("--seq-len", min=1, metavar="L", help="Sequence length for FLOPs (default: the first checkpoint's max_seq_length, else 128)."),
    ] = None,
    by_module: Annotated[bool, typer.Option("--by-module", help="Per-module breakdown: binary or full precision, and why.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print markdown tables on stdout (for a pull request).")] = False,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", metavar="FILE.png", help="Draw the main metric against weights size (log scale) to FILE.png.")
    ] = None,
    write_card: Annotated[
        bool, typer.Option("--write-card", help="(Re)write each PATH's model card README.md (atomically).")
    ] = False,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
    data=None,
):
    """Report what compression bought: parameters by precision, bytes on disk, FLOPs, metrics, ratios."""
    from bebert_cli.cli.output import Output
    from bebert_cli.errors import UsageError

    out = Output(json_mode=json_out, quiet=quiet)
    if json_out and markdown:
        raise UsageError("--json and --markdown both print on stdout; choose one")
    # The data options pick whose saved metrics are reported: a GLUE task, or your files / dataset by name.
    data.check()
    task = None
    if data.task is not None:
        from bebert_cli.tasks import get_task

        task = get_task(data.task).name
    elif data.custom:
        from bebert_cli.dataspec import data_name

        task = data_name(data)

    from bebert_cli.report import build_report, convention_lines, module_rows, render_markdown, tables

    report = build_report(paths, baseline=baseline, task=task, seq_len=seq_len, by_module=by_module)
    if seq_len is None and len(report["saved_seq_lens"]) > 1:
        out.warn(f"the checkpoints were made at different sequence lengths {report['saved_seq_lens']}; "
                 f"all FLOPs are at L={report['seq_len']} (set --seq-len)")
    for e in report["models"] + ([report["baseline"]] if report["baseline"] else []):
        for note in e["notes"]:
            out.warn(f"{e['name']}: {note}")

    report["plot"] = None
    if plot is not None:
        from bebert_cli.report.plot import write_plot

        report["plot"] = write_plot(report, plot)
        out.log(f"Wrote {plot} ({report['plot']['points']} points)")

    report["cards"] = []
    if write_card:
        from bebert_cli.report.card import write_model_card

        for p in paths:
            card = write_model_card(p, baseline=baseline if baseline is not None else "auto", seq_len=seq_len)
            report["cards"].append(str(card))
            out.log(f"Wrote {card}")

    if markdown:
        typer.echo(render_markdown(report), nl=False)
    elif not (json_out or out.quiet):
        for title, head, body in tables(report):
            _table(out, title, head, body)
        if by_module:
            for e in ([report["baseline"]] if report["baseline"] else []) + report["models"]:
                head, body = module_rows(e)
                _table(out, f"modules of {e['name']}", head, body)
        for line in convention_lines(report["seq_len"]):
            out.out.print(line, style="dim", markup=False, highlight=False)
    out.result(report, "report")


def _table(out, title: str, head: list[str], body: list[list[str]]) -> None:
    """Like Output.table, but cells fold instead of being cut with an ellipsis: numbers stay whole."""
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(head):
        table.add_column(c, overflow="fold", justify="left" if i == 0 or c in ("kind", "precision", "reason", "bits") else "right")
    for r in body:
        table.add_row(*[str(v) for v in r])
    out.out.print(table)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
