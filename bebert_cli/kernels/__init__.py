"""CPU kernels for binary (1-bit) BERT inference.

Compiled path: the optional C/OpenMP extension ``bebert_cli._kernels`` (XNOR/popcount,
level picked at run time: on x86 AVX-512 VPOPCNTDQ, AVX2 or portable scalar; on aarch64
NEON or scalar). Fallback: pure torch (``_reference``), with the same numbers bit for bit
and a one-time warning.

Conventions: sign(x) = +1 for x >= 0 (0 and -0.0 included), else -1; bit 1 = +1.
Packed weights on disk: uint8 [N, ceil(K/8)], bit i of byte j = column 8j+i, padding 0.

Environment:
  BEBERT_DISABLE_KERNELS=1   force the pure-torch path (warns once).
  BEBERT_KERNEL_BACKEND=...  x86: scalar | avx2 | avx512_vpopcntdq | torch;
                             aarch64: scalar | neon | torch (default: the best compiled one).
  BEBERT_LOWBIT_KERNEL=...   avx512_vpopcntdq, 4-bit LSQ linears (w1a4): tables | dot (default:
                             measured once per process, see `lowbit_kernel`).
Threads: ``num_threads`` argument, default ``torch.get_num_threads()`` (which follows
OMP_NUM_THREADS and torch.set_num_threads). These are inference kernels: no autograd.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings

import torch

from . import _reference as _ref
from ._reference import pack_sign_words, pack_signs_u8, sign_pm1

__all__ = [
    "BinaryGemm",
    "LsqGemm",
    "PackedWeight",
    "available_backends",
    "backend",
    "bi_attention",
    "bi_attention_bits",
    "binary_gemm",
    "binary_linear",
    "binary_matmul_bits",
    "forced_backend",
    "lowbit_linear",
    "lsq_attention_context",
    "lsq_attention_scores",
    "lsq_linear",
    "lsq_quantize",
    "lowbit_kernel",
    "lsq_uses_tables",
    "pack_sign_words",
    "pack_signs_u8",
    "prepare_binary_weight",
    "set_backend",
    "set_lowbit_kernel",
    "sign_pm1",
    "unpack_signs_u8",
]

def _load():
    if os.environ.get("BEBERT_DISABLE_KERNELS", "").strip() not in ("", "0"):
        return None, "BEBERT_DISABLE_KERNELS=1"
    if sys.byteorder != "little":  # the kernels read uint8 rows as little-endian words
        return None, "big-endian host"
    try:
        from bebert_cli import _kernels  # torch is imported first: OpenMP runtime is shared
    except ImportError as exc:
        return None, f"extension not built: {exc}"
    return _kernels, ""


_ext, _reason = _load()
# The extension's level names, index = the level code its functions take (the set depends on the
# CPU architecture it was built for: x86 scalar/avx2/avx512_vpopcntdq, aarch64 scalar/neon).
_LEVELS: tuple[str, ...] = tuple(_ext.info()["levels"]) if _ext is not None else ()
_best = _ext.best_level() if _ext is not None else -1
# The level whose GEMM reads a second weight layout (x86: avx2), None if none; see PackedWeight.kernel_nibbles.
_NIBBLES_LEVEL: int | None = _ext.info()["nibbles_level"] if _ext is not None else None
if _NIBBLES_LEVEL is not None and _NIBBLES_LEVEL < 0:
    _NIBBLES_LEVEL = None
_level = _best  # -1 = pure torch
_warned = False

_env_backend = os.environ.get("BEBERT_KERNEL_BACKEND", "").strip()
if _env_backend and _ext is not None:
    if _env_backend == "torch":
        _level = -1
    elif _env_backend in _LEVELS and _LEVELS.index(_env_backend) <= _best:
        _level = _LEVELS.index(_env_backend)
    else:
        warnings.warn(
            f"bebert: BEBERT_KERNEL_BACKEND={_env_backend!r} is not available here; using {_LEVELS[_best]}",
            RuntimeWarning,
            stacklevel=2,
        )


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first ("torch" always last)."""
    return [_LEVELS[i] for i in range(_best, -1, -1)] + ["torch"]


def forced_backend() -> str | None:
    """The backend BEBERT_KERNEL_BACKEND asked for, when it is in use; None when unset.

    Raises RuntimeError when it names a backend this process does not run, so that a test run
    meant for one backend never silently exercises another."""
    if not _env_backend:
        return None
    if _env_backend != backend():
        raise RuntimeError(
            f"BEBERT_KERNEL_BACKEND={_env_backend!r} is not available here (available: {available_backends()})"
        )
    return _env_backend


def backend() -> str:
    """The backend in use: a name from ``available_backends()`` (e.g. "avx2", "neon", "torch")."""
    return _LEVELS[_level] if _level >= 0 else "torch"


