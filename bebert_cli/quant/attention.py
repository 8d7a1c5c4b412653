"""Quantized attention, plugged into transformers' attention interface as "bebert".

BERT, RoBERTa, ELECTRA and DistilBERT all dispatch their attention product through
`ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`; registering one function here quantizes
the attention of all four without copying their modeling code. The quantizers live in an
`AttentionQuant` module attached to each self-attention module (so they are saved with it).
"""

from __future__ import annotations

import torch
from torch import nn

from bebert_cli import kernels
from bebert_cli.quant import ops
from bebert_cli.quant.quantizers import LsqActivation, bool_ste, make_activation_quantizer
from bebert_cli.quant.recording import collecting_inner_outputs

ATTN_IMPLEMENTATION = "bebert"
INTEGER_PRODUCTS_SINCE = 3  # the packed format version whose w1a4 / w1a8 attention multiplies integers


class AttentionQuant(nn.Module):
    """mode "bi": BiBERT Bi-Attention, bool(B_Q B_K^T * s + mask) @ sign(V), softmax removed.
    mode "softmax": softmax kept, Q/K/V and the probabilities quantized (BiT, w1a4, w1a8)."""

    def __init__(self, mode: str, bits: int, act_mode: str):
        super().__init__()
        if mode not in ("bi", "softmax"):
            raise ValueError(f"attention must be 'bi' or 'softmax', not {mode!r}")
        self.mode, self.bits = mode, bits
        qmode = "sign" if mode == "bi" else act_mode
        self.q_quant = make_activation_quantizer(bits, qmode)
        self.k_quant = make_activation_quantizer(bits, qmode)
        self.v_quant = make_activation_quantizer(bits, qmode)
        # Probabilities are non-negative: {0, alpha} (BiT two-set binarization) or unsigned LSQ.
        self.p_quant = make_activation_quantizer(bits, "elastic", unsigned=True) if mode == "softmax" else nn.Identity()
        self.runtime = "simulated"
        # Packed format 3: with LSQ quantizers (w1a4, w1a8) the two products are computed on the
        # integers and scaled once (`_integer_products`), which integer kernels reproduce bit for bit;
        # checkpoints of earlier formats multiply the quantized floats (False).
        self.integer_products = True

    @property
    def lsq(self) -> bool:
        """Whether all four quantizers are LSQ ones (the softmax attention of w1a4 / w1a8)."""
        return self.mode == "softmax" and all(
            isinstance(m, LsqActivation) for m in (self.q_quant, self.k_quant, self.v_quant, self.p_quant))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, bits={self.bits}" + (", integer_products=True" if self.integer_products and self.lsq else "")


def product_scale(a_step: torch.Tensor, b_step: torch.Tensor, scaling: float | None = None) -> torch.Tensor:
    """The one float32 factor of an integer product of two LSQ tensors: a_step * b_step (* scaling)."""
    scale = a_step * b_step
    return scale if scaling is None else scale * scaling


