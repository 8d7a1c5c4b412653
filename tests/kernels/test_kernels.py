"""Compiled binary kernels vs the pure-torch reference: bit-exact on every backend
this CPU can run (avx512_vpopcntdq / avx2 / scalar are forced one after another)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from bebert_cli import kernels as bk
from bebert_cli.kernels import _reference as ref

KS = [1, 7, 63, 65, 130, 384, 1000]


def _weight(N, K, gen):
    wf = torch.randn(N, K, generator=gen)
    wf[0, : min(K, 5)] = 0.0  # sign(0) = +1 in the weights too
    return bk.prepare_binary_weight(bk.pack_signs_u8(wf), K), ref.sign_pm1(wf)


def _x(M, K, gen, shift=0.0):
    x = torch.randn(M, K, generator=gen)
    x[0, : min(K, 4)] = 0.0
    if K > 4:
        x[-1, 4 : min(K, 9)] = -0.0
    if shift:
        x[:, ::3] = shift  # x - shift == 0 exactly -> +1
    return x


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("K", [1, 7, 8, 9, 63, 64, 65, 130, 1000])
def test_pack_roundtrip(K):
    x = torch.randn(2, 3, K)
    x[0, 0, 0] = 0.0
    x[0, 1, 0] = -0.0
    p = bk.pack_signs_u8(x)
    assert p.dtype == torch.uint8 and p.shape == (2, 3, (K + 7) // 8)
    assert torch.equal(bk.unpack_signs_u8(p, K), ref.sign_pm1(x))
    assert bk.unpack_signs_u8(p, K)[0, 0, 0] == 1 and bk.unpack_signs_u8(p, K)[0, 1, 0] == 1
    if K % 8:  # padding bits are 0
        assert int(p[..., -1].max()) < (1 << (K % 8))


def test_pack_bit_order():
    x = -torch.ones(10)
    x[[0, 3, 9]] = 1.0  # bit i of byte j is column 8j+i
    assert bk.pack_signs_u8(x).tolist() == [0b00001001, 0b00000010]
    with pytest.raises(ValueError):
        bk.unpack_signs_u8(torch.zeros(3, dtype=torch.uint8), 10)


# ---------------------------------------------------------------- binary_linear


@pytest.mark.parametrize("K", KS)
def test_binary_linear(backend, K):
    gen = torch.Generator().manual_seed(K)
    for M, N in [(1, 1), (1, 37), (5, 16), (9, 33)]:
        w, sw = _weight(N, K, gen)
        scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
        for shift in (0.0, 0.37):
            x = _x(M, K, gen, shift)
            for b in (None, bias):
                y = bk.binary_linear(x, w, scale, b, shift)
                assert torch.equal(y, ref.binary_linear(x, sw, scale, b, shift)), (M, N, shift, b is None)
        # independent float64 oracle for the integer dot (scale 1, no bias)
        x = _x(M, K, gen)
        dot = (ref.sign_pm1(x).double() @ sw.double().T).float()
        assert torch.equal(bk.binary_linear(x, w, torch.ones(N)), dot)


def test_binary_linear_bert_shape_and_threads(backend):
    gen = torch.Generator().manual_seed(1)
    M, K, N = 37, 768, 3072 if backend != "scalar" else 768
    w, sw = _weight(N, K, gen)
    scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
    x = _x(M, K, gen).reshape(1, M, K)  # leading dims are kept
    y1 = bk.binary_linear(x, w, scale, bias, num_threads=1)
    y2 = bk.binary_linear(x, w, scale, bias, num_threads=2)
    assert y1.shape == (1, M, N)
    assert torch.equal(y1, y2)
    assert torch.equal(y1[0], ref.binary_linear(x[0], sw, scale, bias))


def test_binary_linear_sign_of_zero(backend):
    K, N = 70, 5
    gen = torch.Generator().manual_seed(2)
    w, sw = _weight(N, K, gen)
    for z in (0.0, -0.0):
        x = torch.full((1, K), z)
        assert torch.equal(bk.binary_linear(x, w, torch.ones(N))[0], sw.sum(1))  # all +1
    x = torch.full((1, K), 0.25)
    assert torch.equal(bk.binary_linear(x, w, torch.ones(N), shift=0.25)[0], sw.sum(1))


# ---------------------------------------------------------------- raw bits / lowbit


@pytest.mark.parametrize("K", KS + [64, 128])
def test_binary_matmul_bits(backend, K):
    gen = torch.Generator().manual_seed(K)
    W = (K + 63) // 64
    for M, N in [(1, 1), (6, 17), (13, 40)]:
        # random padding bits past K (must be ignored), and wider b than needed
        a = torch.randint(-(2**62), 2**62, (M, W), generator=gen)
        b = torch.randint(-(2**62), 2**62, (N, W + 1), generator=gen)
        out = bk.binary_matmul_bits(a, b, K)
        assert out.dtype == torch.int32 and out.shape == (M, N)
        assert torch.equal(out, ref.matmul_bits(a, b, K))


@pytest.mark.parametrize("K", KS)
def test_lowbit_linear(backend, K):
    gen = torch.Generator().manual_seed(K)
    for M, N in [(1, 3), (6, 33)]:
        w, sw = _weight(N, K, gen)
        scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
        for lo, hi in [(-8, 8), (-128, 128), (0, 2), (-1, 1)]:  # w1a4, w1a8, edge ranges
            x = torch.randint(lo, hi, (M, K), dtype=torch.int8, generator=gen)
            x[0, 0] = lo
            for b in (None, bias):
                y = bk.lowbit_linear(x, w, scale, b)
                assert torch.equal(y, ref.lowbit_linear(x, sw, scale, b)), (M, N, lo, hi)


def test_lowbit_linear_many_rows(backend):
    # several 128-row blocks + a ragged tail, K % 4 == 0 (rows read in place) and != 0 (copied)
    gen = torch.Generator().manual_seed(3)
    for K in (384, 130):
        w, sw = _weight(40, K, gen)
        scale, bias = torch.rand(40, generator=gen), torch.randn(40, generator=gen)
        x = torch.randint(-128, 128, (2, 150, K), dtype=torch.int8, generator=gen)
        y = bk.lowbit_linear(x, w, scale, bias, num_threads=2)
        assert y.shape == (2, 150, 40)
        assert torch.equal(y.reshape(300, 40), ref.lowbit_linear(x.reshape(300, K), sw, scale, bias))


def _lsq_inputs(M, K, step, gen):
    """Floats with exact rounding ties (k + 0.5) * step (step a power of two), -0.0, and values past the range."""
    x = torch.randn(M, K, generator=gen) * 6 * step
    ties = (torch.randint(-10, 10, (M, K), generator=gen).float() + 0.5) * step
    pick = torch.rand(M, K, generator=gen)
    x = torch.where(pick < 0.2, ties, x)
    x = torch.where(pick > 0.95, x * 100, x)
    x[0, 0] = -0.0
    return x


@pytest.fixture(params=bk.LOWBIT_KERNELS)
def lowbit_kernels(request):
    """On avx512_vpopcntdq both kernels of 4-bit ranges, one after the other; elsewhere the one there is."""
    if bk.backend() != "avx512_vpopcntdq":
        if request.param != bk.LOWBIT_KERNELS[0]:
            pytest.skip("one 4-bit kernel on this backend")
        yield None
        return
    prev = bk.set_lowbit_kernel(request.param)
    try:
        yield request.param
    finally:
        bk.set_lowbit_kernel(prev)


@pytest.mark.parametrize("K", KS)
def test_lsq_linear_is_the_quantizer_then_lowbit_linear(any_backend, lowbit_kernels, K):
    """lsq_linear == LsqActivation's integers (torch ops) through lowbit_linear, bit for bit (signed
    and unsigned ranges; on AVX-512 with the lookup tables and with VPDPBUSD)."""
    from bebert_cli.quant.quantizers import LsqActivation

    gen = torch.Generator().manual_seed(K + 1)
    for bits, signed, step in ((4, True, 0.0625), (8, True, 0.0078125), (4, True, -0.37), (8, True, 0.0213),
                               (4, False, 0.0137), (3, True, 0.25)):
        aq = LsqActivation(bits, signed=signed).eval()
        with torch.no_grad():
            aq.step.fill_(step)
        for M, N in [(1, 3), (6, 33), (150, 17)]:
            w, sw = _weight(N, K, gen)
            scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
            x = _lsq_inputs(M, K, abs(step), gen)
            q, _ = aq.unit(x)
            for b in (None, bias):
                y = bk.lsq_linear(x, w, float(aq.step.detach()), aq.qmin, aq.qmax, scale, b)
                assert torch.equal(y, ref.lowbit_linear(q.to(torch.int8), sw, scale, b)), (bits, step, M, N)
            # one LsqGemm called again (its pointers kept), and on a 3-D view: the same bits
            gemm = bk.LsqGemm(w, float(aq.step.detach()), aq.qmin, aq.qmax, scale, bias)
            for _ in range(2):
                assert torch.equal(gemm(x), y)
            assert torch.equal(gemm(x.view(1, M, K)), y.view(1, M, N))


@pytest.mark.parametrize("shape", [(5,), (3, 17), (2, 3, 40, 64), (1, 2, 128, 128)])
def test_lsq_quantize_is_the_quantizer(any_backend, shape):
    """lsq_quantize == LsqActivation(x) in eval (its five torch ops), bit for bit, NaN included, and
    keeps a transposed input's strides."""
    from bebert_cli.quant.quantizers import LsqActivation

    gen = torch.Generator().manual_seed(len(shape))
    for bits, signed, step in ((4, True, 0.0625), (8, True, 0.0213), (4, False, 0.0137), (8, False, 0.00390625)):
        aq = LsqActivation(bits, signed=signed).eval()
        with torch.no_grad():
            aq.step.fill_(step)
        x = _lsq_inputs(1, int(torch.tensor(shape).prod()), step, gen).reshape(shape)
        x.view(-1)[-1] = float("nan")
        with torch.no_grad():
            want = aq(x)
        got = bk.lsq_quantize(x, float(aq.step.detach()), aq.qmin, aq.qmax)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
        if x.dim() == 4:  # the (B, L, H, D) -> (B, H, L, D) view the attention quantizes
            xt = x.transpose(1, 2)
            got = bk.lsq_quantize(xt, float(aq.step.detach()), aq.qmin, aq.qmax)
            assert got.stride() == xt.stride()
            with torch.no_grad():
                want = aq(xt)
            assert torch.equal(got.nan_to_num(), want.nan_to_num()) and torch.equal(got.isnan(), want.isnan())
        # in place: the same bits written over x (a strided view too), x itself returned
        for src in ((x, x.transpose(1, 2)) if x.dim() == 4 else (x,)):
            with torch.no_grad():
                want = aq(src)
            buf = src.clone() if src.is_contiguous() else src.transpose(1, 2).clone().transpose(1, 2)
            got = bk.lsq_quantize(buf, float(aq.step.detach()), aq.qmin, aq.qmax, inplace=True)
            assert got is buf and got.stride() == src.stride()
            assert torch.equal(got.nan_to_num(), want.nan_to_num()) and torch.equal(got.isnan(), want.isnan())