def set_backend(name: str) -> str:
    """Select a backend (e.g. to test "scalar" on an AVX-512 or NEON machine); returns the previous one."""
    global _level
    if name not in available_backends():
        raise ValueError(f"backend {name!r} not available; choose from {available_backends()}")
    prev = backend()
    _level = -1 if name == "torch" else _LEVELS.index(name)
    return prev


def _use_ext(*tensors: torch.Tensor) -> bool:
    global _warned
    if _level >= 0:
        return all(t.device.type == "cpu" for t in tensors)
    if _ext is None and not _warned:  # explicit set_backend("torch") does not warn
        _warned = True
        warnings.warn(
            f"bebert: compiled binary kernels unavailable ({_reason}); using the slower pure-torch path",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def pool_available() -> bool:
    """Whether `pool_session` runs the kernels on the revocable pool (compiled, pthreads, BEBERT_POOL != 0)."""
    return _ext is not None and hasattr(_ext, "pool_session") and bool(_ext.pool_available())


# Open pool sessions and the thread count the kernels use inside them (torch is then on one thread).
_pool = {"depth": 0, "threads": 0}
_pool_lock = threading.Lock()


@contextlib.contextmanager
def pool_session(threads: int):
    """Inside: the kernels' loops run on `threads` threads of the C extension's revocable pool
    (csrc/bebert_parallel.h), whose workers spin between loops and whose loops never wait for a worker
    that has not started. For one short forward with torch on one thread (`quant/serial.py`): OpenMP's
    passive wait policy makes every region wait for a sleeping thread. Sessions nest and overlap
    across threads; the largest `threads` of those open applies. Without the pool: no effect."""
    if not pool_available() or threads <= 1:
        yield
        return
    with _pool_lock:
        _pool["depth"] += 1
        _pool["threads"] = max(_pool["threads"], int(threads))
    _ext.pool_session(1)
    try:
        yield
    finally:
        _ext.pool_session(0)
        with _pool_lock:
            _pool["depth"] -= 1
            if not _pool["depth"]:
                _pool["threads"] = 0


def _threads(num_threads: int | None) -> int:
    return int(num_threads) if num_threads else (_pool["threads"] or torch.get_num_threads())


def _check(t: torch.Tensor, name: str, dtype: torch.dtype, ndim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def _check_vec(t: torch.Tensor | None, name: str, n: int) -> torch.Tensor | None:
    if t is None:
        return None
    _check(t, name, torch.float32)
    if tuple(t.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    return t.contiguous()


def unpack_signs_u8(p: torch.Tensor, K: int) -> torch.Tensor:
    """uint8 [..., ceil(K/8)] -> float32 [..., K] of +-1 (inverse of pack_signs_u8)."""
    _check(p, "p", torch.uint8)
    if p.dim() == 0 or p.shape[-1] != (K + 7) // 8:
        raise ValueError(f"packed last dim must be ceil({K}/8) = {(K + 7) // 8}, got shape {tuple(p.shape)}")
    return _ref.unpack_bits(p, K)


class PackedWeight:
    """A binary weight repacked for the GEMM kernels (build once at load time).

    ``words``: int32 [ceil(N/16), ceil(K/32), 16]; ``words[b, w, l]`` holds columns
    32w..32w+31 of output row 16b+l (bit i = column 32w+i). Rows and bits past N/K are 0.
    Interleaving 16 rows lets one 512-bit load feed 16 output columns.
    """

    __slots__ = ("words", "K", "N", "_signs", "_nibbles")

    def __init__(self, words: torch.Tensor, K: int, N: int):
        self.words, self.K, self.N = words, int(K), int(N)
        self._signs: torch.Tensor | None = None
        self._nibbles: torch.Tensor | None = None

    def kernel_nibbles(self) -> torch.Tensor:
        """The AVX2 GEMM's weight layout (uint8 [ceil(N/16), ceil(K/8), 32]: the low then the high nibbles
        of byte q of 16 output rows, one nibble a byte), built from ``words`` on first use and kept, so
        only processes that run that level (or the AVX-512 lookup tables of w1a4) pay its memory (twice
        that of ``words``)."""
        if self._nibbles is None:
            words = self.words.contiguous()
            out = torch.empty(_ext.weight_nibbles_size(self.K, self.N), dtype=torch.uint8)
            _ext.weight_nibbles(words.data_ptr(), self.K, self.N, out.data_ptr())
            self._nibbles = out.view((self.N + 15) // 16, (self.K + 7) // 8, 32)
        return self._nibbles

    def signs(self) -> torch.Tensor:
        """Dense float32 [N, K] of +-1 (cached; used by the pure-torch path)."""
        if self._signs is None:
            rows = self.words.transpose(1, 2).reshape(-1, self.words.shape[1]).contiguous()
            self._signs = _ref.unpack_bits(rows.view(torch.uint8), self.K)[: self.N].contiguous()
        return self._signs

    def __repr__(self) -> str:
        return f"PackedWeight(N={self.N}, K={self.K})"


def _interleave(rows_u8: torch.Tensor, K: int) -> torch.Tensor:
    """uint8 [N, >= ceil(K/8)] little-endian bit rows -> PackedWeight.words layout."""
    N, nbytes, W = rows_u8.shape[0], (K + 7) // 8, (K + 31) // 32
    NB = (N + 15) // 16
    buf = torch.zeros(NB * 16, W * 4, dtype=torch.uint8)
    buf[:N, :nbytes] = rows_u8[:, :nbytes]
    if K % 8:  # padding bits must be 0: they would otherwise count in XOR/AND popcounts
        buf[:N, nbytes - 1] &= (1 << (K % 8)) - 1
    return buf.view(torch.int32).view(NB, 16, W).transpose(1, 2).contiguous()


def prepare_binary_weight(weight_packed_u8: torch.Tensor, K: int) -> PackedWeight:
    """uint8 [N, ceil(K/8)] (checkpoint layout) -> PackedWeight for binary_linear/lowbit_linear."""
    _check(weight_packed_u8, "weight_packed_u8", torch.uint8, 2)
    if weight_packed_u8.shape[1] != (K + 7) // 8:
        raise ValueError(f"weight_packed_u8 must be [N, ceil({K}/8)], got {tuple(weight_packed_u8.shape)}")
    N = weight_packed_u8.shape[0]
    return PackedWeight(_interleave(weight_packed_u8.detach().cpu(), K), K, N)


def binary_linear(
    x: torch.Tensor,
    w: PackedWeight,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    shift: float = 0.0,
    *,
    num_threads: int | None = None,
) -> torch.Tensor:
    """y = (sign(x - shift) . sign_w) * scale + bias, x float32 [..., K] -> [..., N].

    The dot is an exact integer (XNOR/popcount); `* scale` and `+ bias` round separately,
    so y equals ``F.linear(sign(x - shift), sign_w) * scale + bias`` bit for bit.
    """
    _check(x, "x", torch.float32)
    if x.dim() == 0 or x.shape[-1] != w.K:
        raise ValueError(f"x last dim must be K={w.K}, got shape {tuple(x.shape)}")
    out = binary_gemm(x.detach().reshape(-1, w.K), w, scale, bias, shift=shift, num_threads=num_threads)
    return out.reshape(*x.shape[:-1], w.N)


def lowbit_linear(
    x_int: torch.Tensor,
    w: PackedWeight,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    num_threads: int | None = None,
) -> torch.Tensor:
    """y = (x_int . sign_w) * scale + bias for int8 activations [..., K] (w1a4 / w1a8) -> float32 [..., N]."""
    _check(x_int, "x_int", torch.int8)
    if x_int.dim() == 0 or x_int.shape[-1] != w.K:
        raise ValueError(f"x_int last dim must be K={w.K}, got shape {tuple(x_int.shape)}")
    scale, bias = _check_vec(scale, "scale", w.N), _check_vec(bias, "bias", w.N)
    x2 = x_int.reshape(-1, w.K).contiguous()
    if _use_ext(x2, scale, *(() if bias is None else (bias,))):
        out = torch.empty(x2.shape[0], w.N, dtype=torch.float32)
        _ext.lowbit_linear(
            x2.data_ptr(), x2.shape[0], w.K, w.words.data_ptr(), w.N, scale.data_ptr(),
            0 if bias is None else bias.data_ptr(), out.data_ptr(), _level, _threads(num_threads),
        )  # fmt: skip
    else:
        out = _ref.lowbit_linear(x2, w.signs().to(x_int.device), scale, bias)
    return out.reshape(*x_int.shape[:-1], w.N)


# AVX-512, 4-bit LSQ ranges: two kernels with the same sums. "tables": lookup tables of partial sums
# (VPSHUFB, weights in the nibbles layout); "dot": VPDPBUSD int8 dot products. Which is faster depends
# on the core (Ice Lake server: tables 1.1-2.3x per linear; Zen 4 has two wide VNNI pipes), so it is measured.
_LOWBIT_ENV = "BEBERT_LOWBIT_KERNEL"
LOWBIT_KERNELS = ("tables", "dot")
_lowbit_choice: dict = {}
_lowbit_lock = threading.Lock()  # one trial, even when the first w1a4 forwards run in several threads


def _lowbit_trial() -> dict:
    """Time both kernels on one BERT-sized product (256 x 768 x 768, one thread): best of 5 alternating."""
    import time

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 768, generator=g)
    w = prepare_binary_weight(torch.randint(0, 256, (768, 96), dtype=torch.uint8, generator=g), 768)
    nib, scale, out = w.kernel_nibbles(), torch.ones(768), torch.empty(256, 768)
    best = {}
    for _ in range(5):
        for name in LOWBIT_KERNELS:
            _ext.set_lowbit_lut(name == "tables")
            t0 = time.perf_counter()
            _ext.lsq_linear(x.data_ptr(), 256, 768, 0.1, -8, 7, w.words.data_ptr(), nib.data_ptr(), 768,
                            scale.data_ptr(), 0, out.data_ptr(), _LEVELS.index("avx512_vpopcntdq"), 1)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t0) * 1e3)
    return best


def lowbit_kernel() -> dict:
    """The AVX-512 kernel of 4-bit LSQ linears this process uses: {"kernel": "tables" | "dot", "why":
    ..., "ms": {kernel: best time of the trial} when measured}. BEBERT_LOWBIT_KERNEL names one;
    otherwise the first call times both (about 10 ms) and keeps the faster. Both give the same bits."""
    with _lowbit_lock:
        return _lowbit_kernel_locked()


def _lowbit_kernel_locked() -> dict:
    if not _lowbit_choice:
        if _ext is None or "avx512_vpopcntdq" not in _LEVELS[: _best + 1]:
            return {"kernel": None, "why": "no avx512_vpopcntdq level here"}
        raw = os.environ.get(_LOWBIT_ENV, "").strip()
        if raw and raw not in LOWBIT_KERNELS:
            from bebert_cli.errors import UsageError

            raise UsageError(f"{_LOWBIT_ENV} must be one of {', '.join(LOWBIT_KERNELS)}, not {raw!r}")
        if raw:
            choice = {"kernel": raw, "why": f"{_LOWBIT_ENV}={raw}"}
        else:
            ms = _lowbit_trial()
            choice = {"kernel": min(ms, key=ms.get), "why": "measured: the faster on this CPU",
                      "ms": {k: round(v, 3) for k, v in ms.items()}}
        _ext.set_lowbit_lut(choice["kernel"] == "tables")
        _lowbit_choice.update(choice)
    return dict(_lowbit_choice)


def set_lowbit_kernel(name: str) -> str:
    """Use `name` ("tables" or "dot") for AVX-512 4-bit LSQ linears from now on (tests, benchmarks);
    returns the kernel used before (measuring it if nothing had chosen one yet)."""
    if name not in LOWBIT_KERNELS:
        raise ValueError(f"lowbit kernel {name!r} unknown; choose from {LOWBIT_KERNELS}")
    prev = lowbit_kernel()
    if prev["kernel"] is None:
        raise ValueError("no avx512_vpopcntdq level here: there is no choice of 4-bit kernel")
    _lowbit_choice.clear()
    _lowbit_choice.update({"kernel": name, "why": "set_lowbit_kernel"})
    _ext.set_lowbit_lut(name == "tables")
    return prev["kernel"]


def lsq_uses_tables(qmin: int, qmax: int) -> bool:
    """Whether `lsq_linear` of this range runs a lookup-table kernel here: any 4-bit range on AVX2 (the
    only 4-bit kernel there), on AVX-512 where the tables measured faster than VPDPBUSD. It then reads
    the weights' `kernel_nibbles`, which the packed runtime builds at load time (built during the first
    forward, between its transient buffers, they left glibc's heap 60-120 MB larger at BERT-base size)."""
    if qmax - qmin > 15 or _level < 0:
        return False
    level = _LEVELS[_level]
    return level == "avx2" or (level == "avx512_vpopcntdq"
                               and (_lowbit_choice.get("kernel") or lowbit_kernel()["kernel"]) == "tables")


def _lsq_range(step: float, qmin: int, qmax: int, *, int8: bool) -> None:
    if not qmin <= qmax or (int8 and not -128 <= qmin <= qmax <= 127):
        raise ValueError(f"LSQ range [{qmin}, {qmax}] is not {'within int8' if int8 else 'ordered'}")
    if int8 and not (step != 0.0 and abs(step) < float("inf")):
        raise ValueError(f"LSQ step must be a finite nonzero number, got {step}")


def lsq_linear(
    x: torch.Tensor,
    w: PackedWeight,
    step: float,
    qmin: int,
    qmax: int,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    num_threads: int | None = None,
) -> torch.Tensor:
    """y = (q . sign_w) * scale + bias with q = round(clamp(x / step, qmin, qmax)) (LSQ, w1a4 / w1a8),
    x float32 [..., K] -> float32 [..., N]; the quantization runs inside the kernel's input packing.

    q is computed as torch computes LsqActivation's integers (float32 division, round half to even),
    so y equals ``lowbit_linear(q.to(int8), ...)`` bit for bit (NaN inputs excepted: q has none).
    ``step`` is the quantizer's float32 step as a Python float (finite, nonzero); the range must fit int8.
    Calling one layer many times: ``LsqGemm`` checks its weight, range, scale and bias once."""
    return LsqGemm(w, step, qmin, qmax, scale, bias)(x, num_threads=num_threads)


class LsqGemm:
    """``lsq_linear`` of one layer with its weight, LSQ range, scale and bias checked and their pointers
    taken once (the fused w1a4 / w1a8 layer keeps one per linear: at batch 1 the checks cost about as
    much as a small GEMM), so that a call checks only its input. Same results as ``lsq_linear``."""

    __slots__ = ("w", "step", "qmin", "qmax", "scale", "bias", "_cpu", "_w_ptr", "_s_ptr", "_b_ptr", "_nib_ptr")

    def __init__(self, w: PackedWeight, step: float, qmin: int, qmax: int, scale: torch.Tensor,
                 bias: torch.Tensor | None = None):
        if not isinstance(w, PackedWeight):
            raise TypeError(f"w must be a PackedWeight (prepare_binary_weight), got {type(w).__name__}")
        self.w, self.step, self.qmin, self.qmax = w, float(step), int(qmin), int(qmax)
        _lsq_range(self.step, self.qmin, self.qmax, int8=True)
        self.scale, self.bias = _check_vec(scale, "scale", w.N), _check_vec(bias, "bias", w.N)
        self._cpu = all(t.device.type == "cpu" for t in (w.words, self.scale, self.bias) if t is not None)
        self._w_ptr, self._s_ptr = w.words.data_ptr(), self.scale.data_ptr()
        self._b_ptr = 0 if self.bias is None else self.bias.data_ptr()
        self._nib_ptr = 0  # the nibbles layout's, taken when a call first runs the lookup tables

    def __call__(self, x: torch.Tensor, *, num_threads: int | None = None) -> torch.Tensor:
        """See ``lsq_linear``."""
        _check(x, "x", torch.float32)
        w = self.w
        if x.dim() == 0 or x.shape[-1] != w.K:
            raise ValueError(f"x last dim must be K={w.K}, got shape {tuple(x.shape)}")
        x2 = x.detach().reshape(-1, w.K)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        if not (_level >= 0 and self._cpu and x2.is_cpu) and not (self._cpu and _use_ext(x2)):
            out = _ref.lsq_linear(x2, w.signs().to(x2.device), self.step, self.qmin, self.qmax, self.scale, self.bias)
            return out.reshape(*x.shape[:-1], w.N)
        nib = 0
        if lsq_uses_tables(self.qmin, self.qmax):
            nib = self._nib_ptr or w.kernel_nibbles().data_ptr()
            self._nib_ptr = nib
        out = torch.empty(x2.shape[0], w.N, dtype=torch.float32)
        _ext.lsq_linear(
            x2.data_ptr(), x2.shape[0], w.K, self.step, self.qmin, self.qmax, self._w_ptr, nib, w.N, self._s_ptr,
            self._b_ptr, out.data_ptr(), _level, _threads(num_threads),
        )  # fmt: skip
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], w.N)


