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
    max_seq_length: Annotated[
        Optional[int],
        typer.Option("--max-seq-length", min=1, metavar="L", show_default="the first checkpoint's, else 128",
                     help="Sequence length the FLOPs are counted at."),
    ] = None,
    seq_len: Annotated[  # the old name: still accepted, with a warning
        Optional[int], typer.Option("--seq-len", min=1, metavar="L", hidden=True, help="Deprecated: --max-seq-length.")
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
    seq_len = _seq_len(max_seq_length, seq_len, out)
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

    from bebert_cli.report import build_report, convention_lines, render_markdown, tables

    report = build_report(paths, baseline=baseline, task=task, seq_len=seq_len, by_module=by_module)
    if seq_len is None and len(report["saved_seq_lens"]) > 1:
        out.warn(f"the checkpoints were made at different sequence lengths {report['saved_seq_lens']}; "
                 f"all FLOPs are at L={report['seq_len']} (set --max-seq-length)")
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
            from bebert_cli.report.module_table import module_table

            for e in ([report["baseline"]] if report["baseline"] else []) + report["models"]:
                head, body, notes = module_table(e, out.out.width)  # grouped, with notes, when narrow
                _table(out, f"modules of {e['name']}", head, body, whole_first_column=bool(notes))
                _notes(out, notes)
        for line in convention_lines(report["seq_len"]):
            out.out.print(line, style="dim", markup=False, highlight=False)
    out.result(report, "report")


def _seq_len(max_seq_length, seq_len, out):
    """--max-seq-length, or the deprecated --seq-len it replaced (one name per concept across commands)."""
    from bebert_cli.errors import UsageError

    if seq_len is None:
        return max_seq_length
    if max_seq_length is not None and max_seq_length != seq_len:
        raise UsageError(f"--seq-len {seq_len} contradicts --max-seq-length {max_seq_length}; --seq-len is the old name")
    out.warn("--seq-len is deprecated; use --max-seq-length (the same option as in the other commands)")
    return seq_len


def _notes(out, notes: list[str]) -> None:
    """Numbered notes under a table, each wrapped beside its number."""
    if not notes:
        return
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column()
    for line in notes:
        number, _, text = line.partition(" ")
        grid.add_row(number, text)
    out.out.print(grid, markup=False, highlight=False)


def _table(out, title: str, head: list[str], body: list[list[str]], *, whole_first_column: bool = False) -> None:
    """Like Output.table, but cells fold instead of being cut with an ellipsis: numbers stay whole.
    `whole_first_column`: the names are never wrapped (the other columns wrap between words)."""
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(head):
        whole = whole_first_column and i == 0
        table.add_column(c, overflow="fold", justify="left" if i == 0 or c in ("kind", "precision", "reason", "bits") else "right",
                         no_wrap=whole, min_width=max(len(str(r[0])) for r in [head, *body]) if whole else None)
    for r in body:
        table.add_row(*[str(v) for v in r])
    out.out.print(table)


def register(app: typer.Typer) -> None:
    app.command("report", epilog=opt.examples(
        "bebert report student/ ens/ --baseline teacher/",
        "bebert report student/ --baseline teacher/ --by-module      # every tensor: binary or kept, and why",
        "bebert report student/ ens/ --baseline teacher/ --markdown >> $GITHUB_STEP_SUMMARY",
        "bebert report student/ ens/ --baseline teacher/ --plot tradeoff.png",
    ))(report_command)