def test_lowbit_kernel_choice(monkeypatch):
    """The AVX-512 4-bit kernel: named by BEBERT_LOWBIT_KERNEL, else measured (both timed); a bad name
    is a usage error; set_lowbit_kernel switches and says what was used before."""
    from bebert_cli.errors import UsageError

    if "avx512_vpopcntdq" not in bk.available_backends():
        assert bk.lowbit_kernel()["kernel"] is None
        with pytest.raises(ValueError, match="no avx512"):
            bk.set_lowbit_kernel("tables")
        return
    saved = dict(bk._lowbit_choice)
    try:
        for raw in ("tables", "dot"):
            bk._lowbit_choice.clear()
            monkeypatch.setenv("BEBERT_LOWBIT_KERNEL", raw)
            assert bk.lowbit_kernel() == {"kernel": raw, "why": f"BEBERT_LOWBIT_KERNEL={raw}"}
            assert bk._ext.lowbit_lut() == (raw == "tables")
        bk._lowbit_choice.clear()
        monkeypatch.setenv("BEBERT_LOWBIT_KERNEL", "fast")
        with pytest.raises(UsageError, match="BEBERT_LOWBIT_KERNEL must be one of tables, dot"):
            bk.lowbit_kernel()
        monkeypatch.delenv("BEBERT_LOWBIT_KERNEL")
        got = bk.lowbit_kernel()
        assert got["kernel"] in bk.LOWBIT_KERNELS and set(got["ms"]) == set(bk.LOWBIT_KERNELS)
        assert got["kernel"] == min(got["ms"], key=got["ms"].get) and bk._ext.lowbit_lut() == (got["kernel"] == "tables")
        assert bk.set_lowbit_kernel("dot") == got["kernel"] and bk.lowbit_kernel()["kernel"] == "dot"
        with pytest.raises(ValueError, match="unknown"):
            bk.set_lowbit_kernel("nope")
    finally:
        bk._lowbit_choice.clear()
        bk._lowbit_choice.update(saved)
        if saved:
            bk._ext.set_lowbit_lut(saved["kernel"] == "tables")