def _dense_order(x: torch.Tensor) -> list[int] | None:
    """A permutation that makes `x` contiguous (x is a permuted view of dense memory), or None."""
    order = sorted(range(x.dim()), key=lambda d: (-x.stride(d), -x.shape[d]))
    return order if x.permute(order).is_contiguous() else None


def lsq_quantize(x: torch.Tensor, step: float, qmin: float, qmax: float, *, inplace: bool = False,
                 num_threads: int | None = None) -> torch.Tensor:
    """LsqActivation's output in eval, ``q * step`` with q as in `lsq_linear`, in one pass; the same
    float bits as the quantizer's torch ops (NaN stays NaN). float32 in, float32 out with x's strides
    (so a following matmul sees the layout it would have seen). ``inplace=True`` overwrites x and
    returns it (the packed attention quantizes its probabilities so: one buffer less per layer)."""
    _check(x, "x", torch.float32)
    step, qmin, qmax = float(step), float(qmin), float(qmax)
    _lsq_range(step, qmin, qmax, int8=False)
    given, x = x, x.detach()
    order = _dense_order(x) if x.numel() else None
    if order is None or not _use_ext(x):
        out = _ref.lsq_quantize(x, step, qmin, qmax)
        if not inplace:
            return out
        x.copy_(out)
        return given
    # The kernel is elementwise (each output written from its own input only), so out may be x.
    out = given if inplace else torch.empty_like(x)  # same strides as x (dense, non-overlapping)
    xp, op = x.permute(order), out.permute(order)
    _ext.lsq_quantize(xp.data_ptr(), x.numel(), step, qmin, qmax, op.data_ptr(), _level, _threads(num_threads))
    return out


