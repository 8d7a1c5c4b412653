"""The kernel-backed operations of the packed runtime: a PackedLinear's prepared kernel state, the
packed linear itself, the key mask, and Bi-Attention.

Imports only `bebert_cli.kernels` and the quantizers; the layers call it (`layers.PackedLinear`,
`attention.bebert_attention`, `fused_layer`) and own what it prepares for them. Switching a model
between runtimes is `runtime.py`'s job, above this one.

Each function returns None when a layer's quantizer has no bit-kernel form (e.g. BiT's unsigned
probabilities); the caller then runs the simulated path, so results never silently change.

Everything a call needs that does not depend on the input (the kernels' weight layout, the fp32
scale with the activation scale folded in, the fp32 bias) is prepared once per layer and kept by the
layer (`PackedLinear.kernel_state`); it is rebuilt when a tensor it was made from changes (in-place
writes bump a tensor's version counter; device/dtype moves drop it in `PackedLinear._apply`).

Exactness: the kernels compute `dot * scale + bias` with an exact integer dot. The simulated
runtime equals that bit for bit when it too applies every scale after an exact dot: always for
sign activations (BiBERT); for elastic (BiT) and LSQ (w1a4/w1a8) activations only if the simulated
layer multiplies the activation scale in after the matmul (see the note in docs/performance.md).
"""

from __future__ import annotations

import torch

from bebert_cli import kernels
from bebert_cli.quant.quantizers import BinaryActivation, LsqActivation


class KernelState:
    """A PackedLinear's kernel-ready state: weight layout, folded fp32 scale, fp32 bias."""

    __slots__ = ("weight", "scale", "bias", "kind", "shift", "lsq", "key", "weight_key")

    def __init__(self, weight, scale, bias, kind, shift, key, weight_key, lsq=None):
        self.weight, self.scale, self.bias, self.kind, self.shift = weight, scale, bias, kind, shift
        self.lsq = lsq  # (step, qmin, qmax) of an LSQ input quantizer, else None
        self.key, self.weight_key = key, weight_key

    def is_current(self, layer) -> bool:
        """Whether every tensor it was made from is still the one, unchanged."""
        return self.key == version_key(layer)


def kernel_kind(aq) -> str | None:
    """How the kernels take a layer's input quantizer: "sign", "elastic", "lsq", or None (no kernel form)."""
    if isinstance(aq, BinaryActivation) and aq.mode in ("sign", "elastic"):
        return aq.mode
    if isinstance(aq, LsqActivation) and -128 <= aq.qmin and aq.qmax <= 127:  # integers that fit int8
        step = float(aq.step.detach())
        return "lsq" if step != 0.0 and abs(step) < float("inf") else None  # x / 0 has no integers
    return None


def _version(t: torch.Tensor) -> int:
    # Inference tensors have no version counter (they can only change inside inference mode).
    return -1 if t.is_inference() else t._version


def tensor_key(t) -> tuple | None:
    """(identity, version): changes when the tensor is replaced or written in place."""
    return (id(t), _version(t)) if t is not None else None



def version_key(layer) -> tuple:
    # Runs for every linear of every forward: read the modules' own dicts, because nn.Module.__getattr__
    # costs ~0.5 us a lookup (this was ~3 us a call, ~110 us of a batch-1 MiniLM forward).
    aq = layer._modules["act_quant"]
    tensors = [layer._buffers["weight_packed"], layer._buffers["weight_scale"], layer._parameters.get("bias")]
    if isinstance(aq, BinaryActivation) and aq.mode == "elastic":
        tensors += [aq._parameters["alpha"], aq._parameters["beta"]]
    elif isinstance(aq, LsqActivation):
        tensors.append(aq._parameters["step"])
    return tuple(map(tensor_key, tensors))


