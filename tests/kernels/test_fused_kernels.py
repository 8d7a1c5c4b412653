"""binary_gemm (float/bits in, float/sign/GELU-sign out) and bi_attention_bits against the oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bebert_cli import kernels as bk
from bebert_cli.kernels import _reference as ref
from bebert_cli.kernels import gelu_sign



def _weight(N, K, gen):
    wf = torch.randn(N, K, generator=gen)
    wf[0, : min(K, 5)] = 0.0
    return bk.prepare_binary_weight(bk.pack_signs_u8(wf), K), ref.sign_pm1(wf)


def _x(M, K, gen):
    x = torch.randn(M, K, generator=gen)
    x[0, : min(K, 4)] = 0.0
    x[-1, : min(K, 3)] = -0.0
    return x


@pytest.mark.parametrize("K,N", [(1, 1), (31, 17), (70, 48), (130, 33), (384, 96)])
def test_binary_gemm_float_and_sign(any_backend, K, N):
    gen = torch.Generator().manual_seed(K * N)
    w, sw = _weight(N, K, gen)
    scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
    for M in (1, 5, 9):
        x = _x(M, K, gen)
        words = bk.pack_sign_words(x)
        res = torch.randn(M, N, generator=gen)
        for b in (None, bias):
            want = ref.binary_linear(x, sw, scale, b)
            for a in (x, words):  # float input, or its sign words: the same signs
                assert torch.equal(bk.binary_gemm(a, w, scale, b), want)
                assert torch.equal(bk.binary_gemm(a, w, scale, b, residual=res), want + res)
                signs = bk.binary_gemm(a, w, scale, b, out="sign")
                assert signs.dtype == torch.int32 and signs.shape == (M, (N + 31) // 32)
                assert torch.equal(signs, ref.pack_sign_words(want)), (M, b is None)


def test_binary_gemm_sign_words_padding_is_zero(any_backend):
    gen = torch.Generator().manual_seed(3)
    for N in (5, 16, 17, 40):
        w, _ = _weight(N, 64, gen)
        out = bk.binary_gemm(_x(6, 64, gen), w, torch.full((N,), 0.01), torch.full((N,), 5.0), out="sign")  # all > 0
        bits = ref.unpack_bits(out.view(torch.uint8), out.shape[1] * 32)
        assert bool((bits[:, :N] == 1).all()) and bool((bits[:, N:] == -1).all()), N  # -1 = bit 0


def test_gelu_thresholds_bracket_torch():
    lo, hi = gelu_sign.gelu_sign_thresholds()
    assert -8.0 < lo <= hi < -4.0
    below = torch.tensor([lo, -7.9, -6.0])
    above = torch.nextafter(torch.tensor([hi]), torch.tensor([0.0]))
    for f in (gelu_sign._vectorised, gelu_sign._scalar):
        assert bool((f(below) == 0).all())
        assert bool((f(torch.cat([above, torch.tensor([-4.5, -1.0])])) != 0).all())


def _gelu_inputs(M, N, gen):
    """Pre-activations that cover every rule, undecided band included."""
    lo, hi = gelu_sign.gelu_sign_thresholds()
    y = torch.randn(M, N, generator=gen) * 3
    # the edges of the epilogue's fast path (finite y >= 0, and (hi, -1e-30]) and of every rule
    next_hi = float(torch.nextafter(torch.tensor(hi), torch.tensor(0.0)))
    specials = torch.tensor([0.0, -0.0, -9.0, lo, next_hi, -5.0, -1e-30, -1e-31, -1e-20, 1e-30,
                             3.4028234663852886e38, -3.0, 7.0, -0.5])  # every one decided exactly
    y[0, : specials.numel()] = specials[: N]
    # values from the band where SLEEF flickers between zero and non-zero
    band = torch.linspace(lo, hi, steps=N)
    y[1] = band
    return y


@pytest.mark.parametrize("N", [14, 64, 200])
def test_binary_gemm_gelu_sign(any_backend, N):
    """Scale 0 makes the epilogue float `dot * 0 + bias` equal the bias: any pre-activation we like."""
    gen = torch.Generator().manual_seed(N)
    K, M = 1, 4
    w = bk.prepare_binary_weight(bk.pack_signs_u8(torch.ones(N, K)), K)
    y = _gelu_inputs(M, N, gen)
    x = torch.ones(M, K)
    for m in range(M):
        thresholds = gelu_sign.gelu_sign_thresholds()
        got = bk.binary_gemm(x[m : m + 1], w, torch.zeros(N), y[m].contiguous(), out="gelu_sign", gelu_thresholds=thresholds)
        want = ref.pack_sign_words(F.gelu(y[m : m + 1]))  # F.gelu on a contiguous row: the unfused path
        assert got is not None and torch.equal(got, want), m


def test_binary_gemm_gelu_sign_random(any_backend):
    gen = torch.Generator().manual_seed(7)
    K, N, M = 96, 80, 13
    w, sw = _weight(N, K, gen)
    scale, bias = torch.rand(N, generator=gen) * 0.3, torch.randn(N, generator=gen) * 2 - 3
    x = _x(M, K, gen)
    got = bk.binary_gemm(x, w, scale, bias, out="gelu_sign", gelu_thresholds=gelu_sign.gelu_sign_thresholds())
    assert torch.equal(got, ref.pack_sign_words(F.gelu(ref.binary_linear(x, sw, scale, bias))))


def test_binary_gemm_validation():
    w, _ = _weight(8, 40, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="out must be"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), out="relu")
    with pytest.raises(ValueError, match=r"a must be \[M, 2\]"):
        bk.binary_gemm(torch.zeros(2, 3, dtype=torch.int32), w, torch.ones(8))
    with pytest.raises(ValueError, match="residual"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), residual=torch.zeros(2, 7))
    with pytest.raises(ValueError, match="gelu_thresholds"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), out="gelu_sign")


@pytest.mark.parametrize("B,H,L,D", [(1, 1, 1, 32), (2, 3, 7, 32), (2, 2, 40, 64), (1, 12, 128, 64)])
def test_bi_attention_bits(any_backend, B, H, L, D):
    gen = torch.Generator().manual_seed(L * D + H)
    q, k, v = (torch.randn(B, L, H * D, generator=gen) for _ in range(3))
    q[..., 0] = 0.0
    v[..., 1] = -0.0
    words = torch.cat([bk.pack_sign_words(t.reshape(B * L, H * D)) for t in (q, k, v)], dim=1)
    mask = torch.rand(B, L, generator=gen) > 0.3
    mask[0] = False  # a fully masked row: every output is 0 -> sign +1
    heads = [t.view(B, L, H, D).transpose(1, 2) for t in (q, k, v)]
    for m in (None, mask):
        got = bk.bi_attention_bits(words, m, B, H, L, D)
        dense = ref.bi_attention(*heads, m).transpose(1, 2).reshape(B * L, H * D)
        assert torch.equal(got, ref.pack_sign_words(dense)), m is None


def test_bi_attention_bits_validation():
    with pytest.raises(ValueError, match="multiple of 32"):
        bk.bi_attention_bits(torch.zeros(4, 6, dtype=torch.int32), None, 1, 2, 4, 48)
    with pytest.raises(ValueError, match="qkv_words must be"):
        bk.bi_attention_bits(torch.zeros(4, 5, dtype=torch.int32), None, 1, 2, 4, 32)


def test_gelu_sign_undecided_values_are_settled_by_torch(any_backend):
    """Band values (on which torch's two loops may disagree), tiny negatives, NaN and +-inf: decided
    as F.gelu on the whole tensor decides them, the loop a value goes through included."""
    lo, hi = gelu_sign.gelu_sign_thresholds()
    band = torch.linspace(lo, hi, 4001)[1:]
    vec_zero, scalar_zero = gelu_sign._vectorised(band) == 0, gelu_sign._scalar(band) == 0
    agree, disagree = band[vec_zero == scalar_zero], band[vec_zero != scalar_zero]
    assert disagree.numel(), "this torch's GELU loops agree everywhere: the position rule is untested"
    odd = torch.tensor([-1e-31, -1e-38, float("nan"), float("-inf"), float("inf"), -5.0, 2.0])
    # 167 values, disagreeing ones and +inf among them, also in the last 7 (a loop tail on some builds)
    y = torch.cat([agree[:60], disagree[:40], odd, agree[60:100], disagree[40:53], torch.tensor([float("inf")])])
    assert y.numel() == 161
    y = torch.cat([y, disagree[53:59]])
    N = y.numel()
    w = bk.prepare_binary_weight(bk.pack_signs_u8(torch.ones(N, 1)), 1)
    got = bk.binary_gemm(torch.ones(1, 1), w, torch.zeros(N), y, out="gelu_sign", gelu_thresholds=(lo, hi))
    assert got is not None
    assert torch.equal(got, ref.pack_sign_words(F.gelu(y[None])))
    if any_backend != "torch":  # with no room for undecided values the call is handed back to the caller
        import bebert_cli.kernels as kmod

        before = kmod._UNDECIDED_CAPACITY
        kmod._UNDECIDED_CAPACITY = 3
        try:
            assert bk.binary_gemm(torch.ones(1, 1), w, torch.zeros(N), y, out="gelu_sign", gelu_thresholds=(lo, hi)) is None
        finally:
            kmod._UNDECIDED_CAPACITY = before


def test_scalar_positions_are_a_loop_tail():
    """Below TensorIterator's grain size one thread runs the whole tensor: vector steps, then possibly
    a scalar tail (torch 2.13's GELU finishes with a partial vector, so only a 1-element tensor goes
    through the scalar loop). The probe must find a tail of the tensor, shorter than two vectors."""
    for n in (1, 5, 64, 100, 1000):
        at = gelu_sign._scalar_positions(n, torch.get_num_threads())
        tail = at.numel()
        assert tail < 64 and torch.equal(at, torch.arange(n - tail, n)), n
    assert gelu_sign._scalar_positions(1, torch.get_num_threads()).tolist() == [0]  # strided-free, 1 element