# Where the attention products' float matmuls of LSQ integers are exact (every partial sum < 2**24),
# so that integer kernels can reproduce them; elsewhere the torch path runs (the same float ops).
_EXACT_BOUND = 1 << 24


def _lsq_range_of(r, *, lo: int, hi: int, name: str) -> tuple[float, int, int]:
    step, qmin, qmax = float(r[0]), int(r[1]), int(r[2])
    if not (lo <= qmin <= qmax <= hi) or not (step != 0.0 and abs(step) < float("inf")):
        raise ValueError(f"{name}: LSQ step {step} and range [{qmin}, {qmax}] do not fit [{lo}, {hi}]")
    return step, qmin, qmax


def _amax(r) -> int:
    return max(abs(r[1]), abs(r[2]))


def _head_strides(t: torch.Tensor, name: str) -> tuple[int, int, int]:
    _check(t, name, torch.float32, 4)
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name}: the last dimension must be dense (stride 1), got strides {t.stride()}")
    return t.stride(0), t.stride(1), t.stride(2)


def lsq_attention_scores(q: torch.Tensor, k: torch.Tensor, q_range, k_range, c: float, *,
                         num_threads: int | None = None) -> torch.Tensor:
    """Attention scores of w1a4 / w1a8 (packed format 3) as integer products: ``float(q_int @ k_int^T) * c``
    with q_int = round(clamp(q / step, qmin, qmax)) as in `lsq_linear` (k likewise), q [B, H, Lq, D] and
    k [B, H, Lk, D] float32 views with dense rows (e.g. transposes of the projections' outputs); ranges
    are ``(step, qmin, qmax)`` within int8; c is the float32 product scale as a Python float. Returns
    float32 [B, H, Lq, Lk], the same bits as the torch expression (`_reference.lsq_attention_scores`)."""
    qs, ks = _head_strides(q, "q"), _head_strides(k, "k")
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    if tuple(k.shape) != (B, H, Lk, D):
        raise ValueError(f"shapes q {tuple(q.shape)} and k {tuple(k.shape)} do not match")
    q_range = _lsq_range_of(q_range, lo=-128, hi=127, name="q")
    k_range = _lsq_range_of(k_range, lo=-128, hi=127, name="k")
    if not _use_ext(q, k) or D * _amax(q_range) * _amax(k_range) >= _EXACT_BOUND:
        return _ref.lsq_attention_scores(q.detach(), k.detach(), q_range, k_range, c)
    out = torch.empty(B, H, Lq, Lk, dtype=torch.float32)
    _ext.lsq_attention_scores(
        q.data_ptr(), *qs, k.data_ptr(), *ks, B, H, Lq, Lk, D, *q_range, *k_range, float(c), out.data_ptr(),
        _level, _threads(num_threads),
    )  # fmt: skip
    return out


