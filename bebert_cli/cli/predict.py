"""`bebert predict`: run a checkpoint (full precision, packed binary or ensemble) on new text, JSONL out.

    bebert predict OUT "a fine film" "a dull one"
    bebert predict OUT --input rows.csv --text-column review --output preds.jsonl
    cat texts.txt | bebert predict OUT

One JSON object per input row, in input order, of schema `bebert.prediction` (docs/json.md):
{"schema", "schema_version", "text", "label", "score", "scores"} (a pair model adds "text_pair"; a
regression model gives "score" and a null label). Packed models run on the fastest
runtime the CPU allows (the bit kernels); the output is the same bit for bit on either runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Iterator, List, Optional

import typer

from bebert_cli.cli import choices
from bebert_cli.cli import options as opt

TEXT_SUFFIXES = (".txt", ".text")


def predict_command(
    path: Annotated[str, typer.Argument(help="Checkpoint directory: full precision, packed binary or ensemble.")],
    texts: Annotated[Optional[List[str]], typer.Argument(
        help="Texts to classify (a pair model: TEXT<tab>PAIR). None: --input, else stdin.", show_default=False)] = None,
    input_file: Annotated[Optional[Path], typer.Option(
        "--input", "-i", help="texts.txt (one per line) or rows in .csv, .tsv, .json, .jsonl, .parquet.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the JSONL here (atomically) instead of stdout.")] = None,
    text_columns: opt.TextColumns = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per forward pass.")] = 32,
    max_seq_length: opt.CheckpointMaxSeqLength = None,
    runtime: Annotated[Optional[choices.Runtime], typer.Option(
        "--runtime", case_sensitive=False, show_default="the fastest this machine has",
        help="Binary models: packed (the bit kernels) or simulated (fake-quantized torch).")] = None,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    cpu: opt.Cpu = False,
):
    """Classify new text with a checkpoint: one JSON line per row (label, score, all scores)."""
    from bebert_cli.cli.output import Output
    from bebert_cli.errors import UsageError

    # Logs and the progress bar go to stderr; no bar when the JSONL itself scrolls on the same terminal.
    out = Output(json_mode=output is None and sys.stdout.isatty(), quiet=quiet)
    texts = list(texts or [])
    if texts and input_file is not None:
        raise UsageError("give texts as arguments or --input FILE, not both")
    if output is not None and output.exists() and not overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it")
    if not texts and input_file is None and sys.stdin.isatty():
        raise UsageError('nothing to classify: give texts, --input FILE, or pipe lines on stdin (bebert predict OUT "a text")')

    import torch

    from bebert_cli.checkpoint import load_model, tokenizer_path
    from bebert_cli.dataspec import recorded_spec
    from bebert_cli.models import load_tokenizer
    from bebert_cli.quant.packed import fastest_runtime

    device = torch.device("cpu") if cpu or not torch.cuda.is_available() else torch.device("cuda")
    runtime = runtime or fastest_runtime(device)
    model = load_model(path, runtime=runtime, trust_remote_code=trust_remote_code).to(device)
    tokenizer = load_tokenizer(tokenizer_path(path), trust_remote_code=trust_remote_code)
    spec = recorded_spec(path) if Path(path).is_dir() else None
    pair = (len(text_columns) == 2) if text_columns else bool(spec is not None and spec.is_pair)
    seq_len = max_seq_length or (spec.max_seq_length if spec is not None else None) or _saved_seq_len(path) or 128
    rows, total = _rows(texts, input_file, list(text_columns or ()) or (list(spec.text_fields) if spec else []), pair)
    labels = _label_names(model.config)
    from bebert_cli.checkpoint import checkpoint_kind

    kind = checkpoint_kind(path) if Path(path).is_dir() else "fp"
    engine = "full precision" if kind == "fp" else f"{'packed binary' if kind == 'packed' else kind}, {runtime} runtime"
    out.log(f"Predicting with {path} ({engine}, batch {batch_size}, max length {seq_len})")

    import time

    start = time.perf_counter()
    if output is None:
        n = _run(model, tokenizer, rows, total, labels, seq_len, batch_size, device, out, sys.stdout.write)
        sys.stdout.flush()
    else:
        from bebert_cli.atomic import atomic_write_bytes

        lines: list[str] = []  # whole or nothing: a bad row halfway leaves no partial file behind
        n = _run(model, tokenizer, rows, total, labels, seq_len, batch_size, device, out, lines.append)
        if n:
            atomic_write_bytes(Path(output), "".join(lines).encode("utf-8"))
    if n == 0:
        from bebert_cli.errors import DataError

        raise DataError(f"no texts to classify in {input_file or 'stdin'}")
    seconds = time.perf_counter() - start  # tokenization + forward passes + JSON, not loading
    out.log(f"Predicted {n} rows in {seconds:.2f} s ({n / seconds if seconds > 0 else 0:.1f} rows/s)"
            + (f"; wrote {output}" if output is not None else ""))


def _saved_seq_len(path) -> int | None:
    from bebert_cli.pipeline import read_run_info

    v = read_run_info(Path(path)).get("max_seq_length") if Path(path).is_dir() else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _label_names(config) -> list[str] | None:
    n = int(config.num_labels)
    if n == 1:
        return None  # regression: one score
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]


def _check_text(text, where: str) -> str:
    from bebert_cli.errors import DataError

    if text is None or (isinstance(text, float) and text != text) or not str(text).strip():
        raise DataError(f"{where}: empty text")
    return str(text)


def _rows(texts: list[str], input_file: Path | None, columns: list[str], pair: bool):
    """(an iterator of (text, pair-or-None), the row count if known) from arguments, a file or stdin."""
    from bebert_cli.errors import DataError

    def split_line(line: str, where: str):
        if not pair:
            return _check_text(line, where), None
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{where}: a pair model needs TEXT<tab>PAIR, found {len(parts)} field(s)")
        return _check_text(parts[0], where), _check_text(parts[1], where)

    if texts:
        return (split_line(t, f"argument {i + 1}") for i, t in enumerate(texts)), len(texts)
    if input_file is None or input_file.suffix.lower() in TEXT_SUFFIXES:
        if input_file is not None and not input_file.is_file():
            raise DataError(f"no such file {str(input_file)!r}")
        stream = open(input_file, encoding="utf-8") if input_file is not None else sys.stdin
        name = str(input_file) if input_file is not None else "stdin"

        def lines() -> Iterator:
            with stream if input_file is not None else _nullcontext():
                try:
                    for i, line in enumerate(stream):
                        line = line.rstrip("\r\n")
                        if line.strip():  # blank lines separate nothing: skipped
                            yield split_line(line, f"{name}:{i + 1}")
                except UnicodeDecodeError:
                    raise DataError(f"{name}: invalid UTF-8") from None
        return lines(), None
    from bebert_cli import datafiles
    from bebert_cli.dataspec import TEXT_GUESSES

    ds = datafiles.read_file(input_file)
    cols = list(ds.column_names)
    chosen = [c for c in columns if c in cols] if columns else []
    if columns and len(chosen) != len(columns):
        missing = [c for c in columns if c not in cols]
        raise DataError(f"{input_file}: no column {missing[0]!r}; its columns are {cols}")
    if not chosen:
        guesses = [g for g in TEXT_GUESSES if (len(g) == 2) == pair and all(c in cols for c in g)]
        if not guesses:
            raise DataError(f"{input_file}: no text column found; its columns are {cols}; pass --text-column")
        chosen = list(guesses[0])
    if pair != (len(chosen) == 2):
        raise DataError(f"{input_file}: the model takes {'pairs' if pair else 'single texts'}; "
                        f"give --text-column {'twice' if pair else 'once'}")
    a = ds[chosen[0]]
    b = ds[chosen[1]] if pair else [None] * len(a)
    for i, (x, y) in enumerate(zip(a, b)):  # check everything before the first forward pass
        _check_text(x, f"{input_file} row {i + 1} column {chosen[0]!r}")
        if pair:
            _check_text(y, f"{input_file} row {i + 1} column {chosen[1]!r}")
    return ((str(x), None if y is None else str(y)) for x, y in zip(a, b)), len(a)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _batches(rows, size: int):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run(model, tokenizer, rows, total, labels, seq_len: int, batch_size: int, device, out, write) -> int:
    import json

    import torch

    from bebert_cli.schema import with_schema

    n = 0
    with out.progress() as progress, torch.inference_mode():
        bar = progress.add_task("predict", total=total, info="")
        for batch in _batches(rows, batch_size):
            first = [a for a, _ in batch]
            second = [b for _, b in batch] if batch[0][1] is not None else None
            enc = tokenizer(first, second, truncation=True, max_length=seq_len, padding=True, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            logits = model(**inputs).logits.float().cpu()
            for (a, b), row in zip(batch, logits):
                record = {"text": a} if b is None else {"text": a, "text_pair": b}
                if labels is None:
                    record.update(label=None, score=float(row[0]), scores=None)
                else:
                    probs = torch.softmax(row, dim=-1)
                    k = int(probs.argmax())
                    record.update(label=labels[k], score=float(probs[k]),
                                  scores={name: float(p) for name, p in zip(labels, probs)})
                write(json.dumps(with_schema("prediction", record), ensure_ascii=False) + "\n")
            n += len(batch)
            progress.advance(bar, len(batch))
    return n


def register(app: typer.Typer) -> None:
    app.command("predict", epilog=opt.examples(
        'bebert predict student/ "a fine film" "a dull one"',
        "bebert predict student/ --input rows.csv --text-column review --output preds.jsonl",
        "cat texts.txt | bebert predict student/",
    ))(predict_command)
