"""The packed runtime's fused w1a4 / w1a8 encoder layer: the layer's kernels called in a row.

A w1a4 / w1a8 layer (binary weights, LSQ activations, softmax attention on integer products: packed
format 3) spends its time in six `lsq_linear` GEMMs, two integer attention kernels and a few torch
ops (softmax, GELU, two LayerNorms). Unfused, each GEMM is reached through transformers' module
tree (five module calls, keyword-argument deprecation wrappers that inspect signatures, the
attention-interface lookup) and `kernels.lsq_linear`'s argument checks: at batch 1 that Python
costs about as much as the GEMMs themselves (docs/performance.md). Here the same kernels and the
same torch ops run in the same order on the same values, with each layer's weights, ranges, scales
and biases checked once (`kernels.LsqGemm`), so the outputs are identical bit for bit; two residual
sums are written into the dense outputs' buffers instead of fresh ones (IEEE addition commutes, so
`y + x` there equals transformers' `hidden_states + input_tensor`).

`fused_layer.FusedForward` decides when a layer may take this path (eval, no autograd, CPU float32,
compiled kernels, no hooks inside the layer, no cache) and falls back to the layer's own forward
otherwise; this module adds the checks that only w1a4 / w1a8 layers need.
"""

from __future__ import annotations

import torch

from bebert_cli.quant.attention import ATTN_IMPLEMENTATION, packed_integer_products
from bebert_cli.quant.quantizers import LsqActivation


def fusable(attn_quant, linears) -> bool:
    """Whether a BertLayer's attention quantizers and six PackedLinears are those of a w1a4 / w1a8
    layer whose attention multiplies integers (format 3), the layer the fused forward computes."""
    return (attn_quant.mode == "softmax" and attn_quant.lsq and attn_quant.integer_products
            and all(isinstance(m.act_quant, LsqActivation) for m in linears))


def gelu_in_place(act) -> bool:
    """Whether `act` is transformers' erf GELU (or bebert's in-place form of it): torch's `gelu_` then
    gives its bits over the up-projection's fresh output."""
    from bebert_cli.quant.inplace_act import InPlaceGELU, _is_erf_gelu

    return isinstance(act, InPlaceGELU) or _is_erf_gelu(act)


class LsqGemms:
    """The layer's six linears as `kernels.LsqGemm`s, built from their kernel states."""

    __slots__ = ("states", "query", "key", "value", "attn_out", "inter", "out")

    def __init__(self, states):
        from bebert_cli.kernels import LsqGemm

        self.states = states
        self.query, self.key, self.value, self.attn_out, self.inter, self.out = (
            LsqGemm(p.weight, *p.lsq, p.scale, p.bias) for p in states)


def fused_forward(fused, hidden_states: torch.Tensor, attention_mask):
    """BertLayer.forward of a packed w1a4 / w1a8 layer, or None where a part has no kernel form (the
    caller then runs the layer's own forward)."""
    parts = fused.parts
    states = [m.kernel_state() for m in parts.linears]
    if any(p is None or p.kind != "lsq" for p in states):
        return None
    aq = parts.attn_quant
    if not (aq.lsq and aq.integer_products) or parts.config._attn_implementation != ATTN_IMPLEMENTATION:
        return None  # another attention function would run unfused: so must this one
    B, L, hidden = hidden_states.shape
    x = hidden_states.reshape(B * L, hidden)
    if not x.is_contiguous():
        x = x.contiguous()
    g = fused.gemms(tuple(states), LsqGemms)

    heads = (B, L, parts.heads, parts.head_size)  # BertSelfAttention's view, then (B, H, L, D)
    q, k, v = (gemm(x).view(heads).transpose(1, 2) for gemm in (g.query, g.key, g.value))
    context, _ = packed_integer_products(aq, q, k, v, attention_mask, parts.scaling)
    # Each buffer is let go as soon as it is read, so the FFN's [B * L, 4 * hidden] buffer reuses their
    # memory: the forward's peak resident memory is what the packed model's memory target counts.
    del q, k, v
    a = g.attn_out(context.reshape(B * L, hidden))
    del context
    h = parts.attn_norm(a.add_(x))
    del a
    inter = g.inter(h)
    inter = torch.ops.aten.gelu_(inter) if parts.gelu_in_place else parts.act(inter)
    y = g.out(inter)
    return parts.out_norm(y.add_(h)).view(B, L, hidden)