def lsq_attention_context(p: torch.Tensor, v: torch.Tensor, p_range, v_range, c: float, *,
                          num_threads: int | None = None) -> torch.Tensor:
    """The attention output of w1a4 / w1a8 (packed format 3): ``float(p_int @ v_int) * c`` with p the
    probabilities [B, H, Lq, Lk] (unsigned integers, 0..255) and v [B, H, Lk, D] (signed, int8), as
    [B, Lq, H, D] contiguous: the layout the attention returns, so no transpose copy follows."""
    if not p.is_contiguous():
        p = p.contiguous()
    _check(p, "p", torch.float32, 4)
    vs = _head_strides(v, "v")
    B, H, Lq, Lk = p.shape
    D = v.shape[-1]
    if tuple(v.shape) != (B, H, Lk, D):
        raise ValueError(f"shapes p {tuple(p.shape)} and v {tuple(v.shape)} do not match")
    p_range = _lsq_range_of(p_range, lo=0, hi=255, name="p")
    v_range = _lsq_range_of(v_range, lo=-128, hi=127, name="v")
    if not _use_ext(p, v) or Lk * _amax(p_range) * _amax(v_range) >= _EXACT_BOUND:
        return _ref.lsq_attention_context(p.detach(), v.detach(), p_range, v_range, c)
    out = torch.empty(B, Lq, H, D, dtype=torch.float32)
    _ext.lsq_attention_context(
        p.data_ptr(), v.data_ptr(), *vs, B, H, Lq, Lk, D, *p_range, *v_range, float(c), out.data_ptr(),
        *(out.stride(0), out.stride(2), out.stride(1)), _level, _threads(num_threads),
    )  # fmt: skip
    return out


