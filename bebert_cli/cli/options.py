"""Option aliases shared by every command, so each flag means the same thing everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from bebert_cli.cli import choices

OutputDir = Annotated[Path, typer.Option("--output", "-o", help="Output directory (written atomically).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.")]
DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="BEBERT_DATA_DIR", help="GLUE directory (SST-2/train.tsv, ...); default: the hub."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout; logs go to stderr.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, logs or warnings (errors still print).")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Batch size (global, across processes).")]
EvalBatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Evaluation batch size.")]
MaxSeqLength = Annotated[Optional[int], typer.Option("--max-seq-length", min=8, help="Truncate inputs to this many tokens.")]
# For eval and predict: None = the length the checkpoint was made at.
CheckpointMaxSeqLength = Annotated[Optional[int], typer.Option(
    "--max-seq-length", min=8, show_default="the checkpoint's, else 128", help="Truncate inputs to this many tokens.")]
MaxTrainSamples = Annotated[Optional[int], typer.Option(
    "--max-train-samples", min=1, show_default="every row", help="Train on a seeded random subset.")]
MaxSamples = Annotated[Optional[int], typer.Option(
    "--max-samples", min=1, show_default="every row", help="Evaluate the first N rows only.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (data order, initialisation, dropout).")]
Epochs = Annotated[float, typer.Option("--epochs", min=0.01, help="Training epochs (fractions allowed).")]
Lr = Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (linear warm-up and decay).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its saved state.")]
SaveEvery = Annotated[int, typer.Option("--save-every", min=1, help="Steps between resumable checkpoints.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Allow custom model code (off by default).")]
Cpu = Annotated[bool, typer.Option("--cpu", help="Force the CPU even when an accelerator is present.")]

# Recipe overrides (binarize, ensemble): None means "the recipe's value", which help shows per preset.
def recipe_default(field: str) -> str:
    """What `[default: ...]` shows for a recipe override: the presets' own values, named per recipe where
    they differ (`per recipe: bibert 5e-4, bit 5e-4, w1a4 2e-4, w1a8 2e-4`)."""
    from bebert_cli.quant.recipes import PRESETS

    values = {name: _shown(getattr(preset, field)) for name, preset in PRESETS.items()}
    if len(set(values.values())) == 1:
        return f"{next(iter(values.values()))} in every recipe"
    return "per recipe: " + ", ".join(f"{name} {value}" for name, value in values.items())


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if value is None:
        return "none"
    if isinstance(value, float) and 0 < abs(value) < 0.01:
        mantissa, _, exponent = f"{value:.0e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _override(*decls, help: str, field: str, **kwargs):
    return typer.Option(*decls, help=help, show_default=recipe_default(field), **kwargs)


RecipeChoice = Annotated[choices.RecipeName, typer.Option(
    "--recipe", case_sensitive=False,
    help="What is binarized and how (README, Recipes): bibert and bit are fully binary 1-1-1 (weights, "
         "embeddings, activations); w1a4 and w1a8 keep 4- or 8-bit activations. Default w1a4: the most accurate "
         "in the README's budget (8,000 SST-2 sentences: 0.782 dev accuracy, w1a8 0.778, 1-1-1 near chance); "
         "for full-length runs w1a8 (0.852 vs 0.831 after one epoch, docs/results.md).")]
WeightBits = Annotated[Optional[int], _override("--weight-bits", field="weight_bits", help="1 (binary) or 32 (full-precision encoder).")]
ActivationBits = Annotated[Optional[int], _override(
    "--activation-bits", field="activation_bits", help="1, 2..8 (LSQ) or 32.")]
EmbeddingBits = Annotated[Optional[int], _override(
    "--embedding-bits", field="embedding_bits", help="1 (binary table) or 32; a shorthand for --embeddings binary|table.")]
Embeddings = Annotated[Optional[choices.Embeddings], _override(
    "--embeddings", field="embeddings", case_sensitive=False,
    help="Word embeddings: table (full precision), binary (1-bit rows) or hash (EELBERT: computed, nothing stored).")]
HashNgrams = Annotated[Optional[str], _override(
    "--hash-ngrams", field="hash_ngrams", help="Character n-gram sizes for --embeddings hash, e.g. 3 or 2,3,4.")]
HashSeed = Annotated[Optional[int], _override("--hash-seed", field="hash_seed", help="Seed of the hash family (0 to 2**64 - 1).")]
HashProjection = Annotated[Optional[bool], _override(
    "--hash-projection/--no-hash-projection", field="hash_projection",
    help="A trainable full-precision projection after the hash.")]
ActivationMode = Annotated[Optional[choices.ActivationMode], _override(
    "--activation-mode", field="activation_mode", case_sensitive=False,
    help="1-bit activations: sign (BiBERT) or elastic (BiT: learned scale and shift).")]
Attention = Annotated[Optional[choices.Attention], _override(
    "--attention", field="attention", case_sensitive=False,
    help="bi (Bi-Attention, 1-bit activations only) or softmax.")]
Distill = Annotated[Optional[str], _override(
    "--distill", field="distill", autocompletion=choices.comma_list_completer(("logits", "hidden", "dmd", "none")),
    help="Distillation terms: a comma list of logits, hidden, dmd, or none (hard labels only).")]
RecipeEpochs = Annotated[Optional[float], _override("--epochs", field="epochs", min=0.01, help="Training epochs (fractions allowed).")]
RecipeLr = Annotated[Optional[float], _override("--lr", field="lr", min=0.0, help="Peak learning rate (linear warm-up and decay).")]
RecipeBatchSize = Annotated[Optional[int], _override(
    "--batch-size", field="batch_size", min=1, help="Batch size (global, across processes).")]
RecipeMaxSeqLength = Annotated[Optional[int], _override(
    "--max-seq-length", field="max_seq_length", min=8, help="Truncate inputs to this many tokens.")]
RecipeSeed = Annotated[Optional[int], _override(
    "--seed", field="seed", help="Random seed (data order, student initialisation, dropout).")]
FpDtype = Annotated[Optional[choices.FpDtype], _override(
    "--fp-dtype", field="fp_dtype", case_sensitive=False, help="Storage of the tensors kept in full precision.")]
MixedPrecision = Annotated[choices.MixedPrecisionMode, typer.Option(
    "--mixed-precision", case_sensitive=False,
    help="bf16 autocast for training only: auto = bf16 only where the CPU/GPU computes it natively, no = fp32.")]
EvalBatchSizeOpt = Annotated[int, typer.Option("--eval-batch-size", min=1, help="Evaluation batch size.")]

# Training levers (binarize; --group-by-length also finetune and ensemble): None = the recipe's value.
GroupByLength = Annotated[Optional[bool], _override(
    "--group-by-length/--no-group-by-length", field="group_by_length",
    help="Batches of similar lengths (sorted within mega-batches of 50 batches, batch order shuffled): "
         "far less padding.")]
WarmupRatio = Annotated[Optional[float], _override(
    "--warmup-ratio", field="warmup_ratio", help="Share of the steps spent warming up the lr.")]
Temperature = Annotated[Optional[float], _override(
    "--temperature", field="temperature", help="Temperature of the soft logits loss.")]
ScaleLr = Annotated[Optional[float], typer.Option(
    "--scale-lr", show_default="--lr", help="Learning rate of activation scales (BiT: 1e-4).")]
HiddenLayers = Annotated[Optional[str], _override(
    "--hidden-layers", field="hidden_layers",
    help="Hidden states matched by --distill hidden: all | last | comma list (0 = embeddings).")]
Stages = Annotated[Optional[str], typer.Option(
    "--stages", show_default="one stage",
    help="Multi-step distillation, e.g. w1a4,w1a2,w1a1: each finished student initialises and teaches "
         "the next; the last stage is the recipe's own.")]
Augment = Annotated[Optional[int], _override(
    "--augment", field="augment", min=0,
    help="Augmented copies per training row (teacher-embedding neighbours; soft labels only).")]
AugmentTopK = Annotated[Optional[int], _override(
    "--augment-top-k", field="augment_top_k", min=1, help="Neighbours to choose from per piece.")]
AugmentProb = Annotated[Optional[float], _override(
    "--augment-prob", field="augment_prob", help="Probability of replacing each piece.")]
StudentLayers = Annotated[Optional[int], typer.Option(
    "--student-layers", show_default="the teacher's", help="A smaller student: this many layers (random init).")]
StudentWidth = Annotated[Optional[int], typer.Option(
    "--student-width", show_default="the teacher's",
    help="A smaller student: this hidden width, a multiple of 32 (random init).")]

# --- The data options: one set, shared by finetune, binarize, ensemble, eval, report and predict -------------
# `@data_options` adds them to a command's signature and hands the command one `DataOptions` as `data`.
def _given(kind, *flags: str, help: str, **extra):
    """An option of `kind` that stays None unless typed: a data option only acts when given."""
    return Annotated[Optional[kind], typer.Option(*flags, help=help, **extra)]


_FORMATS = ".csv, .tsv, .json, .jsonl or .parquet"
METRIC_NAMES = ("accuracy", "f1", "macro_f1", "matthews", "pearson", "spearman")  # metrics.METRICS, without numpy
DATA_OPTIONS = {
    "task": _given(str, "--task", "-t", autocompletion=choices.glue_tasks, help="GLUE preset: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli "
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


def examples(*lines: str) -> str:
    """A command's `Examples:` epilog; click keeps the lines as written (the \\b marker stops rewrapping)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
