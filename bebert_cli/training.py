"""The training loop every training command shares (finetune, binarize, ensemble members).

It runs on `accelerate`, so the same code runs on one CPU, on a GPU, or as N data-parallel
processes under `torchrun` / `accelerate launch`. `--batch-size` is the global batch: each of
the N processes takes its slice, so results do not depend on how many processes ran them.

Resumable state (model, optimizer, scheduler, RNG, position in the data) is written with
safetensors + JSON (never pickle), atomically, every `save_every` steps, at each epoch end and
on Ctrl-C (at the next step boundary). Data order is a pure function of (seed, epoch), so a
resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from bebert_cli.atomic import atomic_write_bytes
from bebert_cli.errors import BebertError, TrainingError
from bebert_cli.progress import NullProgress, Sink

STATE_FILE = "train_state.safetensors"
BEST_FILE = "best_model.safetensors"


class TrainingInterrupted(BebertError):
    exit_code = 130


@dataclass
class TrainConfig:
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    save_every: int = 200  # steps between periodic checkpoints
    log_every: int = 10
    group_by_length: bool = True  # batches of similar lengths (see LengthGroupedBatchSampler)
    scale_lr: float | None = None  # learning rate of the parameters named by train(scale_params=...); None: lr


@dataclass
class TrainResult:
    steps: int
    best_score: float | None
    best_epoch: int | None
    samples_per_second: float
    train_seconds: float
    last_loss: float | None = None  # the global batch's mean loss at the last logged step


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """The global batches of an epoch, as index lists; iterating yields this process's slice of each.

    Order is a pure function of (seed, epoch): a seeded permutation, then (with `group_by_length`)
    rows sorted by length within mega-batches of `mega_batches` batches and the batches shuffled,
    so each batch pads to a length close to its rows' own (far fewer wasted token positions)
    while batches still come in random order. `set_epoch(epoch, start)` skips the first `start`
    batches: a resumed run sees exactly the batches an uninterrupted one would have.
    The batches do not depend on the process count. A process whose slice of a (last, small) batch
    is empty gets the batch's first row to run with, at weight zero (see `slice_size`): every
    process still joins the gradient exchange, and the update is the batch's own.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, lengths=None, group_by_length: bool = True,
                 rank: int = 0, world: int = 1, mega_batches: int = 50):
        self.lengths = None if lengths is None else torch.as_tensor(list(lengths), dtype=torch.long)
        if group_by_length and (self.lengths is None or len(self.lengths) != n):
            raise TrainingError("grouping batches by length needs every row's length (an input_ids column)")
        self.n = n
        self.batch_size, self.seed, self.group = batch_size, seed, group_by_length
        self.rank, self.world, self.mega = rank, world, mega_batches
        self.epoch, self.start, self._cache = 0, 0, (None, None)

    @classmethod
    def for_dataset(cls, ds, batch_size: int, *, group_by_length: bool = True, **kwargs):
        lengths = row_lengths(ds) if group_by_length else None
        return cls(len(ds), batch_size, lengths=lengths, group_by_length=group_by_length, **kwargs)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def global_batches(self, epoch: int) -> list[list[int]]:
        if self._cache[0] == epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        bs = self.batch_size
        if self.group:
            mega = bs * self.mega
            # Longest first within each mega-batch; stable, so ties keep the permutation's order.
            chunks = [c[torch.sort(self.lengths[c], descending=True, stable=True).indices] for c in perm.split(mega)]
            perm = torch.cat(chunks)
        out = [b.tolist() for b in perm.split(bs)]
        if self.group and len(out) > 1:
            order = torch.randperm(len(out), generator=g).tolist()
            out = [out[i] for i in order]
        self._cache = (epoch, out)
        return out

    def __iter__(self):
        for batch in self.global_batches(self.epoch)[self.start:]:
            yield batch[self.rank :: self.world] or batch[:1]

    def slice_size(self, global_size: int) -> int:
        """Rows of a global batch of this size that count on this process (0 for a stand-in row)."""
        return len(range(self.rank, global_size, self.world))

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) - self.start


