"""Where torch's exact GELU returns zero, so a GEMM epilogue can emit sign(gelu(y)) without gelu.

The next binary layer reads only sign(gelu(y)), with sign(-0.0) = +1. For y >= 0 that is +1. For
y < 0, gelu(y) = y * 0.5 * (1 + erf(y / sqrt 2)) is negative, except where erf rounds to exactly -1
and the product becomes -0.0. Where that starts depends on torch's erf, and torch has two: the
vectorised loop (SLEEF) and the scalar loop (libm) that handles strided inputs (and, in torch 2.13,
1-element tensors).
Measured on torch 2.13 / AVX-512: libm is zero for every y <= -5.5425944 and for none above;
SLEEF flickers between zero and non-zero over y in [-5.5426, -5.4858] (119,031 floats).

So the thresholds are measured here, once per process, on every float32 in [-8, -4] through both
loops: lo = the largest y at and below which both loops give zero, hi = the smallest y above which
neither does. The kernel decides everything else (see `gelu_sign_bit` in csrc/bebert_kernels.c)
and hands back the few values in (lo, hi], plus tiny, infinite (torch's vectorised GELU of +inf is
NaN) and NaN ones; `decide` settles them with torch itself. Where the two loops disagree, the
element's position decides which loop torch would have run it through, and that is measured too
(`_scalar_positions`). Trained models do put values there: a BiBERT MiniLM's FFN pre-activations
fall in (lo, hi] about once in 8,000.
"""

from __future__ import annotations

import functools
import struct

import torch
import torch.nn.functional as F

_SERIAL = 32768  # TensorIterator's grain size: smaller tensors run on one thread, no loop tails
_VEC_ALIGN = 64  # a multiple of every vectorised loop's step (2 x 16 floats for AVX-512)


def _bits(value: float) -> int:
    return struct.unpack("<i", struct.pack("<f", value))[0] & 0xFFFFFFFF


def _vectorised(x: torch.Tensor) -> torch.Tensor:
    """F.gelu through the vectorised loop only: serial slices padded to whole vector steps."""
    n = x.numel()
    padded = torch.zeros((n + _SERIAL - 1) // _SERIAL * _SERIAL if n > _SERIAL else -(-n // _VEC_ALIGN) * _VEC_ALIGN)
    padded[:n] = x
    step = min(_SERIAL, padded.numel())
    return torch.cat([F.gelu(padded[i : i + step]) for i in range(0, padded.numel(), step)])[:n]


def _scalar(x: torch.Tensor) -> torch.Tensor:
    """F.gelu through the scalar loop: a strided input is never vectorised."""
    return F.gelu(torch.stack([x, x], dim=1)[:, 0])


_SWEEP_CHUNK = 1 << 20  # floats per step of the sweep: keeps its memory at a few MB


def _sweep(loop) -> tuple[float, float] | None:
    """(first zero, last non-zero) of `loop`'s GELU over every float from -4.0 down to -8.0."""
    first_zero = last_nonzero = None
    start, stop = _bits(-4.0), _bits(-8.0) + 1
    for begin in range(start, stop, _SWEEP_CHUNK):
        codes = torch.arange(begin, min(begin + _SWEEP_CHUNK, stop), dtype=torch.int64).to(torch.int32)
        x = codes.view(torch.float32)
        zero = loop(x) == 0
        if first_zero is None and bool(zero.any()):
            first_zero = float(x[int(torch.argmax(zero.to(torch.uint8)))])
        nonzero = (~zero).nonzero()
        if nonzero.numel():
            last_nonzero = float(x[int(nonzero.max())])
        if begin == start and bool(zero[0]):
            return None  # zero already at -4: not the shape assumed here
        if begin + _SWEEP_CHUNK >= stop and not bool(zero[-1]):
            return None  # not zero at -8
    if first_zero is None or last_nonzero is None:
        return None
    return first_zero, last_nonzero


@functools.cache
def gelu_sign_thresholds() -> tuple[float, float] | None:
    """(lo, hi) for the kernels' `out="gelu_sign"`, or None when torch's GELU is not shaped as above.
    Measured once per process (about half a second: the scalar loop is the slow part)."""
    lo, hi = -4.0, -8.0
    with torch.inference_mode():
        for loop in (_vectorised, _scalar):
            edges = _sweep(loop)
            if edges is None:
                return None
            first_zero, last_nonzero = edges
            hi = max(hi, first_zero)
            lo = min(lo, float(torch.nextafter(torch.tensor(last_nonzero), torch.tensor(-10.0))))
        # spot checks of the two rules the sweep does not cover
        below = torch.tensor([-8.000001, -9.0, -100.0, -1e10, -3.4e38])
        above = torch.tensor([-3.9999998, -1.0, -1e-10, -1e-30])
        for f in (_vectorised, _scalar):
            if not bool((f(below) == 0).all()) or bool((f(above) == 0).any()):
                return None
    return lo, hi


@functools.cache
def _disagreeing_value() -> float | None:
    """A float the vectorised loop takes to zero and the scalar loop does not (a loop probe)."""
    thresholds = gelu_sign_thresholds()
    if thresholds is None:
        return None
    lo, hi = thresholds
    with torch.inference_mode():
        x = torch.arange(_bits(hi), _bits(lo) + 1, dtype=torch.int64).to(torch.int32).view(torch.float32)  # the band
        hit = ((_vectorised(x) == 0) & (_scalar(x) != 0)).nonzero()
    return float(x[int(hit[0])]) if hit.numel() else None


@functools.lru_cache(maxsize=64)
def _scalar_positions(numel: int, threads: int) -> torch.Tensor | None:
    """Flat indices that F.gelu on a contiguous tensor of `numel` floats computes in its scalar loop.

    TensorIterator splits the tensor among threads and runs each share through the vectorised loop,
    possibly with a scalar tail; rather than restating that policy, run it on a tensor filled with a value
    the two loops answer differently, and read back where the scalar loop ran. `threads` keys the
    cache (the split depends on it)."""
    probe = _disagreeing_value()
    if probe is None:
        return None
    with torch.inference_mode():
        return (F.gelu(torch.full((numel,), probe)) != 0).nonzero().flatten()


def decide(values: torch.Tensor, positions: torch.Tensor, numel: int) -> torch.Tensor | None:
    """sign(gelu(v)) >= 0 for each undecided value, as F.gelu on the whole contiguous tensor of `numel`
    floats would give it at flat index `positions`: where torch's two loops disagree, the position
    says which loop that element goes through. None if that cannot be worked out."""
    with torch.inference_mode():
        plus_vec, plus_scalar = _vectorised(values) >= 0, _scalar(values) >= 0  # -0.0 >= 0; NaN is not
        differ = plus_vec != plus_scalar
        if not bool(differ.any()):
            return plus_vec
        scalar_at = _scalar_positions(numel, torch.get_num_threads())
        if scalar_at is None:
            return None
        in_scalar_loop = torch.isin(positions, scalar_at)
        return torch.where(in_scalar_loop, plus_scalar, plus_vec)
