"""Pure-torch reference implementations (the fallback path, and the test oracle).

They define the exact numbers the compiled kernels must reproduce bit for bit:
integer dot products via float32 matmuls of +-1 / small-int values (exact while
partial sums stay below 2**24), then `* scale` and `+ bias` as two roundings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F



def _shifts(device) -> torch.Tensor:
    # Made per call, never at import: a module first imported inside transformers' loading runs under
    # `torch.device("meta")`, and a module-level tensor would be a meta tensor with no data.
    return torch.arange(8, dtype=torch.uint8, device=device)


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """+1.0 where x >= 0 (0 and -0.0 included), else -1.0 (NaN -> -1), float32."""
    return torch.where(x >= 0, 1.0, -1.0).to(torch.float32)


def pack_signs_u8(x: torch.Tensor) -> torch.Tensor:
    """Sign bits of x [..., K] -> uint8 [..., ceil(K/8)]; bit i of byte j = column 8j+i; padding 0."""
    K = x.shape[-1]
    nbytes = (K + 7) // 8
    bits = (x >= 0).to(torch.uint8)
    if nbytes * 8 != K:
        bits = torch.cat([bits, bits.new_zeros(*x.shape[:-1], nbytes * 8 - K)], dim=-1)
    bits = bits.reshape(*x.shape[:-1], nbytes, 8) << _shifts(x.device)
    return bits.sum(-1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(p: torch.Tensor, K: int) -> torch.Tensor:
    """uint8 [..., >= ceil(K/8)] -> float32 [..., K] of +-1 (bytes/bits past K ignored)."""
    bits = (p.unsqueeze(-1) >> _shifts(p.device)) & 1
    bits = bits.reshape(*p.shape[:-1], p.shape[-1] * 8)[..., :K]
    return bits.to(torch.float32) * 2.0 - 1.0


def _affine(dot: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = dot * scale  # rounding 1
    return y + bias if bias is not None else y  # rounding 2 (never an FMA)


def binary_linear(x, signs_w, scale, bias=None, shift=0.0):
    xs = sign_pm1(x - shift if shift else x)  # x - 0.0 == x bitwise for the sign test
    return _affine(F.linear(xs, signs_w), scale, bias)


def lowbit_linear(x_int, signs_w, scale, bias=None):
    return _affine(F.linear(x_int.to(torch.float32), signs_w), scale, bias)


def lsq_integers(x, step, qmin, qmax):
    """LsqActivation's integers in eval: round(clamp(x / step, qmin, qmax)), float32."""
    return (x / step).clamp(qmin, qmax).round()


def lsq_quantize(x, step, qmin, qmax):
    """LsqActivation's output in eval, op for op: split's straight-through round, then `* step`."""
    v = (x / step).clamp(qmin, qmax)
    return ((v.round() - v) + v) * step


def lsq_linear(x, signs_w, step, qmin, qmax, scale, bias=None):
    return _affine(F.linear(lsq_integers(x, step, qmin, qmax), signs_w), scale, bias)


def lsq_attention_scores(q, k, q_range, k_range, c):
    """The format-3 attention scores: float matmul of the LSQ integers (exact below 2**24), then `* c`."""
    return torch.matmul(lsq_integers(q, *q_range), lsq_integers(k, *k_range).transpose(-1, -2)) * c


def lsq_attention_context(p, v, p_range, v_range, c):
    """The format-3 attention output, [B, Lq, H, D] (the layout the attention returns)."""
    return (torch.matmul(lsq_integers(p, *p_range), lsq_integers(v, *v_range)) * c).transpose(1, 2).contiguous()


def matmul_bits(a_bits, b_bits, K):
    a = unpack_bits(a_bits.contiguous().view(torch.uint8), K)
    b = unpack_bits(b_bits.contiguous().view(torch.uint8), K)
    return (a @ b.T).to(torch.int32)


def bi_attention(q, k, v, key_mask=None):
    scores = sign_pm1(q) @ sign_pm1(k).transpose(-1, -2)  # exact integers
    attn = scores >= 0
    if key_mask is not None:
        attn = attn & key_mask.to(torch.bool)[:, None, None, :]
    return attn.to(torch.float32) @ sign_pm1(v)


def pack_sign_words(x: torch.Tensor) -> torch.Tensor:
    """Sign bits of float x [M, K] -> int32 [M, ceil(K/32)] words (bit i of word w = column 32w+i, padding 0)."""
    K = x.shape[-1]
    u8 = pack_signs_u8(x)
    pad = (K + 31) // 32 * 4 - u8.shape[-1]
    if pad:
        u8 = torch.cat([u8, u8.new_zeros(*u8.shape[:-1], pad)], dim=-1)
    return u8.contiguous().view(torch.int32)


def unpack_sign_words(words: torch.Tensor, K: int) -> torch.Tensor:
    """int32 [M, >= ceil(K/32)] sign words -> float32 [M, K] of +-1."""
    return unpack_bits(words.contiguous().view(torch.uint8), K)


def binary_gemm(a, signs_w, scale, bias=None, residual=None, out="float", shift=0.0):
    """The oracle of kernels.binary_gemm: a is float [M, K] or int32 sign words."""
    K = signs_w.shape[1]
    xs = unpack_sign_words(a, K) if a.dtype == torch.int32 else sign_pm1(a - shift if shift else a)
    y = _affine(F.linear(xs, signs_w), scale, bias)
    if out == "float":
        return y + residual if residual is not None else y
    return pack_sign_words(y)


def bi_attention_bits(qkv_words, key_mask, B, H, L, D):
    """The oracle of kernels.bi_attention_bits: rows [q | k | v] of sign words -> sign words of the output."""
    Hd = H * D
    pm1 = unpack_sign_words(qkv_words, 3 * Hd).view(B, L, 3, H, D).permute(2, 0, 3, 1, 4)  # 3, B, H, L, D
    out = bi_attention(pm1[0], pm1[1], pm1[2], key_mask)  # B, H, L, D
    return pack_sign_words(out.transpose(1, 2).reshape(B * L, Hd))