def row_lengths(ds) -> list[int]:
    """Token count of every row of a tokenized dataset (a `datasets.Dataset` or a list of dicts)."""
    try:
        column = ds["input_ids"] if hasattr(ds, "column_names") else [row["input_ids"] for row in ds]
    except (KeyError, TypeError):
        raise TrainingError("grouping batches by length needs an input_ids column; pass --no-group-by-length") from None
    return [len(x) for x in column]


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches of one epoch in random (ungrouped) order."""
    return LengthGroupedBatchSampler(n, batch_size, seed=seed, group_by_length=False).global_batches(epoch)


def padded_positions(batches: list[list[int]], lengths) -> int:
    """Token positions a dynamic-padding collator makes for these batches (each padded to its longest row)."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def _optimizer(model, cfg: TrainConfig, scale_params=frozenset()):
    decay, no_decay, scales = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in scale_params and cfg.scale_lr is not None:
            scales.append(p)
            continue
        # Biases, norms and scalar quantizer parameters are not weight-decayed.
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
              {"params": scales, "weight_decay": 0.0, "lr": cfg.scale_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def _schedule(optimizer, total_steps: int, warmup_ratio: float):
    # Not transformers' get_linear_schedule_with_warmup: that one starts at lr 0 (factor step/warmup),
    # this one at lr/warmup ((step+1)/warmup); the numbers differ by one step during warm-up, and
    # switching would change every existing recipe's results. After warm-up they are the same.
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _state_tensors(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_state(path: Path, model, optimizer, scheduler, meta: dict) -> None:
    from safetensors.torch import save

    tensors = {f"model/{k}": v for k, v in _state_tensors(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"optim/{idx}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    tensors["rng/torch"] = torch.get_rng_state()
    metadata = {
        "meta": json.dumps(meta),
        "param_groups": json.dumps(opt["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict()),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_state(path: Path, model, optimizer, scheduler) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(metadata["meta"])
        param_groups = json.loads(metadata["param_groups"])
        sched_state = json.loads(metadata["scheduler"])
    except Exception as exc:
        raise TrainingError(f"cannot read the saved training state {path}: {exc}") from exc
    model_sd = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(model_sd)
    opt_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, key = k.split("/", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
    scheduler.load_state_dict(sched_state)
    torch.set_rng_state(tensors["rng/torch"])
    return meta


class _StopFlag:
    """First Ctrl-C asks the loop to stop at the next step boundary and save; a second one kills."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(
    model,
    *,
    train_ds,
    collator,
    cfg: TrainConfig,
    loss_fn: Callable,
    accelerator,
    work_dir: Path,
    resume: bool,
    select_fn: Callable | None = None,
    output: Sink | None = None,
    description: str = "train",
    fingerprint: dict | None = None,
    scale_params=frozenset(),
) -> TrainResult:
    """Train `model` in place; on return it holds the selected (best held-out) weights.

    loss_fn(model, batch) -> (loss, logs dict); select_fn(model) -> score (higher is better),
    evaluated on a slice held out from the training data at every epoch end. loss_fn must return the
    mean over its rows: each process's loss is weighted by its share of the global batch, so with
    slices of unequal size the update is still that of the global batch's mean (DDP averages the
    processes' gradients with equal weights). This is exact for per-row means (the logits and
    hard-label losses); a loss averaged over tokens (hidden states, DMD) is weighted by rows too, so
    with unequal slices it matches the one-process run to the extent the slices' token counts are
    proportional to their rows. scale_params: names of parameters trained at cfg.scale_lr.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size < world:
        raise TrainingError(f"--batch-size {cfg.batch_size} is smaller than the {world} processes")
    torch.manual_seed(cfg.seed)
    sampler = LengthGroupedBatchSampler.for_dataset(train_ds, cfg.batch_size, seed=cfg.seed, rank=rank,
                                                    world=world, group_by_length=cfg.group_by_length)
    # No worker processes: nothing is pickled, and the data order is the sampler's alone. Its own
    # generator: each new iterator draws a seed from it, which must not move the global RNG (dropout),
    # or a run resumed mid-epoch would drift from an uninterrupted one.
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collator, num_workers=0,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = len(sampler.global_batches(0))
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer = _optimizer(model, cfg, scale_params)
    scheduler = _schedule(optimizer, total_steps, cfg.warmup_ratio)
    state_path, best_path = work_dir / STATE_FILE, work_dir / BEST_FILE
    fingerprint = {**(fingerprint or {}), "train": asdict(cfg), "train_rows": len(train_ds), "world": world}

    global_step, best_score, best_epoch = 0, None, None
    if resume and state_path.exists():
        meta = load_state(state_path, model, optimizer, scheduler)
        if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            raise TrainingError(
                f"the saved state in {work_dir} is from a run with different settings; "
                "rerun with the same options, or start over with --overwrite"
            )
        global_step, best_score, best_epoch = meta["global_step"], meta["best_score"], meta["best_epoch"]
        if output is not None and accelerator.is_main_process:
            output.log(f"Resuming {description} at step {global_step}/{total_steps}")
    elif resume and output is not None:
        output.warn(f"--resume: no saved state in {work_dir}; starting from the beginning")
    work_dir.mkdir(parents=True, exist_ok=True)

    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    def checkpoint():
        meta = {"global_step": global_step, "best_score": best_score, "best_epoch": best_epoch, "fingerprint": fingerprint}
        if accelerator.is_main_process:
            save_state(state_path, accelerator.unwrap_model(model), optimizer, scheduler, meta)
        accelerator.wait_for_everyone()

    model.train()
    start, samples_seen, last_loss = time.perf_counter(), 0, None
    show = output is not None and accelerator.is_main_process
    with _StopFlag() as stop, (output.progress(show) if output is not None else contextlib.nullcontext(NullProgress())) as progress:
        bar = progress.add_task(description, total=total_steps, completed=global_step, info="")
        while global_step < total_steps:
            epoch, offset = divmod(global_step, steps_per_epoch)
            sampler.set_epoch(epoch, offset)
            sizes = [len(b) for b in sampler.global_batches(epoch)[offset:]]
            for global_size, batch in zip(sizes, loader):
                batch = {k: v.to(device) for k, v in batch.items()}
                loss, logs = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss.item()} at step {global_step}; lower --lr or check the data "
                        f"(last good state: {state_path if state_path.exists() else 'none'})"
                    )
                if world > 1:  # this slice's share of the global batch (exactly 1 on one process)
                    loss = loss * (sampler.slice_size(global_size) * world / global_size)
                accelerator.backward(loss)
                if cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                samples_seen += global_size
                if global_step % cfg.log_every == 0 or global_step == total_steps:
                    rate = samples_seen / max(1e-9, time.perf_counter() - start)
                    shown = accelerator.reduce(loss.detach(), "mean") if world > 1 else loss  # the global batch's mean
                    last_loss = shown.item()
                    info = f"loss {last_loss:.4f} {rate:.1f} samples/s"
                    progress.update(bar, completed=global_step, info=info)  # a line a minute without a terminal
                else:
                    progress.update(bar, completed=global_step)
                end_of_epoch = global_step % steps_per_epoch == 0 or global_step == total_steps
                if end_of_epoch and select_fn is not None:
                    score = _select(select_fn, accelerator, model)
                    if best_score is None or score > best_score:
                        best_score, best_epoch = score, math.ceil(global_step / steps_per_epoch)
                        if accelerator.is_main_process:
                            from safetensors.torch import save

                            atomic_write_bytes(best_path, save(_state_tensors(accelerator.unwrap_model(model))))
                    if output is not None and accelerator.is_main_process:
                        output.log(f"step {global_step}: held-out score {score:.4f} (best {best_score:.4f})")
                if stop.requested:
                    checkpoint()
                    raise TrainingInterrupted(
                        f"interrupted at step {global_step}/{total_steps}; state saved in {work_dir}; "
                        "rerun the same command with --resume to continue"
                    )
                if global_step % cfg.save_every == 0 or end_of_epoch:
                    checkpoint()
                if global_step >= total_steps:
                    break
    elapsed = time.perf_counter() - start
    model = accelerator.unwrap_model(model)
    if best_path.exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(best_path)))
    return TrainResult(global_step, best_score, best_epoch, samples_seen / max(elapsed, 1e-9), elapsed, last_loss)


def _select(select_fn, accelerator, model) -> float:
    # Every process computes the same score on the same held-out slice; cheap and keeps them in step.
    score = float(select_fn(accelerator.unwrap_model(model)))
    model.train()
    return score
