"""GLUE data: the original TSV files (with their quirks) or the hub, through `datasets`.

The path of a batch: TSV rows -> `datasets.Dataset` of text + label -> batched tokenization
(cached on disk, keyed by file content and tokenizer) -> `DataCollatorWithPadding` (dynamic
padding) -> model.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from bebert_cli.errors import DataError
from bebert_cli.tasks import GlueTask, TsvLayout

DATA_DIR_ENV = "BEBERT_DATA_DIR"
CACHE_DIR_ENV = "BEBERT_CACHE_DIR"
HUB_DATASET = "nyu-mll/glue"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """--data-dir wins, then $BEBERT_DATA_DIR; None means 'use the hub'."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist")
    return path


# Plain decimal numbers only: no "1_0", no non-ASCII digits ("²", "١"), which float()/int() accept or choke on.
_INT_LABEL = re.compile(r"-?[0-9]{1,18}")  # int() refuses over 4300 digits
_FLOAT_LABEL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
# The range of a regression task's scores: a score outside it is bad data, not a label to fit.
REGRESSION_RANGES = {"stsb": (0.0, 5.0)}


def _short(raw: str, limit: int = 40) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_label(task: GlueTask, raw: str, where: str) -> float | int:
    raw = raw.strip()
    if task.is_regression:
        if not _FLOAT_LABEL.fullmatch(raw):
            raise DataError(f"{where}: label {_short(raw)} is not a number")
        value = float(raw)
        if not (value == value) or value in (float("inf"), float("-inf")):  # NaN / inf scores
            raise DataError(f"{where}: label {_short(raw)} is not a finite number")
        low, high = REGRESSION_RANGES.get(task.name, (float("-inf"), float("inf")))
        if not low <= value <= high:
            raise DataError(f"{where}: label {_short(raw)} is outside the {task.name} score range [{low:g}, {high:g}]")
        return value
    if _INT_LABEL.fullmatch(raw):
        idx = int(raw)
        if 0 <= idx < task.num_labels:
            return idx
    elif raw in task.labels:
        return task.labels.index(raw)
    raise DataError(f"{where}: label {_short(raw)} is not one of the {task.name} labels {list(task.labels)}")


def read_glue_tsv(path: Path, task: GlueTask, layout: TsvLayout) -> dict[str, list]:
    """Read one GLUE TSV into columns {text fields..., 'label'}.

    Quoting is disabled (MRPC has unbalanced double quotes), a byte-order mark is dropped
    (MRPC starts with one) and CoLA's header-less layout is addressed by column index.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing data file {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: invalid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not lines or (layout.header and len(lines) < 2):
        raise DataError(f"{path} is empty")

    first_row = 0
    if layout.header:
        header = lines[0].split("\t")
        first_row = 1
        try:
            text_idx = [header.index(c) for c in layout.text_columns]
            label_idx = header.index(layout.label_column) if layout.label_column is not None else None
        except ValueError as exc:
            raise DataError(f"{path}: missing column ({exc}); header is {header}") from None
        min_fields = len(header)
    else:
        text_idx = list(layout.text_columns)
        label_idx = layout.label_column
        min_fields = layout.min_columns
    needed = max(text_idx + ([label_idx] if label_idx is not None else [])) + 1
    min_fields = max(min_fields, needed)

    columns: dict[str, list] = {f: [] for f in task.text_fields}
    columns["label"] = []
    for lineno in range(first_row, len(lines)):
        fields = lines[lineno].split("\t")
        where = f"{path}:{lineno + 1}"
        # GLUE rows may carry extra trailing fields (MNLI), never fewer than the header.
        if len(fields) < min_fields:
            raise DataError(f"{where}: malformed row, expected {min_fields} tab-separated fields, found {len(fields)}")
        for name, i in zip(task.text_fields, text_idx):
            columns[name].append(fields[i])
        columns["label"].append(_parse_label(task, fields[label_idx], where) if label_idx is not None else -1)
    return columns


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_split(task: GlueTask, split: str, data_dir: Path | None):
    """One split as a `datasets.Dataset` with the task's text fields and `label`."""
    import datasets

    if data_dir is None:
        from bebert_cli.hub import check_reachable

        check_reachable(f"GLUE {task.name}: dataset", HUB_DATASET, DataError,
                        hint=f"pass --data-dir or set {DATA_DIR_ENV} to a GLUE directory")
        try:
            ds = datasets.load_dataset(HUB_DATASET, task.hub_config, split=split)
        except Exception as exc:  # network, missing config...: one clear line, cause in debug
            raise DataError(
                f"could not load {task.name}/{split} from the hub ({type(exc).__name__}); "
                f"pass --data-dir or set {DATA_DIR_ENV} to a GLUE directory"
            ) from exc
        return ds.select_columns([*task.text_fields, "label"])

    stem = task.split_files.get(split)
    if stem is None:
        raise DataError(f"task {task.name} has no split {split!r}")
    path = data_dir / task.glue_dir / f"{stem}.tsv"
    if not path.is_file():
        raise DataError(f"missing data file {path} (expected the GLUE layout {task.glue_dir}/{stem}.tsv)")
    columns = read_glue_tsv(path, task, task.tsv[stem])
    ds = datasets.Dataset.from_dict(columns)
    ds.info.description = f"{path} sha256={_file_digest(path)}"
    return ds


