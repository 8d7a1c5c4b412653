"""Steps shared by the commands: data for a task, the accelerator, the final dev evaluation."""

from __future__ import annotations

import functools

import json
from dataclasses import dataclass
from pathlib import Path

from bebert_cli import data as data_mod
from bebert_cli.evaluation import evaluate
from bebert_cli.files import write_json  # noqa: F401 - the commands write their side files with it
from bebert_cli.tasks import GlueTask, resolve_split

RUN_FILE = "bebert_run.json"  # how a checkpoint was made: command, options, versions
EVAL_FILE = "eval_results.json"


@dataclass
class TaskData:
    train: object  # tokenized datasets
    select: object | None
    collator: object


def make_accelerator(cpu: bool = False, mixed_precision: str = "no", out=None):
    """The one place an Accelerator is made.

    Under torchrun / accelerate launch on a machine without an accelerator, Accelerate only
    sets up multi-CPU data parallelism (gloo) when asked for the CPU, so ask for it then.
    `mixed_precision` "auto" becomes bf16 only where the device computes it natively
    (`hardware.resolve_mixed_precision`); the choice and its reason are logged to `out` and kept as
    `accelerator.bebert_precision_reason`.
    """
    import os

    import torch
    from accelerate import Accelerator

    from bebert_cli.hardware import resolve_mixed_precision

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("LOCAL_RANK") is not None
    no_accelerator = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    use_cpu = cpu or no_accelerator
    device_type = "cpu" if use_cpu else "cuda" if torch.cuda.is_available() else "xpu"
    resolved, reason = resolve_mixed_precision(mixed_precision, device_type, warn=None if out is None else out.warn)
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared.get("_mixed_precision") not in (None, resolved):
        # One process running several commands (library use, the test suite): accelerate keeps the first
        # command's precision in a process-wide singleton and refuses another; each command has its own.
        AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=cpu or (launched and no_accelerator), mixed_precision=resolved)
    accelerator.bebert_precision_reason = reason
    if accelerator.num_processes > 1:
        _destroy_process_group_at_exit()
    if out is not None and mixed_precision != "no":
        out.log(f"Training precision: {reason}")
    return accelerator


@functools.cache
def _destroy_process_group_at_exit() -> None:
    """Under torchrun, tear the process group down at exit (once per process), as torch asks, rather
    than leave it to the interpreter's teardown. (A load-dependent SIGABRT of a 2-process test at exit,
    "terminate called without an active exception", was seen with and without this; not understood.)"""
    import atexit

    def destroy():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    atexit.register(destroy)


def load_rows(task, split: str, data_dir):
    """One split's rows (text fields + label ids in the model's order) for a GLUE task or a data spec."""
    from bebert_cli.dataspec import DataSpec, load_rows as load_spec_rows

    if isinstance(task, DataSpec) and task.source != "glue":
        return load_spec_rows(task, split)
    glue = task.glue if isinstance(task, DataSpec) else task
    ddir = data_mod.resolve_data_dir(data_dir if data_dir is not None or not isinstance(task, DataSpec)
                                     else task.data_dir)
    ds = data_mod.load_split(glue, split, ddir)
    if not glue.is_regression and tuple(task.labels) != tuple(glue.labels):
        # The checkpoint orders the task's labels differently (a hub model): map GLUE ids to its ids by name.
        to_model = [list(task.labels).index(name) for name in glue.labels]
        ds = ds.map(lambda row: {"label": to_model[row["label"]] if row["label"] >= 0 else row["label"]})
    return ds


def load_eval_split(task: GlueTask, split: str, tokenizer, *, data_dir, max_seq_length: int, max_samples=None):
    """{split name: tokenized dataset} (MNLI's dev is two splits)."""
    out = {}
    for name in resolve_split(task, split):
        raw = data_mod.subsample(load_rows(task, name, data_dir), max_samples, 0, shuffle=False)
        out[name] = data_mod.tokenize(raw, task, tokenizer, max_seq_length, desc=f"tokenize {name}")
    return out


def load_train_data(task: GlueTask, tokenizer, *, data_dir, max_seq_length: int, max_train_samples, seed: int,
                    holdout: float = 0.05) -> TaskData:
    raw = load_rows(task, "train", data_dir)
    raw = data_mod.subsample(raw, max_train_samples, seed, shuffle=True)
    select = None
    if holdout > 0 and len(raw) >= 20:
        raw, select = data_mod.holdout_split(raw, holdout, seed)
    train = data_mod.tokenize(raw, task, tokenizer, max_seq_length, desc="tokenize train")
    select = data_mod.tokenize(select, task, tokenizer, max_seq_length, desc="tokenize held-out") if select is not None else None
    return TaskData(train, select, data_mod.make_collator(tokenizer))


def main_score(task: GlueTask, metrics: dict) -> float:
    return metrics[task.main_metric]


def evaluate_splits(model, task: GlueTask, splits: dict, collator, *, batch_size: int, progress=None, device=None) -> dict:
    results = {}
    for name, ds in splits.items():
        metrics, _ = evaluate(model, task, ds, collator, batch_size=batch_size, progress=progress, device=device,
                              description=f"eval {name}")
        results[name] = {"metrics": metrics, "samples": len(ds)}
    return results


def eval_payload(task: GlueTask, results: dict, *, split: str, **extra) -> dict:
    """An evaluation (docs/json.md): the shape of eval_results.json, of `bebert eval --json` and of every
    other command's scores. `split` is named as the data names it ("dev" -> "validation")."""
    from bebert_cli.schema import split_name

    first = next(iter(results.values()))
    data = {"data": task.to_dict()} if hasattr(task, "to_dict") else {}
    return {
        "task": task.name,
        **data,
        "main_metric": task.main_metric,
        "main_value": first["metrics"][task.main_metric],
        "split": split_name(split),
        "splits": results,
        **extra,
    }


def read_run_info(path: Path) -> dict:
    f = Path(path) / RUN_FILE
    if not f.is_file():
        return {}
    try:
        info = json.loads(f.read_text())
        return info if isinstance(info, dict) else {}
    except (ValueError, OSError, RecursionError):
        return {}