def binary_matmul_bits(
    a_bits: torch.Tensor, b_bits: torch.Tensor, K: int, *, num_threads: int | None = None
) -> torch.Tensor:
    """Raw +-1 dot products from packed bits: int64 [M, W], [N, W] (W >= ceil(K/64),
    bit i of word w = column 64w+i, bits past K ignored) -> int32 [M, N] = K - 2*popcount(a ^ b)."""
    _check(a_bits, "a_bits", torch.int64, 2)
    _check(b_bits, "b_bits", torch.int64, 2)
    W64 = (K + 63) // 64
    if a_bits.shape[1] < W64 or b_bits.shape[1] < W64:
        raise ValueError(f"a_bits/b_bits need >= ceil({K}/64) = {W64} words, got {a_bits.shape[1]}, {b_bits.shape[1]}")
    if not _use_ext(a_bits, b_bits):
        return _ref.matmul_bits(a_bits, b_bits, K)
    M, N, W = a_bits.shape[0], b_bits.shape[0], (K + 31) // 32
    a32 = a_bits.contiguous().view(torch.int32)
    if K % 32:  # zero a's padding bits (b's are zeroed by _interleave)
        a32 = a32[:, :W].clone()
        a32[:, -1] &= (1 << (K % 32)) - 1
    b_words = _interleave(b_bits.detach().cpu().contiguous().view(torch.uint8), K)
    out = torch.empty(M, N, dtype=torch.int32)
    _ext.matmul_bits(a32.data_ptr(), M, K, a32.shape[1], b_words.data_ptr(), N, out.data_ptr(), _level,
                     _threads(num_threads))  # fmt: skip
    return out


