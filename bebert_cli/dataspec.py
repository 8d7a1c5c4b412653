"""What a classifier reads and is scored on: one `DataSpec` for a GLUE preset, data files or a dataset.

A spec names the source, the text column(s), the label column, the label names *in the model's id
order*, the problem type (regression when there are no label names), the metrics (the first is the
main one) and the maximum length. Every command resolves the user's options into a spec here, in one
place, and saves it in `bebert_run.json` ("data"), so `bebert eval out/` needs no `--task` later.

`DataSpec` offers the attributes the pipeline reads from a `GlueTask` (name, text_fields, labels,
metrics, num_labels, is_regression, main_metric, dev_splits), so training, evaluation, distillation and
ensembles take either.

Label order comes from the checkpoint when its `id2label` has real names: data labels (strings, or a
hub dataset's ClassLabel names, or a GLUE task's names) are mapped to ids *by name*. Integer labels are
ids. A model with generic LABEL_0.. names cannot be checked against string labels: `--label-order`
states the order, or it is an error.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from bebert_cli.errors import CheckpointError, DataError, ModelError, UsageError
from bebert_cli.tasks import TASKS, GlueTask, LabelledTask, get_task

RUN_FILE = "bebert_run.json"  # as pipeline.RUN_FILE (this module sits below pipeline)
GENERIC_LABEL = re.compile(r"LABEL_[0-9]+")
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
TEXT_GUESSES = (("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"), ("text",), ("sentence",))
LABEL_GUESSES = ("label", "labels")
METRIC_ALIASES = {"matthews": "matthews_correlation", "mcc": "matthews_correlation", "macro-f1": "macro_f1"}
CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "matthews_correlation")
REGRESSION_METRICS = ("pearson", "spearman")


@dataclass(frozen=True)
class DataOptions:
    """The data options as typed (`cli.options.data_options`); None means 'not given'."""

    task: str | None = None
    data_dir: Path | None = None
    train_file: Path | None = None
    validation_file: Path | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str | None = None
    validation_split: str | None = None
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    label_order: str | None = None
    metrics: str | None = None
    revision: str | None = None
    force: bool = False

    @property
    def has_files(self) -> bool:
        return self.train_file is not None or self.validation_file is not None

    @property
    def custom(self) -> bool:
        return self.has_files or self.dataset is not None

    def check(self) -> None:
        """Contradictory options are usage errors (exit 2), before anything is read."""
        if self.task and self.custom:
            raise UsageError("--task names a GLUE preset; it cannot be combined with --train-file / --validation-file / --dataset")
        if self.has_files and self.dataset is not None:
            raise UsageError("give data files (--train-file / --validation-file) or --dataset, not both")
        if self.dataset is None and (self.dataset_config or self.train_split or self.validation_split):
            raise UsageError("--dataset-config, --train-split and --validation-split need --dataset")
        if len(self.text_columns) > 2:
            raise UsageError("--text-column is given once (single texts) or twice (pairs), not "
                             f"{len(self.text_columns)} times")
        if len(set(self.text_columns)) != len(self.text_columns):
            raise UsageError("--text-column names the same column twice")
        if self.label_column is not None and self.label_column in self.text_columns:
            raise UsageError(f"column {self.label_column!r} cannot be both --text-column and --label-column")
        if self.task and (self.text_columns or self.label_column):
            raise UsageError("--text-column / --label-column describe your own files; a GLUE --task has its own columns")


@dataclass(frozen=True)
class DataSpec(LabelledTask):
    name: str  # GLUE task name, or the data's own name (file stem / dataset name)
    source: str  # glue | files | dataset
    text_fields: tuple[str, ...]  # the columns fed to the tokenizer (one, or a pair)
    labels: tuple[str, ...]  # label names in the model's id order; empty for regression
    metrics: tuple[str, ...]  # the first one is the main metric (--fail-under)
    label_column: str = "label"
    train_file: str | None = None
    validation_file: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    revision: str | None = None
    data_dir: str | None = None  # GLUE only: the TSV directory used (None: the hub)
    max_seq_length: int | None = None
    label_kind: str = "int"  # how the data writes labels: int (ids) | str (names) | float (scores)
    data_label_names: tuple[str, ...] = ()  # a dataset's ClassLabel names, in its own id order
    notes: tuple[str, ...] = field(default=(), compare=False)  # what resolution decided, for the log

    # --- the GlueTask interface -------------------------------------------------------------------
    @property
    def glue(self) -> GlueTask | None:
        return TASKS[self.name] if self.source == "glue" else None

    @property
    def problem_type(self) -> str:
        return "regression" if self.is_regression else "single_label_classification"

    @property
    def dev_splits(self) -> tuple[str, ...]:
        return self.glue.dev_splits if self.glue is not None else ("validation",)

    # --- saving -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("notes")
        d["problem_type"] = self.problem_type
        d["text_fields"], d["labels"], d["metrics"] = list(self.text_fields), list(self.labels), list(self.metrics)
        d["data_label_names"] = list(self.data_label_names)
        return d

    @classmethod
    def from_dict(cls, d, where: str = "bebert_run.json") -> "DataSpec":
        """A saved spec, checked field by field (a checkpoint's JSON is untrusted input)."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: 'data' must be an object")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name == "notes" or f.name not in d:
                continue
            v = d[f.name]
            if f.name in ("text_fields", "labels", "metrics", "data_label_names"):
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise CheckpointError(f"{where}: data.{f.name} must be a list of strings")
                v = tuple(v)
            elif f.name == "max_seq_length":
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                    raise CheckpointError(f"{where}: data.max_seq_length must be a positive integer")
            elif v is not None and not isinstance(v, str):
                raise CheckpointError(f"{where}: data.{f.name} must be a string")
            kw[f.name] = v
        for required in ("name", "source", "text_fields", "metrics"):
            if required not in kw:
                raise CheckpointError(f"{where}: data.{required} is missing")
        if kw["source"] not in ("glue", "files", "dataset") or (kw["source"] == "glue" and kw["name"] not in TASKS):
            raise CheckpointError(f"{where}: data names an unknown source {kw['source']!r} / task {kw['name']!r}")
        if not 1 <= len(kw["text_fields"]) <= 2 or not kw["metrics"]:
            raise CheckpointError(f"{where}: data needs one or two text fields and at least one metric")
        return cls(**kw)

    def describe(self) -> str:
        if self.source == "glue":
            where = f"GLUE {self.name} ({self.data_dir or 'hub'})"
        elif self.source == "files":
            where = ", ".join(f"{k} {v}" for k, v in (("train", self.train_file), ("validation", self.validation_file)) if v)
        else:
            where = f"dataset {self.dataset}" + (f" ({self.dataset_config})" if self.dataset_config else "") + \
                    f", splits {self.train_split} / {self.validation_split}"
        labels = "regression" if self.is_regression else f"labels in model order {list(self.labels)}"
        return (f"Data: {where}; text column(s) {list(self.text_fields)}, label column {self.label_column!r}; "
                f"{labels}; metrics {', '.join(self.metrics)}")


# ------------------------------------------------------------------------------------------ metrics


def parse_metrics(text: str | None, *, regression: bool, num_labels: int) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = []
    for raw in text.split(","):
        name = METRIC_ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not name:
            continue
        allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
        if name not in CLASSIFICATION_METRICS + REGRESSION_METRICS:
            raise UsageError(f"unknown metric {raw.strip()!r}; choose from accuracy, f1, macro_f1, matthews, pearson, spearman")
        if name not in allowed:
            kind = "a regression" if regression else "a classification"
            raise UsageError(f"--metric {raw.strip()} does not apply to {kind} problem; use {', '.join(allowed)}")
        if name == "f1" and num_labels != 2:
            raise UsageError(f"--metric f1 is the binary F1 of label 1; with {num_labels} classes use macro_f1")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("--metric is empty")
    return tuple(names)


def default_metrics(*, regression: bool, num_labels: int) -> tuple[str, ...]:
    if regression:
        return REGRESSION_METRICS
    return ("accuracy", "f1", "macro_f1") if num_labels == 2 else ("accuracy", "macro_f1")


# ------------------------------------------------------------------------------------------- labels


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def model_label_names(config) -> tuple[str, ...] | None:
    """The checkpoint's label names in id order, or None when they are generic (LABEL_0, ...) or absent."""
    if config is None:
        return None
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)) or 0)
    try:
        names = tuple(str(id2label[i] if i in id2label else id2label[str(i)]) for i in range(n))
    except KeyError:
        return None
    if not names or all(GENERIC_LABEL.fullmatch(x) for x in names):
        return None
    if n == 1:
        return None  # a regression head's one output ("score", "LABEL_0"): no names to order
    return names