# ---------------------------------------------------------------- attention


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 7, 7, 5), (2, 2, 33, 40, 64), (1, 2, 128, 128, 64), (2, 1, 5, 70, 33)])
def test_bi_attention(backend, shape):
    B, H, Lq, Lk, D = shape
    gen = torch.Generator().manual_seed(Lk * D)
    q, k = torch.randn(B, H, Lq, D, generator=gen), torch.randn(B, H, Lk, D, generator=gen)
    v = torch.randn(B, H, Lk, D, generator=gen)
    q[..., 0] = 0.0
    v[..., 1 % D] = -0.0
    mask = torch.rand(B, Lk, generator=gen) > 0.3
    mask[0] = False  # a fully masked row -> all zeros
    for m in (None, mask, mask.to(torch.int64)):
        out = bk.bi_attention(q, k, v, m)
        assert torch.equal(out, ref.bi_attention(q, k, v, m)), m
    # non-contiguous inputs (as produced by HF's view().transpose()) are accepted
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(bk.bi_attention(qt, k, v, mask), ref.bi_attention(q, k, v, mask))


@pytest.mark.skipif(not bk.pool_available(), reason="the kernels' pool is not built here")
def test_the_pool_gives_the_same_bits(backend):
    """Inside a pool session every kernel entry (linears, int8 attention products, Bi-Attention) gives the
    one-thread bits; shapes above the threaded-work threshold, called repeatedly so that the worker
    takes items in some calls and arrives too late for others (both paths end the same)."""
    gen = torch.Generator().manual_seed(7)
    M, K, N = 40, 384, 768
    w, _ = _weight(N, K, gen)
    scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
    x = _x(M, K, gen)
    xq = _lsq_inputs(M, K, 0.0625, gen)
    q, k, v = (torch.randn(2, 4, 64, 32, generator=gen) for _ in range(3))
    p = torch.softmax(torch.randn(2, 4, 64, 64, generator=gen), -1)
    calls = {
        "binary_linear": lambda nt: bk.binary_linear(x, w, scale, bias, num_threads=nt),
        "lsq_linear 4-bit": lambda nt: bk.lsq_linear(xq, w, 0.0625, -8, 7, scale, bias, num_threads=nt),
        "lsq_linear 8-bit": lambda nt: bk.lsq_linear(xq, w, 0.0625, -128, 127, scale, bias, num_threads=nt),
        "lsq_quantize": lambda nt: bk.lsq_quantize(xq.repeat(8, 4), 0.0625, -8, 7, num_threads=nt),
        "lsq_attention_scores": lambda nt: bk.lsq_attention_scores(q, k, (0.05, -8, 7), (0.05, -8, 7), 0.01,
                                                                   num_threads=nt),
        "lsq_attention_context": lambda nt: bk.lsq_attention_context(p, v, (1 / 255, 0, 255), (0.05, -8, 7), 0.01,
                                                                     num_threads=nt),
        "bi_attention": lambda nt: bk.bi_attention(q, k, v),
    }
    want = {name: fn(1) for name, fn in calls.items()}
    with bk.pool_session(2):
        for _ in range(20):
            for name, fn in calls.items():
                assert torch.equal(fn(None), want[name]), name


