"""Small forwards on one thread, or on the kernels' own pool, where waking OpenMP's idle threads costs more than they save.

With OMP_WAIT_POLICY=passive (what shared machines and ONNX Runtime's `allow_spinning=0` baselines
use) an idle OpenMP thread sleeps, and every parallel region pays a wake-up: the region ends only when
every thread of its team has arrived. A packed forward runs ~60-90 short regions (the kernels' and
torch's own), so at batch 1 a second thread can make it slower. Three settings per forward:

* every thread: torch and the kernels on OpenMP with torch's thread count (what large forwards want);
* one thread: everything on the calling thread;
* pool: torch on one thread, the kernels on the same count of threads of the C extension's revocable
  pool (`kernels.pool_session`, csrc/bebert_parallel.h): its loops start on the calling thread at once
  and never wait for a worker that has not arrived, and its workers spin between loops only while
  the forward runs (measured on a Zen 4 VM, 2 cores: BERT-base w1a4 1 x 32 15.2 ms on one thread,
  25.8 on two OpenMP threads, 11.3 on the pool).

Which one wins depends on the CPU (its wake-up latency against its speed), the model (its work per
token), the size and the kernel backend, so under that policy a packed model measures: per kernel
backend and size class (tokens rounded up to a power of two, up to `MEASURED_MAX_TOKENS`), its first
forward runs on every thread as a warm-up, the next `TRIALS` forwards per setting cycle through the
settings, timed, and from then on that class takes the fastest (median). The setting does not change a
packed model's output bits (integer kernels, torch's row-wise float ops; `tests/quant/test_serial.py`
checks it), so measuring costs only the trial forwards' time. With the default (spinning) policy
nothing changes: every thread won everywhere.

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

from bebert_cli import kernels
from bebert_cli.errors import UsageError

MEASURED = "measured"
MEASURED_MAX_TOKENS = 4096  # larger forwards always use every thread (measured: they win there)
TRIALS = 3  # timed forwards per setting and size class (with 2, one bench run kept a setting 1.2x slower than its twin model chose)
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


EVERY_THREAD, ONE_THREAD, POOL = "every thread", "one thread", "pool"


class ThreadChoice:
    """One model's measurements: per (kernel backend, size class), the trial timings and then the choice."""

    def __init__(self, settings: tuple[str, ...] | None = None):
        if settings is None:
            settings = (ONE_THREAD, POOL, EVERY_THREAD) if kernels.pool_available() else (ONE_THREAD, EVERY_THREAD)
        self.settings = settings  # the trial order after the warm-up
        self.seen: dict = {}
        self.times: dict = {}  # key -> {setting: [seconds]}
        self.chosen: dict = {}

    def plan(self, key) -> tuple[str, bool]:
        """(the setting for this forward, whether it is a timed trial)."""
        if key in self.chosen:
            return self.chosen[key], False
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        if n == 0:
            return EVERY_THREAD, False  # warm-up, untimed
        return self.settings[(n - 1) % len(self.settings)], True

    def record(self, key, setting: str, seconds: float) -> None:
        if key in self.chosen:
            return
        times = self.times.setdefault(key, {s: [] for s in self.settings})
        times[setting].append(seconds)
        if all(len(v) >= TRIALS for v in times.values()):
            self.chosen[key] = min(self.settings, key=lambda s: statistics.median(times[s]))

    def summary(self) -> dict[str, str]:
        """"backend: largest token count of the class" -> the setting chosen for it."""
        return {f"{b}: {1 << c}": s for (b, c), s in sorted(self.chosen.items())}


def _tokens(args, kwargs) -> int | None:
    x = kwargs.get("input_ids")
    if x is None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("inputs_embeds")
        if x is not None and x.dim() == 3:  # inputs_embeds: [B, L, H]
            return x.shape[0] * x.shape[1]
    return None if x is None else x.numel()


def _enter(module, args, kwargs):
    stack = _calls.__dict__.setdefault("stack", [])
    entry = [None, None, EVERY_THREAD, 0.0, None]  # count to restore, trial key, setting, start, pool session
    stack.append(entry)  # first: the exit hook runs even if this one raises, and pops this entry
    tokens, rule = _tokens(args, kwargs), serial_max_tokens()
    threads = torch.get_num_threads()
    if not rule or tokens is None or torch.is_grad_enabled() or threads <= 1:
        return
    if rule == MEASURED:
        if not 0 < tokens <= MEASURED_MAX_TOKENS:
            return
        key = (kernels.backend(), (tokens - 1).bit_length())
        setting, timed = module._bebert_thread_choice.plan(key)
        if timed:
            entry[1], entry[2] = key, setting
    else:
        setting = ONE_THREAD if tokens <= rule else EVERY_THREAD
    if setting != EVERY_THREAD:
        torch.set_num_threads(1)
        entry[0] = threads
    if setting == POOL:
        entry[4] = kernels.pool_session(threads)
        entry[4].__enter__()
    entry[3] = time.perf_counter()


def _exit(module, args, kwargs, output):
    stack = _calls.__dict__.get("stack")
    threads, key, setting, start, session = stack.pop() if stack else (None, None, EVERY_THREAD, 0.0, None)
    if key is not None:
        module._bebert_thread_choice.record(key, setting, time.perf_counter() - start)
    if session is not None:
        session.__exit__(None, None, None)
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
