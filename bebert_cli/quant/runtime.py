"""The packed runtime: routes PackedLinear and Bi-Attention through the bit kernels.

Each function returns None when a layer's quantizer has no bit-kernel form (e.g. BiT's unsigned
probabilities); the caller then runs the simulated path, so results never silently change.
"""

from __future__ import annotations

import torch

from bebert_cli.quant.quantizers import BinaryActivation, LsqActivation


def prepare_packed_runtime(model) -> None:
    """Repack every binary weight into the kernels' layout once, at load time."""
    from bebert_cli import kernels
    from bebert_cli.quant.convert import set_runtime
    from bebert_cli.quant.layers import PackedLinear

    set_runtime(model, "packed")
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m._kernel_weight = kernels.prepare_binary_weight(m.weight_packed.cpu(), m.in_features)


def packed_linear(layer, x: torch.Tensor):
    from bebert_cli import kernels

    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    if layer._kernel_weight is None:
        layer._kernel_weight = kernels.prepare_binary_weight(layer.weight_packed.cpu(), layer.in_features)
    w, aq = layer._kernel_weight, layer.act_quant
    scale = layer.weight_scale.float()
    bias = layer.bias.detach() if layer.bias is not None else None
    if isinstance(aq, BinaryActivation) and aq.mode == "sign":
        return kernels.binary_linear(x, w, scale, bias)
    if isinstance(aq, BinaryActivation) and aq.mode == "elastic":
        # alpha_a * sign(x - beta) . s * alpha_w  ==  sign(x - beta) . s * (alpha_a * alpha_w)
        return kernels.binary_linear(x, w, (scale * aq.alpha.detach()).contiguous(), bias, float(aq.beta))
    if isinstance(aq, LsqActivation) and aq.bits <= 8:
        x_int, step = aq.unit(x)
        return kernels.lowbit_linear(x_int.to(torch.int8), w, (scale * step.detach()).contiguous(), bias)
    return None


def packed_bi_attention(query, key, value, attention_mask):
    from bebert_cli import kernels

    if query.device.type != "cpu" or query.dtype != torch.float32:
        return None
    key_mask = None
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            key_mask = attention_mask[:, 0, 0, :]
        else:  # additive eager mask: 0 where attended, a large negative number elsewhere
            key_mask = attention_mask[:, 0, 0, :] == 0
        if attention_mask.shape[2] > 1 and not bool((attention_mask == attention_mask[:, :, :1, :]).all()):
            return None  # a per-query mask (not padding only) has no bit-kernel form
    return kernels.bi_attention(query.contiguous(), key.contiguous(), value.contiguous(), key_mask)