@pytest.mark.skipif(not bk.pool_available(), reason="the kernels' pool is not built here")
def test_the_pool_under_concurrent_callers_and_after_fork(backend):
    """Two Python threads in pool sessions at once (one job at a time on the pool: the other caller's
    loop runs on OpenMP), then a forked child (which has none of the parent's workers: its pool starts
    afresh, and a loop would be right even without them, the caller doing every item): the one-thread
    bits throughout, and no hang."""
    import threading
    import time

    gen = torch.Generator().manual_seed(11)
    M, K, N = 40, 384, 768
    w, _ = _weight(N, K, gen)
    scale = torch.rand(N, generator=gen)
    xq = _lsq_inputs(M, K, 0.0625, gen)
    want = bk.lsq_linear(xq, w, 0.0625, -8, 7, scale, None, num_threads=1)
    bad = []

    def work():
        with bk.pool_session(2):
            for _ in range(30):
                if not torch.equal(bk.lsq_linear(xq, w, 0.0625, -8, 7, scale, None), want):
                    bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not bad and not any(t.is_alive() for t in threads)
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if the pool gave the same bits
        ok = False
        try:
            with bk.pool_session(2):
                ok = all(torch.equal(bk.lsq_linear(xq, w, 0.0625, -8, 7, scale, None), want) for _ in range(10))
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish (a pool inherited from the parent?)")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------- API checks


