"""Small forwards on one thread where waking OpenMP's idle threads costs more than they save.

With OMP_WAIT_POLICY=passive (what shared machines and ONNX Runtime's `allow_spinning=0` baselines
use) an idle OpenMP thread sleeps, and every parallel region pays a futex wake-up. A packed forward
runs ~60-90 short regions (the kernels' and torch's own), so at batch 1 the second thread makes it
2-3x *slower*: measured on 2 cores of an AMD EPYC Zen 4 (docs/performance.md), packed 1-1-1 MiniLM
1 x 128 2.5 ms on one thread vs 5.3 on two, BERT-base 10.8 vs 18.8; two threads win from about 1,024
tokens. With the default (spinning) policy two threads win at every size measured, so nothing changes.

So a packed model runs a forward of at most `serial_max_tokens()` tokens (batch x length) with
`torch.set_num_threads(1)` and restores the previous count afterwards (also when the forward raises).
torch's thread count is shared by the process's threads: concurrent small forwards switch it together,
a large forward running beside a small one may run on one thread meanwhile, and the count is back once
the last of them has ended (each forward restores only the count it found, and only if it changed it).
BEBERT_SERIAL_MAX_TOKENS overrides the limit (0: never switch).
"""

from __future__ import annotations

import os
import threading

import torch

from bebert_cli.errors import UsageError

PASSIVE_DEFAULT_MAX_TOKENS = 512
_ENV = "BEBERT_SERIAL_MAX_TOKENS"
# Per Python thread, a stack with one entry per running forward: the count to restore, or None if unchanged.
_calls = threading.local()


def serial_max_tokens() -> int:
    """Forwards of at most this many tokens run on one thread (0: none)."""
    raw = os.environ.get(_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"{_ENV} must be a whole number of tokens (0 turns it off), not {raw!r}") from None
        return max(0, value)
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
    return PASSIVE_DEFAULT_MAX_TOKENS if passive else 0


def _tokens(args, kwargs) -> int | None:
    x = kwargs.get("input_ids")
    if x is None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("inputs_embeds")
        if x is not None and x.dim() == 3:  # inputs_embeds: [B, L, H]
            return x.shape[0] * x.shape[1]
    return None if x is None else x.numel()


def _enter(module, args, kwargs):
    stack = _calls.__dict__.setdefault("stack", [])
    stack.append(None)  # first: the exit hook runs even if this one raises, and pops this entry
    tokens, limit = _tokens(args, kwargs), serial_max_tokens()
    if limit and tokens is not None and tokens <= limit and not torch.is_grad_enabled():
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
            stack[-1] = threads


def _exit(module, args, kwargs, output):
    stack = _calls.__dict__.get("stack")
    threads = stack.pop() if stack else None
    if threads is not None:
        torch.set_num_threads(threads)


def install(model) -> bool:
    """Give `model` the small-forward rule (once); True if it was added now."""
    if getattr(model, "_bebert_serial_hooks", None) is not None:
        return False
    model._bebert_serial_hooks = (model.register_forward_pre_hook(_enter, with_kwargs=True),
                                  model.register_forward_hook(_exit, with_kwargs=True, always_call=True))
    return True
