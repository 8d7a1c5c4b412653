"""A user's own rows: CSV / TSV / JSON(L) / Parquet files or a dataset (hub id or `save_to_disk` directory),
read through `datasets`' own loaders, as a `datasets.Dataset` with the source's columns untouched.

Which columns are text and label, and what the labels mean, is `dataspec`'s business; this module only
reads, and turns every way a read can fail into one `DataError` line.
"""

from __future__ import annotations

from pathlib import Path

from bebert_cli.errors import DataError

# extension -> (datasets builder, its options)
FILE_TYPES = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
_CACHE: dict[tuple, object] = {}  # one read per file / split per process (spec resolution reads first)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def read_file(path) -> object:
    """All rows of one data file, by its extension."""
    import datasets

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no such file {str(path)!r}")
    if not p.is_file():
        raise DataError(f"{path} is a directory, not a data file (a save_to_disk directory goes to --dataset)")
    ext = p.suffix.lower()
    if ext not in FILE_TYPES:
        raise DataError(f"{p}: unsupported file type {ext or '(no extension)'!r}; use {', '.join(FILE_TYPES)}")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty")
    key = ("file", str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size)
    if key in _CACHE:
        return _CACHE[key]
    builder, options = FILE_TYPES[ext]
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(builder, data_files={"rows": str(p.resolve())}, split="rows", **options)
    except Exception as exc:  # pyarrow / pandas parse errors: one line that names the file
        if "corresponds to no data" in str(exc):  # a header and nothing else
            raise DataError(f"{p} has no rows") from exc
        raise DataError(f"cannot read {p} as {ext[1:]}: {_first_line(exc)}") from exc
    if len(ds) == 0:
        raise DataError(f"{p} has no rows")
    _CACHE[key] = ds
    return ds


def _load_local(path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path} is not a dataset directory written by save_to_disk: {_first_line(exc)}") from exc


def split_names(name: str, config: str | None, revision: str | None) -> list[str] | None:
    """The splits a dataset has; None for a single saved `Dataset` (it serves any split asked for)."""
    import datasets

    from bebert_cli import hub

    p = Path(name).expanduser()
    if p.exists():
        obj = _load_local(p)
        return list(obj.keys()) if isinstance(obj, datasets.DatasetDict) else None
    if hub.looks_like_path(name):
        raise DataError(f"no such directory {name!r}")
    hub.check_reachable("dataset", name, DataError)
    try:
        return list(datasets.get_dataset_split_names(name, config, revision=revision))
    except Exception as exc:
        raise DataError(f"cannot load dataset {name!r} from the hub: {_first_line(exc)}") from exc


def read_split(name: str, config: str | None, split: str, revision: str | None):
    """One split of a dataset: a local `save_to_disk` directory, else a hub id."""
    import datasets

    key = ("dataset", name, config, split, revision)
    if key in _CACHE:
        return _CACHE[key]
    p = Path(name).expanduser()
    if p.exists():
        obj = _load_local(p)
        if isinstance(obj, datasets.DatasetDict):
            if split not in obj:
                raise DataError(f"{p} has no split {split!r}; its splits are {list(obj.keys())}")
            ds = obj[split]
        else:
            ds = obj
    else:
        from bebert_cli import hub

        if hub.looks_like_path(name):
            raise DataError(f"no such directory {name!r}")
        hub.check_reachable("dataset", name, DataError)
        datasets.disable_progress_bars()
        try:
            ds = datasets.load_dataset(name, config, split=split, revision=revision)
        except Exception as exc:
            raise DataError(f"cannot load {name}/{split} from the hub: {_first_line(exc)}") from exc
    if len(ds) == 0:
        raise DataError(f"{name} split {split!r} has no rows")
    _CACHE[key] = ds
    return ds
