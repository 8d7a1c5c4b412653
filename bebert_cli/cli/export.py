"""`bebert export`: write a packed binary checkpoint as packed, dense or remote-code."""

from __future__ import annotations

from typing import Annotated

import typer

from bebert_cli.cli import choices
from bebert_cli.cli import options as opt


def export_command(
    path: Annotated[str, typer.Argument(help="Packed binary checkpoint (the output of bebert binarize).")],
    output: opt.OutputDir,
    fmt: Annotated[
        choices.ExportFormat,
        typer.Option("--format", "-f", case_sensitive=False, help="packed (bebert's format) | dense (plain fp32 HF checkpoint of the binarized "
                                            "weights; exact only with trust_remote_code) | remote-code (packed + "
                                            "standalone modeling code for trust_remote_code=True)"),
    ] = choices.ExportFormat.packed,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Reload the export and check its logits exactly.")] = True,
    overwrite: opt.Overwrite = False,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
):
    """Export a packed binary checkpoint for use outside bebert."""
    from pathlib import Path

    from bebert_cli.cli.output import Output
    from bebert_cli.export import export_checkpoint

    out = Output(json_mode=json_out, quiet=quiet)
    out.log(f"Exporting {path} as {fmt} to {output} ...")
    result = export_checkpoint(Path(path), output, fmt, overwrite=overwrite, verify=verify,
                               log=None if json_out else out.log)
    rows = [["format", result["format"]], ["storage", result["storage"]], ["recipe", f"{result['recipe']} ({result['bits']})"],
            ["size", f"{result['bytes']['disk'] / 1e6:.2f} MB (source {result['source_bytes']['disk'] / 1e6:.2f} MB)"],
            ["verified", "exact logits on a check batch" if verify else "skipped (--no-verify)"],
            ["exact", str(result["exact"])], ["load with", result["loads_with"]], ["files", ", ".join(result["files"])]]
    plain = result.get("verification", {}).get("plain_load")
    if plain:
        rows.append(["plain load", f"{plain['what']}: NOT the binary model (max logit difference "
                                   f"{plain['max_abs_logit_diff_on_check_batch']:.3g} on the check batch)"])
    out.table(f"export · {path} -> {output}", ["", ""], rows)
    out.log(f"Saved {output}")
    out.result(result, "export")


def register(app: typer.Typer) -> None:
    app.command("export", epilog=opt.examples(
        "bebert export student/ -o packed/",
        "bebert export student/ -o dense/ --format dense",
        "bebert export student/ -o hub-ready/ --format remote-code   # loads with trust_remote_code=True",
    ))(export_command)
