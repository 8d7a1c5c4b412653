"""Option aliases shared by every command, so each flag means the same thing everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

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

# --- The data options: one set, shared by finetune, binarize, ensemble, eval, report and predict -------------
# `@data_options` adds them to a command's signature and hands the command one `DataOptions` as `data`.
def _given(kind, *flags: str, help: str, **extra):
    """An option of `kind` that stays None unless typed: a data option only acts when given."""
    return Annotated[Optional[kind], typer.Option(*flags, help=help, **extra)]


_FORMATS = ".csv, .tsv, .json, .jsonl or .parquet"
DATA_OPTIONS = {
    "task": _given(str, "--task", "-t", help="GLUE preset: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli "
                                             "(default: what the checkpoint records)."),
    "data_dir": DataDir,
    "train_file": _given(Path, "--train-file", help=f"Your training rows: {_FORMATS}."),
    "validation_file": _given(Path, "--validation-file", help="Your dev rows (scored by every command), same formats."),
    "dataset": _given(str, "--dataset", help="A hub dataset id, or a directory written by Dataset(Dict).save_to_disk."),
    "dataset_config": _given(str, "--dataset-config", help="The dataset's configuration name."),
    "train_split": _given(str, "--train-split", help="Dataset split to train on (default train)."),
    "validation_split": _given(str, "--validation-split", help="Dataset split to score (default validation, else test)."),
    "text_columns": _given(List[str], "--text-column", metavar="COL",
                           help="Text column; twice for sentence pairs (default: text, sentence or sentence1+sentence2)."),
    "label_column": _given(str, "--label-column", help="Label column (default: label or labels)."),
    "label_order": _given(str, "--label-order",
                          help="Label names in id order, e.g. neg,pos (needed when the model's names are LABEL_0, ...)."),
    "metrics": _given(str, "--metric",
                      help="Comma list of accuracy, f1, macro_f1, matthews, pearson, spearman; the first is the main one."),
    "revision": _given(str, "--revision",
                       help="Hub revision (branch, tag or commit) of a hub model / dataset; $HF_TOKEN for private ones."),
    "force": Annotated[bool, typer.Option(
        "--force", help="Score a checkpoint on data it was not made for (another task, other labels).")],
}
_DATA_DEFAULTS = {name: (False if name == "force" else None) for name in DATA_OPTIONS}


def _option_group(options: dict, defaults: dict, param: str, build, *, at_end: bool):
    """A decorator that gives a command the `options` (name -> annotation) in place of its parameter
    `param` (or after its last parameter, `at_end`) and hands it `build(values)` as that one argument."""
    import functools
    import inspect

    def decorate(command):
        sig = inspect.signature(command, eval_str=True)
        params = list(sig.parameters.values())
        at = len(params) if at_end else [p.name for p in params].index(param)
        kind = inspect.Parameter.KEYWORD_ONLY if at_end else inspect.Parameter.POSITIONAL_OR_KEYWORD
        group = [inspect.Parameter(name, kind, default=defaults[name], annotation=annotation)
                 for name, annotation in options.items()]
        kept = [p for p in params if p.name != param]
        at = min(at, len(kept))

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            values = {name: kwargs.pop(name, defaults[name]) for name in options}
            return command(*args, **{param: build(values)}, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=kept[:at] + group + kept[at:])
        wrapper.__annotations__ = {**{p.name: p.annotation for p in kept}, **options}
        return wrapper

    return decorate


def _data_options(values: dict):
    from bebert_cli.dataspec import DataOptions

    return DataOptions(**{**values, "text_columns": tuple(values["text_columns"] or ())})


# `@data_options`: the command receives the shared data options as one `data: DataOptions` argument.
data_options = _option_group(DATA_OPTIONS, _DATA_DEFAULTS, "data", _data_options, at_end=True)

# --- The quantization overrides of a recipe (binarize, ensemble), None meaning "the recipe's value" ----------
QUANT_OPTIONS = {"weight_bits": WeightBits, "activation_bits": ActivationBits, "embedding_bits": EmbeddingBits,
                 "embeddings": Embeddings, "hash_ngrams": HashNgrams, "hash_seed": HashSeed,
                 "hash_projection": HashProjection, "activation_mode": ActivationMode, "attention": Attention}
# `@quant_options`: they take the place of the command's `quant` parameter, which receives them as one dict
# (for `resolve_recipe(..., **quant)`).
quant_options = _option_group(QUANT_OPTIONS, dict.fromkeys(QUANT_OPTIONS), "quant", dict, at_end=False)


TextColumns = DATA_OPTIONS["text_columns"]