def test_validation():
    w, _ = _weight(4, 10, torch.Generator().manual_seed(0))
    with pytest.raises(TypeError):
        bk.binary_linear(torch.randn(2, 10, dtype=torch.float64), w, torch.ones(4))
    with pytest.raises(ValueError):
        bk.binary_linear(torch.randn(2, 11), w, torch.ones(4))
    with pytest.raises(ValueError):
        bk.binary_linear(torch.randn(2, 10), w, torch.ones(5))
    with pytest.raises(TypeError):
        bk.lowbit_linear(torch.zeros(2, 10, dtype=torch.int32), w, torch.ones(4))
    with pytest.raises(ValueError):
        bk.prepare_binary_weight(torch.zeros(4, 3, dtype=torch.uint8), 10)
    with pytest.raises(ValueError, match="within int8"):
        bk.lsq_linear(torch.randn(2, 10), w, 0.1, 0, 255, torch.ones(4))
    with pytest.raises(ValueError, match="finite nonzero"):
        bk.lsq_linear(torch.randn(2, 10), w, 0.0, -8, 7, torch.ones(4))
    with pytest.raises(ValueError):
        bk.lsq_linear(torch.randn(2, 11), w, 0.1, -8, 7, torch.ones(4))
    with pytest.raises(TypeError):
        bk.LsqGemm(w.words, 0.1, -8, 7, torch.ones(4))
    with pytest.raises(ValueError, match="within int8"):
        bk.LsqGemm(w, 0.1, -200, 7, torch.ones(4))
    with pytest.raises(TypeError):
        bk.LsqGemm(w, 0.1, -8, 7, torch.ones(4))(torch.randn(2, 10, dtype=torch.float64))
    with pytest.raises(TypeError):
        bk.lsq_quantize(torch.randn(2, 10, dtype=torch.float64), 0.1, -8, 7)
    with pytest.raises(TypeError):
        bk.bi_attention(*torch.randn(3, 1, 1, 4, 8).unbind(0), key_mask=torch.zeros(1, 4))
    with pytest.raises(ValueError):
        bk.set_backend("nope")
    assert bk.backend() in bk.available_backends()


def test_extension_rejects_unsupported_level():
    if "scalar" not in bk.available_backends():
        pytest.skip("extension not built")
    from bebert_cli import _kernels

    with pytest.raises(ValueError):
        _kernels.matmul_bits(0, 0, 1, 1, 0, 0, 0, 99, 1)


_ARCH_LEVELS = {
    "x86_64": ("scalar", "avx2", "avx512_vpopcntdq"),
    "amd64": ("scalar", "avx2", "avx512_vpopcntdq"),
    "aarch64": ("scalar", "neon"),
    "arm64": ("scalar", "neon"),
}


def test_levels_follow_the_architecture():
    """The compiled-in levels are the architecture's; the best one leads available_backends()."""
    if "scalar" not in bk.available_backends():
        pytest.skip("extension not built")
    from bebert_cli import _kernels

    info = _kernels.info()
    arch = platform.machine().lower()
    if arch in _ARCH_LEVELS:
        assert info["levels"] == _ARCH_LEVELS[arch]
    if arch in ("aarch64", "arm64"):  # Advanced SIMD is mandatory there
        assert info["best"] == "neon"
    assert info["levels"][info["best_level"]] == info["best"]
    assert list(info["available"]) + ["torch"] == bk.available_backends()
    assert isinstance(info["openmp"], bool) and info["max_threads"] >= 1