def prepare_linear(layer, previous: KernelState | None = None) -> KernelState | None:
    """The kernel state of a PackedLinear; reuses `previous`'s weight layout while the packed signs are unchanged."""
    kind = kernel_kind(layer.act_quant)
    if kind is None:
        return None
    aq = layer.act_quant
    weight_key = tensor_key(layer.weight_packed)
    with torch.no_grad():
        if previous is not None and previous.weight_key == weight_key:
            w = previous.weight
        else:
            w = kernels.prepare_binary_weight(layer.weight_packed.detach().cpu(), layer.in_features)
        scale = layer.weight_scale.detach().cpu().float()
        shift, lsq = 0.0, None
        if kind == "elastic":
            # alpha_a * sign(x - beta) . s * alpha_w == sign(x - beta) . s * (alpha_w * alpha_a)
            scale = scale * aq.alpha.detach().cpu().float()
            shift = float(aq.beta.detach())
        elif kind == "lsq":
            step = aq.step.detach().cpu().float()
            scale = scale * step
            lsq = (float(step), aq.qmin, aq.qmax)
            if kernels.lsq_uses_tables(aq.qmin, aq.qmax):
                w.kernel_nibbles()  # now, with the weights, not in the first forward
        bias = layer.bias.detach().cpu().float().contiguous() if layer.bias is not None else None
    return KernelState(w, scale.contiguous(), bias, kind, shift, version_key(layer), weight_key, lsq)


def packed_linear(layer, x: torch.Tensor):
    """The layer's output computed by the bit kernels, or None if this layer/input has no kernel form."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    p = layer.kernel_state()
    if p is None:
        return None
    if p.kind == "sign":
        return kernels.binary_linear(x, p.weight, p.scale, p.bias)
    if p.kind == "elastic":
        return kernels.binary_linear(x, p.weight, p.scale, p.bias, p.shift)
    # the quantizer's integers computed inside the kernel, as torch computes them (`unit`)
    return kernels.lsq_linear(x, p.weight, *p.lsq, p.scale, p.bias)


def packed_lsq(aq, x: torch.Tensor, *, inplace: bool = False):
    """An LSQ quantizer's eval output `q * step` in one kernel pass (the same bits as its torch ops), or
    None where it has no kernel form (another quantizer, training mode, not CPU float32). `inplace`
    overwrites x (the caller owns it and needs it no more)."""
    if not isinstance(aq, LsqActivation) or aq.training or x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    return kernels.lsq_quantize(x, float(aq.step.detach()), aq.qmin, aq.qmax, inplace=inplace)


_MASK_CACHE: dict = {}


def key_mask(attention_mask: torch.Tensor | None):
    """[B, Lk] bool key mask from a padding-only attention mask; None without a mask; False if the
    mask is per-query (no bit-kernel form)."""
    if attention_mask is None:
        return None
    key = (id(attention_mask), _version(attention_mask), attention_mask.data_ptr(), tuple(attention_mask.shape))
    hit = _MASK_CACHE.get("last")
    if hit is not None and hit[0] == key and hit[1] is attention_mask:
        return hit[2]  # every layer of one forward gets the same mask tensor: convert it once
    if attention_mask.dtype == torch.bool:
        mask = attention_mask[:, 0, 0, :]
    else:  # additive eager mask: 0 where attended, a large negative number elsewhere
        mask = attention_mask[:, 0, 0, :] == 0
    if attention_mask.shape[1] != 1 or (attention_mask.shape[2] > 1 and
                                        not bool((attention_mask == attention_mask[:, :, :1, :]).all())):
        mask = False  # a per-head or per-query mask (not padding only) has no bit-kernel form
    elif mask.dtype != torch.bool or not mask.is_contiguous():
        mask = mask.to(torch.bool).contiguous()
    _MASK_CACHE["last"] = (key, attention_mask, mask)
    return mask


def packed_bi_attention(query, key, value, attention_mask):
    """BiBERT attention by the bit kernel, as (B, H, Lq, D) float32; None where it has no kernel form."""
    if query.device.type != "cpu" or query.dtype != torch.float32:
        return None
    mask = key_mask(attention_mask)
    if mask is False:
        return None
    return kernels.bi_attention(query.contiguous(), key.contiguous(), value.contiguous(), mask)