def cache_root(kind: str) -> Path:
    """Where bebert caches derived datasets of one kind ("tokenized", "augmented")."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "bebert") / kind


def load_cached(cache_dir: Path):
    """The dataset cached in `cache_dir`, or None (no entry, or a damaged one: the caller rebuilds it)."""
    import datasets

    if (cache_dir / "dataset_info.json").exists():
        try:
            return datasets.load_from_disk(str(cache_dir))
        except Exception:
            pass
    return None


def save_cached(ds, cache_dir: Path) -> None:
    """Cache `ds` in `cache_dir`: written beside it and renamed into place, so a reader never sees half an entry."""
    tmp = cache_dir.with_name(cache_dir.name + f".tmp{os.getpid()}")
    try:
        ds.save_to_disk(str(tmp))
        os.replace(tmp, cache_dir)
    except OSError:
        pass  # caching is an optimisation; a read-only home or a full disk must not fail the run
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written entry (disk full) or a lost race


def _content_digest(ds, task: GlueTask) -> str:
    """Digest of the rows themselves: a subset, a shuffle or an edited file gets its own key."""
    h = hashlib.sha256()
    for name in (*task.text_fields, "label"):
        h.update(name.encode())
        h.update("\x00".join(map(str, ds[name])).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _tokenizer_fingerprint(tokenizer) -> str:
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Truncation/padding state changes once the tokenizer has been called; it is not identity.
        spec.pop("truncation", None)
        spec.pop("padding", None)
        blob = json.dumps(spec, sort_keys=True)
    else:
        blob = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}|{blob}".encode()).hexdigest()


def tokenize(ds, task: GlueTask, tokenizer, max_seq_length: int, *, cache: bool = True, desc: str = ""):
    """Batched tokenization, truncated to max_seq_length, unpadded (the collator pads per batch).

    Results are cached on disk as Arrow files (never pickles) under $BEBERT_CACHE_DIR, keyed by the
    data's content, the tokenizer and the length, so a second run skips the work.
    """
    import datasets

    datasets.disable_progress_bars()  # our own progress display is the only one
    key = hashlib.sha256(
        "|".join([_content_digest(ds, task), task.name, str(max_seq_length), _tokenizer_fingerprint(tokenizer)]).encode()
    ).hexdigest()[:24]
    cache_dir = cache_root("tokenized") / key
    cached = load_cached(cache_dir) if cache else None
    if cached is not None:
        return cached

    def encode(batch):
        texts = [batch[f] for f in task.text_fields]
        enc = tokenizer(*texts, truncation=True, max_length=max_seq_length)
        enc["labels"] = batch["label"]
        return enc

    out = ds.map(encode, batched=True, batch_size=1000, remove_columns=ds.column_names, desc=desc or None)
    if cache:
        save_cached(out, cache_dir)
    return out


def subsample(ds, n: int | None, seed: int, *, shuffle: bool):
    """First n rows (eval: reproducible, comparable) or a seeded random n (train: balanced)."""
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise DataError("--max-samples / --max-train-samples must be positive")
    return ds.shuffle(seed=seed).select(range(n)) if shuffle else ds.select(range(n))


def holdout_split(ds, fraction: float, seed: int, max_rows: int = 2000):
    """Split a training set into (train, held-out) for honest model selection: the dev set
    that is reported is never used to pick checkpoints."""
    n_hold = min(max_rows, max(1, int(len(ds) * fraction)))
    if len(ds) - n_hold < 1:
        raise DataError("training set too small to hold out a selection slice")
    parts = ds.train_test_split(test_size=n_hold, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def make_collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")
