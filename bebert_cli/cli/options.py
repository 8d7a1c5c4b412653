"""Option aliases shared by every command, so each flag means the same thing everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Task = Annotated[str, typer.Option("--task", "-t", help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.")]
OutputDir = Annotated[Path, typer.Option("--output", "-o", help="Output directory (written atomically).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.")]
DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="BEBERT_DATA_DIR", help="GLUE directory (SST-2/train.tsv, ...); default: the hub."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout; logs go to stderr.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or logs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Batch size (global, across processes).")]
EvalBatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Evaluation batch size.")]
MaxSeqLength = Annotated[Optional[int], typer.Option("--max-seq-length", min=8, help="Truncate inputs to this many tokens.")]
MaxTrainSamples = Annotated[Optional[int], typer.Option("--max-train-samples", min=1, help="Train on a seeded random subset.")]
MaxSamples = Annotated[Optional[int], typer.Option("--max-samples", min=1, help="Evaluate the first N rows only.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (data order, initialisation, dropout).")]
Epochs = Annotated[float, typer.Option("--epochs", min=0.01, help="Training epochs (fractions allowed).")]
Lr = Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (linear warm-up and decay).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its saved state.")]
SaveEvery = Annotated[int, typer.Option("--save-every", min=1, help="Steps between resumable checkpoints.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Allow custom model code (off by default).")]
Cpu = Annotated[bool, typer.Option("--cpu", help="Force the CPU even when an accelerator is present.")]
