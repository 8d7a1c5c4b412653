"""binary_gemm / BinaryGemm (float/bits in, float/sign out) and bi_attention_bits against the oracle."""

from __future__ import annotations

import pytest
import torch

from bebert_cli import kernels as bk
from bebert_cli.kernels import _reference as ref


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


def test_binary_gemm_threads(backend):
    """Big enough to run threaded: 1 and 2 threads give the oracle's numbers and bits."""
    gen = torch.Generator().manual_seed(11)
    M, K, N = 37, 390, 200
    w, sw = _weight(N, K, gen)
    scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
    x, res = _x(M, K, gen), torch.randn(M, N, generator=gen)
    want = ref.binary_linear(x, sw, scale, bias)
    for nt in (1, 2):
        assert torch.equal(bk.binary_gemm(x, w, scale, bias, residual=res, num_threads=nt), want + res), nt
        assert torch.equal(bk.binary_gemm(x, w, scale, bias, out="sign", num_threads=nt), ref.pack_sign_words(want)), nt


def test_binary_gemm_validation():
    w, _ = _weight(8, 40, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="out must be"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), out="relu")
    with pytest.raises(ValueError, match=r"a must be \[M, 2\]"):
        bk.binary_gemm(torch.zeros(2, 3, dtype=torch.int32), w, torch.ones(8))
    with pytest.raises(ValueError, match="residual"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), residual=torch.zeros(2, 7))
    with pytest.raises(ValueError, match="out must be"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), out="gelu_sign")  # removed: sign(GELU(y)) = sign(y)
    with pytest.raises(ValueError, match="residual only applies"):
        bk.binary_gemm(torch.zeros(2, 40), w, torch.ones(8), residual=torch.zeros(2, 8), out="sign")


def test_binary_gemm_object_equals_function(any_backend):
    """A BinaryGemm (checked once, called many times) gives binary_gemm's numbers and bits, at every
    level and after a switch of level (the AVX2 nibbles layout is taken on first use)."""
    gen = torch.Generator().manual_seed(5)
    M, K, N = 9, 200, 70
    w, _ = _weight(N, K, gen)
    scale, bias = torch.rand(N, generator=gen), torch.randn(N, generator=gen)
    g = bk.BinaryGemm(w, scale, bias)
    x = _x(M, K, gen)
    res = torch.randn(M, N, generator=gen)
    for a in (x, bk.pack_sign_words(x), x.t().contiguous().t()):  # float, sign words, a non-contiguous view
        assert torch.equal(g(a), bk.binary_gemm(a, w, scale, bias))
        assert torch.equal(g(a, residual=res), bk.binary_gemm(a, w, scale, bias, residual=res))
        assert torch.equal(g(a, out="sign"), bk.binary_gemm(a, w, scale, bias, out="sign"))
    assert torch.equal(g(x, shift=0.3), bk.binary_gemm(x, w, scale, bias, shift=0.3))


def test_binary_gemm_object_validation():
    w, _ = _weight(8, 40, torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="PackedWeight"):
        bk.BinaryGemm(torch.zeros(8, 5, dtype=torch.uint8), torch.ones(8))
    with pytest.raises(ValueError, match="scale must have shape"):
        bk.BinaryGemm(w, torch.ones(7))
    with pytest.raises(TypeError, match="bias must be torch.float32"):
        bk.BinaryGemm(w, torch.ones(8), torch.ones(8, dtype=torch.float64))
    g = bk.BinaryGemm(w, torch.ones(8))
    with pytest.raises(TypeError, match="a must be torch.float32"):
        g(torch.zeros(2, 40, dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        g(torch.zeros(40))
    with pytest.raises(ValueError, match=r"a must be \[M, 40\]"):
        g(torch.zeros(2, 41))
    with pytest.raises(ValueError, match="residual must be"):
        g(torch.zeros(2, 40), residual=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="out must be"):
        g(torch.zeros(2, 40), out="bits")


@pytest.mark.skipif(bk._ext is None, reason="compiled kernels not built")
@pytest.mark.parametrize("K,N", [(1, 1), (70, 17), (256, 48)])
def test_kernel_nibbles_layout(K, N):
    """PackedWeight.kernel_nibbles: [ceil(N/16), ceil(K/8), 32], the low then the high nibbles of
    byte q of a block's 16 weight rows (rows past N zero), rebuilt here from the interleaved words."""
    w, _ = _weight(N, K, torch.Generator().manual_seed(K + N))
    nb, q = (N + 15) // 16, (K + 7) // 8
    rows = w.words.view(torch.uint8).view(nb, -1, 16, 4).permute(0, 1, 3, 2).reshape(nb, -1, 16)[:, :q]
    want = torch.cat([rows & 15, rows >> 4], dim=2)
    assert torch.equal(w.kernel_nibbles(), want)


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