def _label_order(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(x.strip() for x in text.split(","))
    if not all(names) or len(set(names)) != len(names) or len(names) < 2:
        raise UsageError("--label-order is a comma list of two or more distinct label names, e.g. neg,pos")
    return names


def _glue_order(task: GlueTask, config, opts: DataOptions, checkpoint: str) -> tuple[tuple[str, ...], list[str]]:
    """A GLUE preset's labels in the checkpoint's id order (map by name), or refuse when they are other labels."""
    notes = []
    if task.is_regression:
        return (), notes
    stated = _label_order(opts.label_order)
    if stated is not None:
        if sorted(map(_norm, stated)) != sorted(map(_norm, task.labels)):
            raise UsageError(f"--label-order {','.join(stated)} is not an order of the {task.name} labels {list(task.labels)}")
        by_norm = {_norm(x): x for x in task.labels}
        return tuple(by_norm[_norm(x)] for x in stated), notes
    names = model_label_names(config)
    if names is None or len(names) != task.num_labels:
        return task.labels, notes  # generic names: ids are trusted (the count is checked by the caller)
    by_norm = {_norm(x): x for x in task.labels}
    if sorted(map(_norm, names)) == sorted(by_norm):
        order = tuple(by_norm[_norm(x)] for x in names)
        if order != task.labels:
            notes.append(f"{checkpoint} orders the {task.name} labels as {list(names)}; mapped by name")
        return order, notes
    if opts.force:
        notes.append(f"{checkpoint}'s labels {list(names)} are not the {task.name} labels {list(task.labels)}; "
                     "--force: scored by id")
        return task.labels, notes
    raise ModelError(f"{checkpoint}'s labels {list(names)} are not the {task.name} labels {list(task.labels)}; "
                     "it was trained for other data (pass --force to score it by id anyway)")


def label_kind(values, feature, where: str) -> tuple[str, list, tuple[str, ...]]:
    """(kind, values, ClassLabel names) for a label column: int | float | str; missing or mixed is an error."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        bad = [i for i, v in enumerate(values) if v is None or v < 0]
        if bad:
            raise DataError(f"{where}: row {bad[0] + 1} has no label ({values[bad[0]]!r}; a test split without labels?)")
        return "int", list(values), tuple(feature.names)
    out, kinds = [], set()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{where}: row {i + 1} has no label")
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, str):
            s = v.strip()
            v = int(s) if _INT.fullmatch(s) else float(s) if _FLOAT.fullmatch(s) else s
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            raise DataError(f"{where}: row {i + 1} has a non-finite label")
        if isinstance(v, float) and v.is_integer() and not isinstance(values[i], float):
            v = int(v)
        kinds.add("str" if isinstance(v, str) else "float" if isinstance(v, float) else "int" if isinstance(v, int) else "bad")
        if "bad" in kinds:
            raise DataError(f"{where}: row {i + 1} has a label of type {type(values[i]).__name__} ({values[i]!r:.40})")
        out.append(v)
    if kinds == {"int", "float"}:
        return "float", [float(x) for x in out], ()
    if len(kinds) > 1:
        num = next(repr(x) for x in out if not isinstance(x, str))
        name = next(repr(x) for x in out if isinstance(x, str))
        raise DataError(f"{where}: the label column mixes numbers ({num}) and names ({name}); use one kind")
    return kinds.pop(), out, ()


# ------------------------------------------------------------------------------------- resolution


def data_name(opts: DataOptions) -> str:
    """The name a spec made from these files / this dataset gets (table titles, eval_results.json 'task')."""
    if opts.dataset is not None:
        base = Path(str(opts.dataset).rstrip("/")).name or str(opts.dataset)
        return f"{base}-{opts.dataset_config}" if opts.dataset_config else base
    p = Path(opts.train_file or opts.validation_file).expanduser().resolve()
    # train.csv / dev.jsonl name a split, not the data: then the directory holding them names it;
    # tickets-train.csv / tickets_dev.csv name the data before the split
    if p.stem.lower() in _SPLIT_WORDS and p.parent.name:
        return p.parent.name
    head, sep, tail = p.stem.rpartition("-") if "-" in p.stem else p.stem.rpartition("_")
    return head if sep and head and tail.lower() in _SPLIT_WORDS else p.stem


_SPLIT_WORDS = {"train", "training", "dev", "valid", "validation", "val", "eval", "test", "data", "rows"}


def _pick_columns(columns: list[str], opts: DataOptions, recorded: DataSpec | None, where: str):
    if opts.text_columns:
        text = tuple(opts.text_columns)
    elif recorded is not None and recorded.source != "glue" and all(c in columns for c in recorded.text_fields):
        text = recorded.text_fields
    elif recorded is not None and all(c in columns for c in recorded.text_fields):
        text = recorded.text_fields  # a GLUE-made model on files with the GLUE column names
    else:
        text = next((g for g in TEXT_GUESSES if all(c in columns for c in g)), None)
        if text is None:
            raise DataError(f"{where}: no text column found (looked for text, sentence, sentence1+sentence2); "
                            f"its columns are {columns}; pass --text-column")
    if opts.label_column is not None:
        label = opts.label_column
    elif recorded is not None and recorded.source != "glue" and recorded.label_column in columns:
        label = recorded.label_column
    else:
        label = next((g for g in LABEL_GUESSES if g in columns), None)
        if label is None:
            raise DataError(f"{where}: no label column found (looked for label, labels); its columns are {columns}; "
                            "pass --label-column")
    for c in (*text, label):
        if c not in columns:
            raise DataError(f"{where}: no column {c!r}; its columns are {columns}")
    return text, label


def _source_of(opts: DataOptions, recorded: DataSpec | None) -> DataOptions:
    """The user's options, with the checkpoint's recorded source filling in when none is given."""
    if recorded is not None and recorded.source == "files" and opts.has_files and not opts.task:
        # e.g. `binarize out/ --validation-file new.csv`: the file not given is the one it was made with
        return dataclasses.replace(
            opts, train_file=opts.train_file or (Path(recorded.train_file) if recorded.train_file else None),
            validation_file=opts.validation_file or (Path(recorded.validation_file) if recorded.validation_file else None))
    if opts.task or opts.custom or recorded is None:
        return opts
    if recorded.source == "glue":
        return dataclasses.replace(opts, task=recorded.name,
                                   data_dir=opts.data_dir or (Path(recorded.data_dir) if recorded.data_dir else None))
    if recorded.source == "files":
        return dataclasses.replace(opts, train_file=Path(recorded.train_file) if recorded.train_file else None,
                                   validation_file=Path(recorded.validation_file) if recorded.validation_file else None)
    return dataclasses.replace(opts, dataset=recorded.dataset, dataset_config=opts.dataset_config or recorded.dataset_config,
                               train_split=opts.train_split or recorded.train_split,
                               validation_split=opts.validation_split or recorded.validation_split,
                               revision=opts.revision or recorded.revision)


def recorded_spec(checkpoint) -> DataSpec | None:
    """The spec a checkpoint was made with (`bebert_run.json` "data", or the "task" of older runs)."""
    if checkpoint is None:
        return None
    import json

    f = Path(checkpoint) / RUN_FILE
    try:
        info = json.loads(f.read_text()) if f.is_file() else {}
    except (ValueError, OSError, RecursionError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    if "data" in info:
        return DataSpec.from_dict(info["data"], f"{checkpoint}/bebert_run.json")
    task = info.get("task")
    if isinstance(task, str) and task in TASKS:
        t = TASKS[task]
        return DataSpec(t.name, "glue", t.text_fields, t.labels, t.metrics)
    return None


def resolve(opts: DataOptions, *, config=None, checkpoint: str | None = None, new_head: bool = False,
            need_train: bool = False, need_validation: bool = True) -> DataSpec:
    """The spec for these options and this checkpoint (config: the model's, None when there is none yet).

    new_head: the model gets a fresh head (finetune), so the data decides labels and their order;
    otherwise the checkpoint's head does, and the data must fit it.
    """
    opts.check()
    recorded = recorded_spec(checkpoint) if checkpoint is not None and Path(str(checkpoint)).expanduser().is_dir() else None
    src = _source_of(opts, recorded)
    if src.task:
        spec = _resolve_glue(src, config=config, checkpoint=checkpoint, new_head=new_head)
    elif not src.custom:
        where = f"{checkpoint} does not record the data it was made for; " if checkpoint else ""
        raise UsageError(f"{where}give --task (a GLUE preset), --train-file / --validation-file, or --dataset")
    else:
        spec = _resolve_custom(src, recorded, config=config, checkpoint=checkpoint, new_head=new_head,
                               need_train=need_train, need_validation=need_validation)
    if config is not None and not new_head and int(config.num_labels) != spec.num_labels:
        raise ModelError(f"{checkpoint} has {config.num_labels} output label(s) but task {spec.name} needs {spec.num_labels}")
    # The checkpoint knows what it was made for: another task must be asked for on purpose.
    if recorded is not None and opts.task and not opts.force and recorded.name != spec.name:
        raise ModelError(f"{checkpoint} was made for {recorded.name} (its bebert_run.json says so), not {spec.name}; "
                         "pass --force to score it on another task anyway")
    return spec


def _resolve_glue(opts: DataOptions, *, config, checkpoint, new_head: bool) -> DataSpec:
    task = get_task(opts.task)
    if new_head:
        labels, notes = task.labels, []
    else:
        labels, notes = _glue_order(task, config, opts, str(checkpoint))
    metrics = parse_metrics(opts.metrics, regression=task.is_regression, num_labels=task.num_labels) or task.metrics
    from bebert_cli.data import resolve_data_dir

    ddir = resolve_data_dir(opts.data_dir)
    return DataSpec(task.name, "glue", task.text_fields, labels, metrics, data_dir=str(ddir.resolve()) if ddir else None,
                    notes=tuple(notes))


def _resolve_custom(opts: DataOptions, recorded: DataSpec | None, *, config, checkpoint, new_head: bool,
                    need_train: bool, need_validation: bool) -> DataSpec:
    from bebert_cli import datafiles

    notes: list[str] = []
    if opts.has_files:
        if need_train and opts.train_file is None:
            raise UsageError("training needs --train-file (and --validation-file for the dev evaluation)")
        if need_validation and opts.validation_file is None and not need_train:
            raise UsageError("give --validation-file to evaluate on (the rows to score)")
        if need_train and need_validation and opts.validation_file is None:
            raise UsageError("give --validation-file too: the dev rows every command reports on")
        srcs = {"train": opts.train_file if need_train else None, "validation": opts.validation_file if need_validation else None}
        raw = {k: datafiles.read_file(p) for k, p in srcs.items() if p is not None}
        wheres = {k: str(p) for k, p in srcs.items() if p is not None}
        train_split, validation_split = "train", "validation"
    else:
        train_split = opts.train_split or "train"
        validation_split = opts.validation_split
        splits = datafiles.split_names(opts.dataset, opts.dataset_config, opts.revision)
        if validation_split is None:
            validation_split = "validation"
            if splits is not None and "validation" not in splits:
                if "test" not in splits:
                    raise DataError(f"{opts.dataset} has no validation or test split (its splits are {splits}); "
                                    "pass --validation-split")
                validation_split = "test"
                notes.append(f"{opts.dataset} has no validation split: using its test split")
        want = {"train": train_split if need_train else None, "validation": validation_split if need_validation else None}
        raw = {k: datafiles.read_split(opts.dataset, opts.dataset_config, s, opts.revision) for k, s in want.items() if s}
        wheres = {k: f"{opts.dataset} [{s}]" for k, s in want.items() if s}
        if splits is None and need_train and need_validation:
            notes.append(f"{opts.dataset} is a single Dataset: the same rows serve as train and validation")

    first = next(iter(raw))
    text, label = _pick_columns(list(raw[first].column_names), opts, recorded, wheres[first])
    kinds = {}
    for k, ds in raw.items():
        _pick_columns(list(ds.column_names), dataclasses.replace(opts, text_columns=text, label_column=label), None, wheres[k])
        kinds[k] = label_kind(ds[label], ds.features.get(label), f"{wheres[k]} column {label!r}")
    kind_set = {kd for kd, _, _ in kinds.values()}
    if kind_set == {"int", "float"}:
        kind_set = {"float"}
    if len(kind_set) > 1:
        raise DataError(f"the label column {label!r} holds {' and '.join(sorted(kind_set))} labels in different splits")
    kind = kind_set.pop()
    class_names = next((cn for _, _, cn in kinds.values() if cn), ())
    values = {k: v for k, (_, v, _) in kinds.items()}

    regression = kind == "float" or (not new_head and config is not None and int(config.num_labels) == 1)
    if regression:
        if kind == "str":
            raise DataError(f"{checkpoint} has one output (a regression model) but the labels are names")
        labels: tuple[str, ...] = ()
        if not new_head and config is not None and int(config.num_labels) != 1:
            raise ModelError(f"the labels are scores (regression) but {checkpoint} has {config.num_labels} outputs")
    else:
        labels = _custom_order(kind, values, class_names, opts, recorded, config=config, checkpoint=checkpoint,
                               new_head=new_head, wheres=wheres, notes=notes)
    metrics = (parse_metrics(opts.metrics, regression=regression, num_labels=len(labels) or 1)
               or (recorded.metrics if recorded is not None and recorded.source != "glue" and opts.metrics is None
                   and _metrics_fit(recorded.metrics, regression, len(labels)) else None)
               or default_metrics(regression=regression, num_labels=len(labels)))
    name = recorded.name if recorded is not None and recorded.source != "glue" and not opts.task else data_name(opts)
    if opts.has_files:
        files = dict(train_file=str(Path(opts.train_file).expanduser().resolve()) if opts.train_file else None,
                     validation_file=str(Path(opts.validation_file).expanduser().resolve()) if opts.validation_file else None)
        if recorded is not None and recorded.source == "files":  # eval on new rows keeps where training read from
            files = {k: v or getattr(recorded, k) for k, v in files.items()}
        source = dict(source="files", **files)
    else:
        local = Path(opts.dataset).expanduser()
        source = dict(source="dataset", dataset=str(local.resolve()) if local.exists() else opts.dataset,
                      dataset_config=opts.dataset_config, train_split=train_split, validation_split=validation_split,
                      revision=opts.revision)
    return DataSpec(name, text_fields=text, labels=labels, metrics=metrics, label_column=label, label_kind=kind,
                    data_label_names=class_names, notes=tuple(notes),
                    max_seq_length=recorded.max_seq_length if recorded is not None else None, **source)


def _metrics_fit(metrics, regression: bool, num_labels: int) -> bool:
    try:
        parse_metrics(",".join(metrics), regression=regression, num_labels=num_labels or 1)
        return True
    except UsageError:
        return False


def _custom_order(kind, values: dict, class_names, opts, recorded, *, config, checkpoint, new_head, wheres, notes):
    """Label names in id order for string / integer / ClassLabel labels, checked against the model."""
    stated = _label_order(opts.label_order)
    model_names = None if new_head else model_label_names(config)
    n_out = None if new_head or config is None else int(config.num_labels)
    seen = {k: sorted(set(v), key=str) for k, v in values.items()}

    if kind == "str" or class_names:
        data_names = set(class_names) if class_names else {x for v in seen.values() for x in v}
        if stated is not None:
            order = stated
            if model_names is not None and list(map(_norm, stated)) != list(map(_norm, model_names)) and not opts.force:
                raise ModelError(f"--label-order {','.join(stated)} contradicts {checkpoint}'s own labels {list(model_names)} "
                                 "(pass --force to insist)")
        elif model_names is not None:
            order = model_names
        elif not new_head and recorded is not None and recorded.labels and n_out == len(recorded.labels):
            order = recorded.labels
        elif not new_head and class_names and n_out == len(class_names):
            order = tuple(class_names)  # generic model names: a dataset's ClassLabel ids are trusted, as ids are
        elif not new_head:
            shown = sorted(data_names, key=str)[:6]
            raise ModelError(f"{checkpoint} has generic label names (LABEL_0, ...): which of {shown} is which id cannot be "
                             "checked; state the order with --label-order " + ",".join(map(str, shown)))
        elif class_names:
            order = tuple(class_names)
        else:
            order = tuple(sorted(data_names))
            notes.append(f"label order (sorted): {list(order)}")
        if n_out is not None and len(order) != n_out:
            raise ModelError(f"{checkpoint} has {n_out} output label(s) but the labels are {len(order)}: {list(order)[:8]}")
        known = {_norm(x) for x in order}
        for k, v in seen.items():
            names = [class_names[i] for i in v] if class_names else v
            unknown = [x for x in names if _norm(x) not in known]
            if unknown:
                whose = f"{checkpoint}'s" if not new_head else "the"
                raise DataError(f"{wheres[k]}: label(s) {unknown[:5]} are not among {whose} labels {list(order)}")
        if new_head and "train" in seen and "validation" in seen:
            tr = {_norm(class_names[i] if class_names else i) for i in seen["train"]}
            extra = [x for x in seen["validation"] if _norm(class_names[x] if class_names else x) not in tr]
            if extra:
                raise DataError(f"{wheres['validation']}: label(s) {extra[:5]} never occur in the training data")
        return tuple(str(x) for x in order)

    # integer labels are ids
    top = max(max(v) for v in values.values() if v)
    low = min(min(v) for v in values.values() if v)
    if low < 0:
        raise DataError(f"label {low} is negative (a test split without labels?)")
    if stated is not None:
        order = stated
    elif model_names is not None:
        order = model_names
    elif n_out is not None:
        order = tuple(str(getattr(config, "id2label", {}).get(i, f"LABEL_{i}")) for i in range(n_out))
    else:
        order = tuple(str(i) for i in range(top + 1))
    if n_out is not None and len(order) != n_out:
        raise ModelError(f"{checkpoint} has {n_out} output label(s) but --label-order names {len(order)}")
    if top >= len(order):
        raise DataError(f"label {top} does not exist: {'the model has' if not new_head else 'there are'} "
                        f"{len(order)} labels {list(order)[:8]}")
    if len(order) < 2:
        raise DataError("the labels hold a single class; a classifier needs two or more (float labels mean regression)")
    if new_head and "train" in seen and "validation" in seen:
        extra = sorted(set(seen["validation"]) - set(seen["train"]))
        if extra:
            raise DataError(f"{wheres['validation']}: label(s) {extra[:5]} never occur in the training data")
    return order


# ------------------------------------------------------------------------------------------- rows


def load_rows(spec: DataSpec, split: str):
    """One split ("train" / "validation") as a `datasets.Dataset` of the text fields and an integer
    (or float) `label`, in the model's id order."""
    import datasets

    from bebert_cli import datafiles

    if spec.source == "files":
        path = spec.train_file if split == "train" else spec.validation_file
        if path is None:
            raise DataError(f"no {split} file in this data spec; pass --{'train' if split == 'train' else 'validation'}-file")
        ds, where = datafiles.read_file(path), str(path)
    else:
        name = spec.train_split if split == "train" else spec.validation_split
        ds, where = datafiles.read_split(spec.dataset, spec.dataset_config, name, spec.revision), f"{spec.dataset} [{name}]"
    _pick_columns(list(ds.column_names), DataOptions(text_columns=spec.text_fields, label_column=spec.label_column), None, where)
    columns = {}
    for c in spec.text_fields:
        texts = ds[c]
        for i, t in enumerate(texts):
            if t is None or (isinstance(t, float) and t != t) or not str(t).strip():
                raise DataError(f"{where}: row {i + 1} has an empty text in column {c!r}")
        columns[c] = [t if isinstance(t, str) else str(t) for t in texts]
    kind, values, class_names = label_kind(ds[spec.label_column], ds.features.get(spec.label_column),
                                           f"{where} column {spec.label_column!r}")
    if spec.is_regression:
        if kind == "str":
            raise DataError(f"{where}: labels are names but the model is a regression model")
        columns["label"] = [float(v) for v in values]
    else:
        index = {_norm(x): i for i, x in enumerate(spec.labels)}
        if class_names or kind == "str":
            ids = []
            for i, v in enumerate(values):
                name = class_names[v] if class_names else v
                if _norm(name) not in index:
                    raise DataError(f"{where}: row {i + 1} label {name!r} is not one of {list(spec.labels)}")
                ids.append(index[_norm(name)])
        elif kind == "int":
            ids = values
            bad = next((i for i, v in enumerate(ids) if not 0 <= v < spec.num_labels), None)
            if bad is not None:
                raise DataError(f"{where}: row {bad + 1} label {ids[bad]} is not an id of the {spec.num_labels} labels")
        else:
            raise DataError(f"{where}: labels are scores (floats) but the model is a classifier")
        columns["label"] = ids
    out = datasets.Dataset.from_dict(columns)
    out.info.description = f"{where} ({len(out)} rows)"
    return out