def bi_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    *,
    num_threads: int | None = None,
) -> torch.Tensor:
    """BiBERT binary attention. q [B,H,Lq,D], k/v [B,H,Lk,D] float32; key_mask [B, Lk]
    bool/int, True (nonzero) = key may be attended (HF attention_mask convention).

    A[i,j] = key_mask[j] and sign(q_i).sign(k_j) >= 0; out[i] = sum_j A[i,j] sign(v_j),
    exact integers returned as float32 [B,H,Lq,D]. Scaling / additive masks do not change
    the >= 0 test on unmasked keys, so they are not arguments.
    """
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        _check(t, n, torch.float32, 4)
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    if tuple(k.shape) != (B, H, Lk, D) or tuple(v.shape) != (B, H, Lk, D):
        raise ValueError(f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if key_mask is not None:
        if key_mask.dtype.is_floating_point or key_mask.dtype.is_complex:
            raise TypeError(f"key_mask must be bool or integer (True = attend), got {key_mask.dtype}")
        if tuple(key_mask.shape) != (B, Lk):
            raise ValueError(f"key_mask must be [B, Lk] = {(B, Lk)}, got {tuple(key_mask.shape)}")
    if not _use_ext(q, k, v, *(() if key_mask is None else (key_mask,))):
        return _ref.bi_attention(q, k, v, key_mask)
    q, k, v = (t.detach().contiguous() for t in (q, k, v))
    keep = None if key_mask is None else (key_mask != 0).to(torch.uint8).contiguous()
    out = torch.empty(B, H, Lq, D, dtype=torch.float32)
    _ext.bi_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), 0 if keep is None else keep.data_ptr(),
        B, H, Lq, Lk, D, out.data_ptr(), _level, _threads(num_threads),
    )  # fmt: skip
    return out


_GEMM_OUT = {"float": 0, "sign": 2}  # the C kernel's BB_OUT_* codes


class BinaryGemm:
    """``binary_gemm`` with its weight, scale and bias checked and their pointers taken once (the fused
    layer keeps one per linear), so that a call checks only what changes: the input and the residual.
    Same results as ``binary_gemm``, which builds one per call."""

    __slots__ = ("w", "scale", "bias", "_cpu", "_words_k", "_words_n", "_w_ptr", "_s_ptr", "_b_ptr", "_nib_ptr")

    def __init__(self, w: PackedWeight, scale: torch.Tensor, bias: torch.Tensor | None = None):
        if not isinstance(w, PackedWeight):
            raise TypeError(f"w must be a PackedWeight (prepare_binary_weight), got {type(w).__name__}")
        self.w = w
        self.scale, self.bias = _check_vec(scale, "scale", w.N), _check_vec(bias, "bias", w.N)
        self._cpu = all(t.device.type == "cpu" for t in (w.words, self.scale, self.bias) if t is not None)
        self._words_k, self._words_n = (w.K + 31) // 32, (w.N + 31) // 32
        self._w_ptr, self._s_ptr = w.words.data_ptr(), self.scale.data_ptr()
        self._b_ptr = 0 if self.bias is None else self.bias.data_ptr()
        self._nib_ptr = 0  # the nibbles layout's, taken when a call first runs at that level

    def __call__(
        self,
        a: torch.Tensor,
        *,
        residual: torch.Tensor | None = None,
        out: str = "float",
        shift: float = 0.0,
        num_threads: int | None = None,
    ) -> torch.Tensor:
        """See ``binary_gemm``."""
        mode = _GEMM_OUT.get(out)
        if mode is None:
            raise ValueError(f"out must be one of {sorted(_GEMM_OUT)}, got {out!r}")
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"a must be a torch.Tensor, got {type(a).__name__}")
        w, shape = self.w, a.shape
        if len(shape) != 2:
            raise ValueError(f"a must be 2-D, got shape {tuple(shape)}")
        bits_in = a.dtype == torch.int32
        if not bits_in and a.dtype != torch.float32:
            raise TypeError(f"a must be torch.float32 (or int32 sign words), got {a.dtype}")
        if shape[1] != (self._words_k if bits_in else w.K):
            raise ValueError(f"a must be [M, {self._words_k if bits_in else w.K}], got shape {tuple(shape)}")
        M = shape[0]
        if residual is not None:
            if mode != 0:
                raise ValueError("residual only applies to out='float'")
            _check(residual, "residual", torch.float32)
            if residual.shape != (M, w.N):
                raise ValueError(f"residual must be [{M}, {w.N}], got shape {tuple(residual.shape)}")
            if not residual.is_contiguous():
                residual = residual.contiguous()
        if not a.is_contiguous():
            a = a.contiguous()
        fast = _level >= 0 and self._cpu and a.is_cpu and (residual is None or residual.is_cpu)
        if not (fast or (self._cpu and _use_ext(a, *(() if residual is None else (residual,))))):
            return _ref.binary_gemm(a.detach(), w.signs().to(a.device), self.scale, self.bias, residual, out, shift)
        if mode == 0:
            result = torch.empty(M, w.N, dtype=torch.float32)
        else:
            result = torch.empty(M, self._words_n, dtype=torch.int32)
        nib = 0
        if _level == _NIBBLES_LEVEL:
            nib = self._nib_ptr or w.kernel_nibbles().data_ptr()
            self._nib_ptr = nib
        _ext.binary_gemm(
            a.data_ptr(), int(bits_in), M, w.K, self._words_k, float(shift), self._w_ptr, nib, w.N, self._s_ptr,
            self._b_ptr, 0 if residual is None else residual.data_ptr(), result.data_ptr(), mode, _level,
            _threads(num_threads),
        )  # fmt: skip
        return result