def bebert_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Same contract as transformers' eager_attention_forward: returns ((B, L, H, D), weights)."""
    aq: AttentionQuant | None = getattr(module, "bebert_attn", None)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if aq is None:
        from transformers.models.bert.modeling_bert import eager_attention_forward

        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)

    if aq.mode == "bi":
        if aq.runtime == "packed" and not torch.is_grad_enabled():
            out = ops.packed_bi_attention(query, key, value, attention_mask)
            if out is not None:
                return out.transpose(1, 2).contiguous(), None
        scores = torch.matmul(aq.q_quant(query), aq.k_quant(key).transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        # The reference applies attention dropout before the bool.
        scores = nn.functional.dropout(scores, p=dropout, training=module.training)
        weights = bool_ste(scores)
        out = torch.matmul(weights, aq.v_quant(value))
    elif aq.integer_products and aq.lsq:
        if aq.runtime == "packed" and not torch.is_grad_enabled() and not module.training:
            return packed_integer_products(aq, query, key, value, attention_mask, scaling)
        return _integer_products(module, aq, query, key, value, attention_mask, scaling, dropout)
    else:
        if aq.runtime == "packed" and not torch.is_grad_enabled() and not module.training:
            out = _packed_softmax_attention(module, aq, query, key, value, attention_mask, scaling)
            if out is not None:
                return out
        quant = _quantizers(aq)
        scores = torch.matmul(quant(aq.q_quant, query), quant(aq.k_quant, key).transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = nn.functional.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights, p=dropout, training=module.training)
        out = torch.matmul(quant(aq.p_quant, weights), quant(aq.v_quant, value))
    return out.transpose(1, 2).contiguous(), weights


def _integer_products(module, aq: AttentionQuant, query, key, value, attention_mask, scaling, dropout):
    """The softmax attention of w1a4 / w1a8 (packed format 3): each product multiplies the quantizers'
    integers (a float matmul of integer-valued tensors, exact while its sums stay below 2^24) and
    scales the result once, by the product of the two steps. The same function of the inputs as
    multiplying the quantized floats, rounded differently; this rounding is one integer kernels can
    reproduce (`kernels.lsq_attention_scores` / `lsq_attention_context`). Gradients: as before (LSQ's
    straight-through round; the steps' through the scale)."""
    q, q_step = aq.q_quant.split(query)
    k, k_step = aq.k_quant.split(key)
    scores = torch.matmul(q, k.transpose(2, 3)) * product_scale(q_step, k_step, scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module is not None and module.training)
    p, p_step = aq.p_quant.split(weights)
    v, v_step = aq.v_quant.split(value)
    out = torch.matmul(p, v) * product_scale(p_step, v_step)
    return out.transpose(1, 2).contiguous(), weights


def _lsq_range(quant: LsqActivation) -> tuple[float, int, int]:
    return float(quant.step), quant.qmin, quant.qmax


_CONSTANTS_ATTR = "_bebert_integer_constants"


def _integer_constants(aq: AttentionQuant, scaling: float) -> tuple:
    """(q, k, p, v ranges, scores scale, output scale) of `packed_integer_products`, computed once and
    kept on `aq` until a step changes (in place or replaced) or `scaling` does: at batch 1 these small
    tensor ops and float() reads cost ~10 us a layer. The same float32 values as computing them each call."""
    quants = (aq.q_quant, aq.k_quant, aq.p_quant, aq.v_quant)
    key = (scaling, *(ops.tensor_key(m._parameters["step"]) for m in quants))
    hit = aq.__dict__.get(_CONSTANTS_ATTR)
    if hit is not None and hit[0] == key:
        return hit[1]
    q, k, p, v = quants
    with torch.no_grad():
        c_scores = float(product_scale(q.step, k.step, scaling))
        c_out = float(product_scale(p.step, v.step))
    constants = (_lsq_range(q), _lsq_range(k), _lsq_range(p), _lsq_range(v), c_scores, c_out)
    aq.__dict__[_CONSTANTS_ATTR] = (key, constants)
    return constants


def packed_integer_products(aq: AttentionQuant, query, key, value, attention_mask, scaling):
    """`_integer_products` in eval on the integer kernels, bit for bit: Q, K and V are read where they
    lie and quantized inside the kernels, so no quantized float copy is written; the scores are scaled
    in the kernel, then masked and soft-maxed in place by torch's own ops; the output comes back in
    the [B, L, H, D] layout the caller wants (no transpose copy)."""
    if not all(t.dtype == torch.float32 and (t.shape[-1] <= 1 or t.stride(-1) == 1) for t in (query, key, value)):
        return _integer_products(None, aq, query, key, value, attention_mask, scaling, 0.0)
    q_range, k_range, p_range, v_range, c_scores, c_out = _integer_constants(aq, scaling)
    scores = kernels.lsq_attention_scores(query, key, q_range, k_range, c_scores)
    if attention_mask is not None:
        if attention_mask.dtype == scores.dtype and torch.broadcast_shapes(scores.shape, attention_mask.shape) == scores.shape:
            scores.add_(attention_mask)
        else:
            scores = scores + attention_mask
    weights = torch.ops.aten._softmax.out(scores, -1, False, out=scores)  # row by row: out may be its input
    out = kernels.lsq_attention_context(weights, value, p_range, v_range, c_out)
    return out, (weights if collecting_inner_outputs() else None)


def _packed_softmax_attention(module, aq: AttentionQuant, query, key, value, attention_mask, scaling):
    """The softmax attention of w1a4 / w1a8 as the simulated one computes it, op for op and bit for
    bit, with its intermediates written in place: Q, K and V are quantized where they lie, and one
    [B, H, L, L] scores buffer is scaled, masked, soft-maxed and (when no caller records the attention
    weights) quantized where it lies, instead of eight fresh buffers a layer. Fresh buffers are what
    cost: each is new memory the first time (page faults), and all of them add to the forward's peak
    resident memory. None where an LSQ kernel does not apply (another quantizer); the caller then runs
    the simulated ops."""
    if not all(isinstance(quant, LsqActivation) for quant in (aq.q_quant, aq.k_quant, aq.v_quant, aq.p_quant)):
        return None
    # Q, K and V are views of their projections' fresh outputs, read by nothing but this function
    # unless a hook holds them (or a decoder's cache does): then they are quantized into new buffers.
    inplace = not getattr(module, "is_decoder", False) and not any(c._forward_hooks for c in module.children())
    q, k, v = (ops.packed_lsq(quant, x, inplace=inplace)
               for quant, x in ((aq.q_quant, query), (aq.k_quant, key), (aq.v_quant, value)))
    if q is None or k is None or v is None:
        return None
    scores = torch.matmul(q, k.transpose(2, 3))
    scores.mul_(scaling)
    if attention_mask is not None:
        if attention_mask.dtype == scores.dtype and torch.broadcast_shapes(scores.shape, attention_mask.shape) == scores.shape:
            scores.add_(attention_mask)
        else:
            scores = scores + attention_mask
    weights = torch.ops.aten._softmax.out(scores, -1, False, out=scores)  # row by row: out may be its input
    keep = collecting_inner_outputs()  # output_attentions=True: the caller gets the probabilities
    p = ops.packed_lsq(aq.p_quant, weights, inplace=not keep)
    out = torch.matmul(p, v)
    return out.transpose(1, 2).contiguous(), (weights if keep else None)


def _apply(quantizer, x):
    return quantizer(x)


def _kernel_or_module(quantizer, x):
    out = ops.packed_lsq(quantizer, x)
    return quantizer(x) if out is None else out


def _quantizers(aq: AttentionQuant):
    """How the softmax attention applies its quantizers: the packed runtime runs LSQ ones (w1a4, w1a8)
    as one kernel pass each, the same float bits as the module's five torch ops."""
    return _kernel_or_module if aq.runtime == "packed" and not torch.is_grad_enabled() else _apply


def register_attention() -> None:
    """Idempotent registration of the attention function and its (eager, additive) mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, bebert_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, eager_mask)
