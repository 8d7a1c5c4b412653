"""The GLUE task registry: what each task's inputs, labels and metrics are.

One `GlueTask` per task; everything else (data loading, heads, metrics, reports) reads it
instead of special-casing task names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bebert_cli.errors import UsageError


@dataclass(frozen=True)
class TsvLayout:
    """Where the columns live in the original GLUE TSV files (they differ per task and split)."""

    header: bool
    text_columns: tuple[str | int, ...]  # column names, or indices for header-less files
    label_column: str | int | None  # None: the split has no labels (test)
    min_columns: int = 0  # rows with fewer fields are malformed


class LabelledTask:
    """What every task-like spec derives from its `labels`, `metrics` and `text_fields` (GlueTask, DataSpec)."""

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2


@dataclass(frozen=True)
class GlueTask(LabelledTask):
    name: str
    glue_dir: str  # directory name in the GLUE download (SST-2, CoLA, ...)
    hub_config: str  # config name of the `nyu-mll/glue` dataset on the hub
    text_fields: tuple[str, ...]  # field names in the hub dataset (and in our normalised rows)
    labels: tuple[str, ...]  # label names in id order; empty for regression
    metrics: tuple[str, ...]  # the first one is the task's main metric
    dev_splits: tuple[str, ...] = ("validation",)
    tsv: dict[str, TsvLayout] = field(default_factory=dict)  # split file stem -> layout
    split_files: dict[str, str] = field(default_factory=dict)  # our split name -> TSV file stem



def _layouts(train: TsvLayout, dev: TsvLayout, **extra: TsvLayout) -> dict[str, TsvLayout]:
    return {"train": train, "dev": dev, **extra}


TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "cola", "CoLA", "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation", "accuracy"),
        # CoLA train/dev have no header: source, label, original label, sentence.
        tsv=_layouts(TsvLayout(False, (3,), 1, 4), TsvLayout(False, (3,), 1, 4)),
        split_files={"train": "train", "validation": "dev"},
    ),
    "sst2": GlueTask(
        "sst2", "SST-2", "sst2", ("sentence",), ("negative", "positive"), ("accuracy",),
        tsv=_layouts(TsvLayout(True, ("sentence",), "label"), TsvLayout(True, ("sentence",), "label")),
        split_files={"train": "train", "validation": "dev"},
    ),
    "mrpc": GlueTask(
        "mrpc", "MRPC", "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"),
        tsv=_layouts(TsvLayout(True, ("#1 String", "#2 String"), "Quality"), TsvLayout(True, ("#1 String", "#2 String"), "Quality")),
        split_files={"train": "train", "validation": "dev"},
    ),
    "stsb": GlueTask(
        "stsb", "STS-B", "stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman"),
        tsv=_layouts(TsvLayout(True, ("sentence1", "sentence2"), "score"), TsvLayout(True, ("sentence1", "sentence2"), "score")),
        split_files={"train": "train", "validation": "dev"},
    ),
    "qqp": GlueTask(
        "qqp", "QQP", "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy"),
        tsv=_layouts(TsvLayout(True, ("question1", "question2"), "is_duplicate"), TsvLayout(True, ("question1", "question2"), "is_duplicate")),
        split_files={"train": "train", "validation": "dev"},
    ),
    "mnli": GlueTask(
        "mnli", "MNLI", "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
        dev_splits=("validation_matched", "validation_mismatched"),
        tsv=_layouts(
            TsvLayout(True, ("sentence1", "sentence2"), "gold_label"),
            TsvLayout(True, ("sentence1", "sentence2"), "gold_label"),
            dev_matched=TsvLayout(True, ("sentence1", "sentence2"), "gold_label"),
            dev_mismatched=TsvLayout(True, ("sentence1", "sentence2"), "gold_label"),
        ),
        split_files={"train": "train", "validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched"},
    ),
    "qnli": GlueTask(
        "qnli", "QNLI", "qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",),
        tsv=_layouts(TsvLayout(True, ("question", "sentence"), "label"), TsvLayout(True, ("question", "sentence"), "label")),
        split_files={"train": "train", "validation": "dev"},
    ),
    "rte": GlueTask(
        "rte", "RTE", "rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",),
        tsv=_layouts(TsvLayout(True, ("sentence1", "sentence2"), "label"), TsvLayout(True, ("sentence1", "sentence2"), "label")),
        split_files={"train": "train", "validation": "dev"},
    ),
    "wnli": GlueTask(
        "wnli", "WNLI", "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",),
        tsv=_layouts(TsvLayout(True, ("sentence1", "sentence2"), "label"), TsvLayout(True, ("sentence1", "sentence2"), "label")),
        split_files={"train": "train", "validation": "dev"},
    ),
}

# Common spellings users type; all map to the registry key.
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def get_task(name: str) -> GlueTask:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise UsageError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


def resolve_split(task: GlueTask, split: str) -> list[str]:
    """Map a user's split name to the task's split names ('dev' -> both MNLI dev sets)."""
    s = split.lower()
    if s in ("dev", "validation"):
        return list(task.dev_splits)
    if s in ("validation_matched", "dev_matched", "matched") and task.name == "mnli":
        return ["validation_matched"]
    if s in ("validation_mismatched", "dev_mismatched", "mismatched") and task.name == "mnli":
        return ["validation_mismatched"]
    if s == "train":
        return ["train"]
    raise UsageError(f"unknown split {split!r} for task {task.name}; use train or dev")
