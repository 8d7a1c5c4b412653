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

# Recipe overrides (binarize, ensemble): None means "the recipe's value".
WeightBits = Annotated[Optional[int], typer.Option("--weight-bits", help="1 (binary) or 32 (full-precision encoder)")]
ActivationBits = Annotated[Optional[int], typer.Option("--activation-bits", help="1, 2..8 (LSQ) or 32")]
EmbeddingBits = Annotated[Optional[int], typer.Option("--embedding-bits", help="1 (binary table) or 32")]
Embeddings = Annotated[Optional[str], typer.Option("--embeddings", help="table | binary | hash (EELBERT)")]
HashNgrams = Annotated[Optional[str], typer.Option("--hash-ngrams", help="n-gram sizes for --embeddings hash, e.g. 3 or 2,3,4")]
HashSeed = Annotated[Optional[int], typer.Option("--hash-seed", help="seed of the hash family")]
HashProjection = Annotated[Optional[bool], typer.Option("--hash-projection/--no-hash-projection", help="trainable projection after the hash")]
ActivationMode = Annotated[Optional[str], typer.Option("--activation-mode", help="sign | elastic")]
Attention = Annotated[Optional[str], typer.Option("--attention", help="bi | softmax")]
RecipeEpochs = Annotated[Optional[float], typer.Option("--epochs", min=0.01, help="Training epochs (fractions allowed).")]
RecipeLr = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Peak learning rate.")]
RecipeBatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Global batch size.")]
RecipeMaxSeqLength = Annotated[Optional[int], typer.Option("--max-seq-length", min=8, help="Truncate inputs to this many tokens.")]
FpDtype = Annotated[Optional[str], typer.Option("--fp-dtype", help="storage of kept full-precision tensors: float16 | float32")]
MixedPrecision = Annotated[str, typer.Option(
    "--mixed-precision",
    help="auto | no | bf16: bf16 autocast for training only; auto = bf16 only where the CPU/GPU computes it natively")]
EvalBatchSizeOpt = Annotated[int, typer.Option("--eval-batch-size", min=1, help="Evaluation batch size.")]

# Training levers (binarize; --group-by-length also finetune and ensemble): None = the recipe's value.
GroupByLength = Annotated[Optional[bool], typer.Option(
    "--group-by-length/--no-group-by-length",
    help="Batches of similar lengths (sorted within mega-batches of 50 batches, batch order shuffled): "
         "far less padding; on by default")]
WarmupRatio = Annotated[Optional[float], typer.Option("--warmup-ratio", help="Share of the steps spent warming up the lr.")]
Temperature = Annotated[Optional[float], typer.Option("--temperature", help="Temperature of the soft logits loss.")]
ScaleLr = Annotated[Optional[float], typer.Option("--scale-lr", help="Learning rate of activation scales (BiT: 1e-4).")]
HiddenLayers = Annotated[Optional[str], typer.Option(
    "--hidden-layers", help="Hidden states matched by --distill hidden: all | last | comma list (0 = embeddings)")]
Stages = Annotated[Optional[str], typer.Option(
    "--stages", help="Multi-step distillation, e.g. w1a4,w1a2,w1a1: each finished student initialises and teaches "
                     "the next; the last stage is the recipe's own")]
Augment = Annotated[Optional[int], typer.Option(
    "--augment", min=0, help="Augmented copies per training row (teacher-embedding neighbours; soft labels only)")]
AugmentTopK = Annotated[Optional[int], typer.Option("--augment-top-k", min=1, help="Neighbours to choose from per piece.")]
AugmentProb = Annotated[Optional[float], typer.Option("--augment-prob", help="Probability of replacing each piece.")]
