"""Small forwards on one thread where waking OpenMP's idle threads costs more than they save.

With OMP_WAIT_POLICY=passive (what shared machines and ONNX Runtime's `allow_spinning=0` baselines
use) an idle OpenMP thread sleeps, and every parallel region pays a wake-up. A packed forward runs
~60-90 short regions (the kernels' and torch's own), so at batch 1 a second thread can make it slower.
Where the crossover lies depends on the CPU (its wake-up latency against its speed) and on the model
(its work per token), measured on 2 cores (docs/performance.md): packed 1-1-1 BERT-base ran faster on
one thread up to ~512 tokens on an AMD EPYC Zen 4 VM but only up to ~16 on an Intel Xeon (Ice Lake)
VM, and w1a4 BERT-base never did there (1 x 128: 194 ms on one thread, 126 on two). No fixed limit
fits both, so under that policy a packed model measures: per size class (tokens rounded up to a
power of two, up to `MEASURED_MAX_TOKENS`), its first forward runs on every thread as a warm-up, the
next `2 * TRIALS` alternate between one thread and every thread, timed, and from then on the class
takes the faster. The thread count does not change a packed model's output bits (integer kernels,
torch's row-wise float ops; `tests/quant/test_serial.py` checks it), so measuring costs only the
trial forwards' time. With the default (spinning) policy nothing changes: two threads won everywhere.

BEBERT_SERIAL_MAX_TOKENS sets a fixed rule instead: forwards of at most that many tokens (batch x
length) on one thread, larger ones on every thread; 0 never switches. A switched forward restores the
count afterwards, also when it raises. torch's thread count is shared by the process's threads:
concurrent forwards switch it together, and the count is back once the last of them has ended (each
forward restores only the count it found, and only if it changed it).
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import torch

from bebert_cli.errors import UsageError

MEASURED = "measured"
MEASURED_MAX_TOKENS = 4096  # larger forwards always use every thread (measured: they win there)
TRIALS = 2  # timed forwards per setting and size class
_ENV = "BEBERT_SERIAL_MAX_TOKENS"
# Per Python thread, a stack with one entry per running forward (see _enter).
_calls = threading.local()


def serial_max_tokens() -> int | str:
    """The rule in force: MEASURED (per model and size class), or a fixed token limit (0: never)."""
    raw = os.environ.get(_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"{_ENV} must be a whole number of tokens (0 turns it off), not {raw!r}") from None
        return max(0, value)
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
    return MEASURED if passive else 0


class ThreadChoice:
    """One model's measurements: per size class, the trial timings and then the choice."""

    def __init__(self):
        self.seen: dict[int, int] = {}
        self.times: dict[int, tuple[list[float], list[float]]] = {}  # (every thread, one thread)
        self.serial: dict[int, bool] = {}

    def plan(self, size_class: int) -> tuple[bool, bool]:
        """(run on one thread, time this forward as a trial)."""
        if size_class in self.serial:
            return self.serial[size_class], False
        n = self.seen.get(size_class, 0)
        self.seen[size_class] = n + 1
        return (n % 2 == 1, n > 0)  # forward 0: warm-up on every thread, untimed

    def record(self, size_class: int, serial: bool, seconds: float) -> None:
        if size_class in self.serial:
            return
        parallel_s, serial_s = self.times.setdefault(size_class, ([], []))
        (serial_s if serial else parallel_s).append(seconds)
        if len(parallel_s) >= TRIALS and len(serial_s) >= TRIALS:
            self.serial[size_class] = statistics.median(serial_s) < statistics.median(parallel_s)

    def summary(self) -> dict[str, str]:
        """Size class (largest token count) -> the thread setting chosen for it."""
        return {str(1 << c): ("one thread" if s else "every thread") for c, s in sorted(self.serial.items())}


def _tokens(args, kwargs) -> int | None:
    x = kwargs.get("input_ids")
    if x is None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("inputs_embeds")
        if x is not None and x.dim() == 3:  # inputs_embeds: [B, L, H]
            return x.shape[0] * x.shape[1]
    return None if x is None else x.numel()


def _enter(module, args, kwargs):
    stack = _calls.__dict__.setdefault("stack", [])
    entry = [None, None, False, 0.0]  # count to restore, size class timed, ran serial, start time
    stack.append(entry)  # first: the exit hook runs even if this one raises, and pops this entry
    tokens, rule = _tokens(args, kwargs), serial_max_tokens()
    threads = torch.get_num_threads()
    if not rule or tokens is None or torch.is_grad_enabled() or threads <= 1:
        return
    if rule == MEASURED:
        if not 0 < tokens <= MEASURED_MAX_TOKENS:
            return
        size_class = (tokens - 1).bit_length()
        serial, timed = module._bebert_thread_choice.plan(size_class)
        if timed:
            entry[1], entry[2] = size_class, serial
    else:
        serial = tokens <= rule
    if serial:
        torch.set_num_threads(1)
        entry[0] = threads
    entry[3] = time.perf_counter()


def _exit(module, args, kwargs, output):
    stack = _calls.__dict__.get("stack")
    threads, size_class, serial, start = stack.pop() if stack else (None, None, False, 0.0)
    if size_class is not None:
        module._bebert_thread_choice.record(size_class, serial, time.perf_counter() - start)
    if threads is not None:
        torch.set_num_threads(threads)


def install(model) -> bool:
    """Give `model` the small-forward rule (once); True if it was added now."""
    if getattr(model, "_bebert_serial_hooks", None) is not None:
        return False
    model._bebert_thread_choice = ThreadChoice()
    model._bebert_serial_hooks = (model.register_forward_pre_hook(_enter, with_kwargs=True),
                                  model.register_forward_hook(_exit, with_kwargs=True, always_call=True))
    return True
