"""The packed runtime: routes PackedLinear and Bi-Attention through the bit kernels.

Each function returns None when a layer's quantizer has no bit-kernel form (e.g. BiT's unsigned
probabilities); the caller then runs the simulated path, so results never silently change.

Everything a call needs that does not depend on the input (the kernels' weight layout, the fp32
scale with the activation scale folded in, the fp32 bias) is prepared once per layer and cached;
the cache is rebuilt when a tensor it was made from changes (in-place writes bump a tensor's
version counter; device/dtype moves drop it in `PackedLinear._apply`).

Exactness: the kernels compute `dot * scale + bias` with an exact integer dot. The simulated
runtime equals that bit for bit when it too applies every scale after an exact dot: always for
sign activations (BiBERT); for elastic (BiT) and LSQ (w1a4/w1a8) activations only if the simulated
layer multiplies the activation scale in after the matmul (see the note in docs/performance.md).
"""

from __future__ import annotations

import torch

from bebert_cli.quant.quantizers import BinaryActivation, LsqActivation


class _Prepared:
    """A PackedLinear's kernel-ready state: weight layout, folded fp32 scale, fp32 bias."""

    __slots__ = ("weight", "scale", "bias", "kind", "shift", "key")

    def __init__(self, weight, scale, bias, kind, shift, key):
        self.weight, self.scale, self.bias, self.kind, self.shift, self.key = weight, scale, bias, kind, shift, key


def _kind(aq) -> str | None:
    if isinstance(aq, BinaryActivation) and aq.mode in ("sign", "elastic"):
        return aq.mode
    if isinstance(aq, LsqActivation) and aq.bits <= 8:
        return "lsq"
    return None


def _version(t: torch.Tensor) -> int:
    # Inference tensors have no version counter (they can only change inside inference mode).
    return -1 if t.is_inference() else t._version


def _version_key(layer) -> tuple:
    # Runs for every linear of every forward: read the modules' own dicts, because nn.Module.__getattr__
    # costs ~0.5 us a lookup (this was ~3 us a call, ~110 us of a batch-1 MiniLM forward).
    aq = layer._modules["act_quant"]
    tensors = [layer._buffers["weight_packed"], layer._buffers["weight_scale"], layer._parameters.get("bias")]
    if isinstance(aq, BinaryActivation) and aq.mode == "elastic":
        tensors += [aq._parameters["alpha"], aq._parameters["beta"]]
    elif isinstance(aq, LsqActivation):
        tensors.append(aq._parameters["step"])
    return tuple(None if t is None else (id(t), -1 if t.is_inference() else t._version) for t in tensors)


def _prepare(layer) -> _Prepared | None:
    from bebert_cli import kernels

    kind = _kind(layer.act_quant)
    if kind is None:
        return None
    aq = layer.act_quant
    with torch.no_grad():
        w = layer._kernel_weight
        if not isinstance(w, kernels.PackedWeight):
            w = kernels.prepare_binary_weight(layer.weight_packed.detach().cpu(), layer.in_features)
        scale = layer.weight_scale.detach().cpu().float()
        shift = 0.0
        if kind == "elastic":
            # alpha_a * sign(x - beta) . s * alpha_w == sign(x - beta) . s * (alpha_w * alpha_a)
            scale = scale * aq.alpha.detach().cpu().float()
            shift = float(aq.beta.detach())
        elif kind == "lsq":
            scale = scale * aq.step.detach().cpu().float()
        bias = layer.bias.detach().cpu().float().contiguous() if layer.bias is not None else None
    prepared = _Prepared(w, scale.contiguous(), bias, kind, shift, _version_key(layer))
    layer._kernel_weight = w
    layer._bebert_prepared = prepared
    return prepared


def _prepared(layer) -> _Prepared | None:
    p = getattr(layer, "_bebert_prepared", None)
    if p is None or layer._kernel_weight is not p.weight or p.key != _version_key(layer):
        p = _prepare(layer)
    return p


def prepare_packed_runtime(model) -> None:
    """Switch a packed model to the kernels and prepare every binary layer once, at load time."""
    from bebert_cli.quant.convert import set_runtime
    from bebert_cli.quant.layers import PackedLinear

    from bebert_cli.quant.fused_layer import install

    set_runtime(model, "packed")
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m._kernel_weight = None
            _prepare(m)
    install(model)  # BiBERT layers then run bits end to end (identical outputs, see fused_layer)


def packed_linear(layer, x: torch.Tensor):
    """The layer's output computed by the bit kernels, or None if this layer/input has no kernel form."""
    from bebert_cli import kernels

    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    p = _prepared(layer)
    if p is None:
        return None
    if p.kind == "sign":
        return kernels.binary_linear(x, p.weight, p.scale, p.bias)
    if p.kind == "elastic":
        return kernels.binary_linear(x, p.weight, p.scale, p.bias, p.shift)
    x_int, _ = layer.act_quant.unit(x)  # the same rounding as the simulated quantizer's integers
    return kernels.lowbit_linear(x_int.to(torch.int8), p.weight, p.scale, p.bias)


_MASK_CACHE: dict = {}


def _key_mask(attention_mask: torch.Tensor | None):
    """[B, Lk] bool key mask from a padding-only attention mask; None without a mask; False if the
    mask is per-query (no bit-kernel form)."""
    if attention_mask is None:
        return None
    key = (id(attention_mask), _version(attention_mask), attention_mask.data_ptr(), tuple(attention_mask.shape))
    hit = _MASK_CACHE.get("last")
    if hit is not None and hit[0] == key and hit[1] is attention_mask:
        return hit[2]  # every layer of one forward gets the same mask tensor: convert it once
    if attention_mask.dtype == torch.bool:
        key_mask = attention_mask[:, 0, 0, :]
    else:  # additive eager mask: 0 where attended, a large negative number elsewhere
        key_mask = attention_mask[:, 0, 0, :] == 0
    if attention_mask.shape[1] != 1 or (attention_mask.shape[2] > 1 and
                                        not bool((attention_mask == attention_mask[:, :, :1, :]).all())):
        key_mask = False  # a per-head or per-query mask (not padding only) has no bit-kernel form
    elif key_mask.dtype != torch.bool or not key_mask.is_contiguous():
        key_mask = key_mask.to(torch.bool).contiguous()
    _MASK_CACHE["last"] = (key, attention_mask, key_mask)
    return key_mask


def packed_bi_attention(query, key, value, attention_mask):
    """BiBERT attention by the bit kernel, as (B, H, Lq, D) float32; None where it has no kernel form."""
    from bebert_cli import kernels

    if query.device.type != "cpu" or query.dtype != torch.float32:
        return None
    key_mask = _key_mask(attention_mask)
    if key_mask is False:
        return None
    return kernels.bi_attention(query.contiguous(), key.contiguous(), value.contiguous(), key_mask)