def binary_gemm(
    a: torch.Tensor,
    w: PackedWeight,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    residual: torch.Tensor | None = None,
    out: str = "float",
    shift: float = 0.0,
    num_threads: int | None = None,
) -> torch.Tensor:
    """The binary GEMM of the fused packed layer. ``a``: float32 [M, K] (its signs, of ``a - shift``,
    are packed here) or int32 sign words [M, ceil(K/32)] (``pack_sign_words`` layout).

    ``out="float"``: float32 [M, N] = dot * scale + bias (+ residual), each a separate rounding, so it
    equals ``binary_linear(...) + residual`` bit for bit. ``out="sign"``: int32 sign words [M, ceil(N/32)]
    of that float (no residual). Calling one weight many times: ``BinaryGemm`` checks it once.
    """
    if out not in _GEMM_OUT:
        raise ValueError(f"out must be one of {sorted(_GEMM_OUT)}, got {out!r}")
    return BinaryGemm(w, scale, bias)(a, residual=residual, out=out, shift=shift, num_threads=num_threads)


def bi_attention_bits(
    qkv_words: torch.Tensor,
    key_mask: torch.Tensor | None,
    batch: int,
    heads: int,
    seq_len: int,
    head_size: int,
    *,
    num_threads: int | None = None,
) -> torch.Tensor:
    """BiBERT attention on sign words: ``qkv_words`` int32 [B*L, 3*H*D/32], each row the sign words of
    [q | k | v] (head h at word h*D/32 of each part, so D % 32 == 0); key_mask [B, L] as in
    ``bi_attention``. Returns int32 [B*L, H*D/32]: the sign words of ``bi_attention``'s output in the
    (B, L, H, D) order the attention-output dense reads."""
    _check(qkv_words, "qkv_words", torch.int32, 2)
    B, H, L, D = int(batch), int(heads), int(seq_len), int(head_size)
    if D <= 0 or D % 32:
        raise ValueError(f"head_size must be a positive multiple of 32, got {D}")
    wd = H * D // 32
    if tuple(qkv_words.shape) != (B * L, 3 * wd):
        raise ValueError(f"qkv_words must be [{B * L}, {3 * wd}], got shape {tuple(qkv_words.shape)}")
    if key_mask is not None and tuple(key_mask.shape) != (B, L):
        raise ValueError(f"key_mask must be [B, L] = {(B, L)}, got {tuple(key_mask.shape)}")
    if not _use_ext(qkv_words):
        return _ref.bi_attention_bits(qkv_words, key_mask, B, H, L, D)
    qkv = qkv_words.contiguous()
    keep = None if key_mask is None else (key_mask != 0).to(torch.uint8).contiguous()
    out = torch.empty(B * L, wd, dtype=torch.int32)
    _ext.bi_attention_bits(
        qkv.data_ptr(), 3 * wd, wd, 2 * wd, 0 if keep is None else keep.data_ptr(), B, H, L, D,
        out.data_ptr(), wd, _level, _threads(num_threads),
    )  # fmt: skip
    return out