# ---------------------------------------------------------------- fallback path

_CHILD = textwrap.dedent(
    """
    import sys, warnings, torch
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as rec:
        from bebert_cli import kernels as bk
        d = torch.load(sys.argv[1])
        w = bk.prepare_binary_weight(d["wp"], d["K"])
        out = {
            "backend": bk.backend(),
            "lin": bk.binary_linear(d["x"], w, d["scale"], d["bias"], 0.1),
            "low": bk.lowbit_linear(d["xi"], w, d["scale"], d["bias"]),
            "bits": bk.binary_matmul_bits(d["a"], d["b"], d["K"]),
            "att": bk.bi_attention(d["q"], d["k"], d["v"], d["mask"]),
        }
    out["warnings"] = [str(r.message) for r in rec if "bebert" in str(r.message)]
    torch.save(out, sys.argv[2])
    """
)


def _inputs():
    gen = torch.Generator().manual_seed(7)
    K, N, M = 130, 20, 9
    return {
        "K": K,
        "wp": bk.pack_signs_u8(torch.randn(N, K, generator=gen)),
        "x": torch.randn(M, K, generator=gen),
        "xi": torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=gen),
        "scale": torch.rand(N, generator=gen),
        "bias": torch.randn(N, generator=gen),
        "a": torch.randint(-(2**62), 2**62, (M, 3), generator=gen),
        "b": torch.randint(-(2**62), 2**62, (N, 3), generator=gen),
        "q": torch.randn(2, 3, 19, 24, generator=gen),
        "k": torch.randn(2, 3, 19, 24, generator=gen),
        "v": torch.randn(2, 3, 19, 24, generator=gen),
        "mask": torch.rand(2, 19, generator=gen) > 0.2,
    }


def _run_child(tmp_path, env_extra):
    d = _inputs()
    torch.save(d, tmp_path / "in.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEBERT_")}
    env.update(env_extra)
    subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=120)  # fmt: skip
    return d, torch.load(tmp_path / "out.pt")


def test_fallback_subprocess(tmp_path):
    d, out = _run_child(tmp_path, {"BEBERT_DISABLE_KERNELS": "1"})
    assert out["backend"] == "torch"
    assert len(out["warnings"]) == 1, out["warnings"]  # once per process, not per call
    assert "compiled binary kernels unavailable (BEBERT_DISABLE_KERNELS=1)" in out["warnings"][0]
    # same numbers as this process (compiled if available)
    w = bk.prepare_binary_weight(d["wp"], d["K"])
    assert torch.equal(out["lin"], bk.binary_linear(d["x"], w, d["scale"], d["bias"], 0.1))
    assert torch.equal(out["low"], bk.lowbit_linear(d["xi"], w, d["scale"], d["bias"]))
    assert torch.equal(out["bits"], bk.binary_matmul_bits(d["a"], d["b"], d["K"]))
    assert torch.equal(out["att"], bk.bi_attention(d["q"], d["k"], d["v"], d["mask"]))


def test_env_backend_subprocess(tmp_path):
    if "scalar" not in bk.available_backends():
        pytest.skip("extension not built")
    d, out = _run_child(tmp_path, {"BEBERT_KERNEL_BACKEND": "scalar"})
    assert out["backend"] == "scalar" and out["warnings"] == []
    w = bk.prepare_binary_weight(d["wp"], d["K"])
    assert torch.equal(out["lin"], ref.binary_linear(d["x"], w.signs(), d["scale"], d["bias"], 0.1))


_FORCED_CHILD = "from bebert_cli import kernels as bk; print(bk.backend(), bk.forced_backend())"


def _forced(value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEBERT_")}
    env["BEBERT_KERNEL_BACKEND"] = value
    return subprocess.run([sys.executable, "-c", _FORCED_CHILD], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", [bk.forced_backend()] if bk.forced_backend() else bk.available_backends())
def test_forced_backend_is_the_one_used(name):
    proc = _forced(name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [name, name]


def test_forced_backend_unavailable_is_an_error():
    """A CI run meant for one backend must not quietly test another one."""
    proc = _forced("avx9000")
    assert proc.returncode != 0
    assert "is not available here" in proc.stderr
