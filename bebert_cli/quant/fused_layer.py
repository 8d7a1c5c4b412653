"""The packed runtime's fused BiBERT encoder layer: sign bits from the QKV GEMM to the FFN output.

In a 1-1-1 BiBERT layer every binary GEMM and the Bi-Attention read only the *signs* of their
inputs: of Q, K and V, of the attention output, and of GELU's output. The unfused runtime still
writes each of them as float32, copies Q, K, V and the attention output into the layouts the
kernels want, runs GELU over the 4x-wide FFN activations, and repacks signs in the next kernel.
Here the GEMM epilogues write sign bits directly (Q, K, V as one GEMM), Bi-Attention reads and
writes bits, the FFN-in GEMM writes sign(y), which is the model's definition of the FFN's binary
input since packed format 2 (`quant/ffn_sign.py`: no GELU is computed at all), and the two residual
adds happen in the epilogues of the GEMMs before the LayerNorms.

Every float that survives is computed exactly as before, so the outputs are identical bit for bit
(tests compare against the unfused runtime and the simulated model). The fused path only runs
where it is exact: eval mode, no autograd, CPU float32, compiled kernels, BiBERT attention, sign
activations on all six linears, an FFN defined by sign(y) (format 2), no hooks inside the layer (so transformers'
attention recorders keep working), no cache or cross-attention. Anything else takes the layer's own forward.
Set BEBERT_FUSED_LAYERS=0 to turn it off (it also turns off the fused w1a4 / w1a8 layer of
`fused_lsq.py`, which this module's `FusedForward` runs for those recipes' layers).
"""

from __future__ import annotations

import os

import torch

from bebert_cli.quant import fused_lsq
from bebert_cli.quant.recording import collecting_inner_outputs

_SUBMODULES = ("attention", "attention.self", "attention.output", "intermediate", "output")


def _enabled() -> bool:
    return os.environ.get("BEBERT_FUSED_LAYERS", "1").strip() not in ("0", "false", "no")


def _linears(layer):
    s = layer.attention.self
    return (s.query, s.key, s.value, layer.attention.output.dense, layer.intermediate.dense, layer.output.dense)


class _Parts:
    """The submodules a fused forward touches, looked up once (module attribute access is slow)."""

    def __init__(self, layer):
        s = layer.attention.self
        self.linears = _linears(layer)
        self.act = layer.intermediate.intermediate_act_fn
        self.hooked = tuple(layer.get_submodule(name) for name in _SUBMODULES) + self.linears
        if isinstance(self.act, torch.nn.Module):  # its hooks need it to run (BiBERT's path runs no activation)
            self.hooked += (self.act,)
        self.attn_quant = s.bebert_attn
        self.heads, self.head_size = s.num_attention_heads, s.attention_head_size
        self.scaling = getattr(s, "scaling", s.attention_head_size**-0.5)
        self.config = s.config
        self.attn_norm, self.out_norm = layer.attention.output.LayerNorm, layer.output.LayerNorm
        self.gelu_in_place = fused_lsq.gelu_in_place(self.act)


def fusion_kind(layer) -> str | None:
    """Which fused forward computes `layer`: "bi" (a packed BiBERT BertLayer), "lsq" (a packed w1a4 /
    w1a8 one, `fused_lsq.py`), or None (the layer keeps its own forward)."""
    from bebert_cli.quant.ffn_sign import SignOfInput
    from bebert_cli.quant.layers import PackedLinear

    try:
        s, linears = layer.attention.self, _linears(layer)
        aq = s.bebert_attn
    except AttributeError:
        return None
    hidden = s.query.in_features
    if not (all(isinstance(m, PackedLinear) for m in linears)
            and not getattr(layer, "is_decoder", False)
            and not hasattr(layer, "crossattention")
            and getattr(layer, "chunk_size_feed_forward", 0) == 0
            and s.num_attention_heads * s.attention_head_size == hidden):
        return None
    if (aq.mode == "bi"
            and all((m.bias is None) == (s.query.bias is None) for m in linears[:3])
            and s.attention_head_size % 32 == 0
            and isinstance(layer.intermediate.intermediate_act_fn, SignOfInput)):
        return "bi"
    return "lsq" if fused_lsq.fusable(aq, linears) else None


def fusable(layer) -> bool:
    """Whether `layer` has the shape of a packed BertLayer that a fused forward computes."""
    return fusion_kind(layer) is not None


class FusedForward:
    """Stands in for `layer.forward` (an instance attribute, so state dicts and the class are untouched)."""

    def __init__(self, layer):
        self.layer = layer
        self.kind = fusion_kind(layer)
        self.parts = _Parts(layer)
        self._gemms = None

    def __call__(self, hidden_states, attention_mask=None, encoder_hidden_states=None, *args, **kwargs):
        layer = self.layer
        out = None
        if encoder_hidden_states is None and not args and self._can_fuse(hidden_states, kwargs):
            if self.kind == "bi":
                out = _fused_forward(self, hidden_states, attention_mask)
            else:
                out = fused_lsq.fused_forward(self, hidden_states, attention_mask)
        if out is None:
            return type(layer).forward(layer, hidden_states, attention_mask, encoder_hidden_states, *args, **kwargs)
        return out

    def _can_fuse(self, hidden_states, kwargs) -> bool:
        from bebert_cli import kernels

        if not _enabled() or torch.is_grad_enabled() or self.layer.training or kernels.backend() == "torch":
            return False
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 3:
            return False
        if hidden_states.device.type != "cpu" or hidden_states.dtype != torch.float32:
            return False
        if any(kwargs.get(name) is not None for name in ("past_key_values", "cache", "encoder_attention_mask")):
            return False
        if kwargs.get("output_attentions"):
            return False
        if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
            return False
        # hooks on the layer itself see the same output; hooks inside it (attention recorders) need
        # the submodules to run
        for m in self.parts.hooked:  # a plain loop with the empty-dict test first: ~2 us -> ~0.6 us a call
            if (m._forward_pre_hooks or m._forward_hooks) and _has_hooks(m):
                return False
        return self.parts.attn_quant.runtime == "packed" and all(m.runtime == "packed" for m in self.parts.linears)

    def gemms(self, states, kind=None):
        """The layer's GEMM objects (`_Gemms`, or `kind`) for these kernel states, kept while they are current."""
        kind = kind or _Gemms
        if (self._gemms is None or type(self._gemms) is not kind
                or any(a is not b for a, b in zip(self._gemms.states, states))):
            self._gemms = kind(states)  # (re)built when a layer's prepared kernel state changed
        return self._gemms


def install(model) -> int:
    """Give every fusable layer of `model` its fused forward; returns how many."""
    from bebert_cli.families import FAMILIES

    fam = FAMILIES.get(getattr(getattr(model, "config", None), "model_type", None))
    if fam is not None and not fam.bert_layer:
        return 0  # the fused forward computes transformers' BertLayer; this family's layers are not one
    count = 0
    for m in model.modules():
        if isinstance(m.__dict__.get("forward"), FusedForward):
            count += 1
        elif fusable(m):
            m.forward = FusedForward(m)
            count += 1
    return count


def uninstall(model) -> int:
    """Give every fused layer its own forward back (the unfused packed runtime); returns how many."""
    count = 0
    for m in model.modules():
        if isinstance(m.__dict__.get("forward"), FusedForward):
            del m.forward
            count += 1
    return count


def _has_hooks(module) -> bool:
    """Hooks that need the module to run. transformers' output-capturing hooks stay installed after
    one `output_attentions=True` call but do nothing unless a recording asks for their output."""
    if module._forward_pre_hooks:
        return True
    for hook in module._forward_hooks.values():
        inert = getattr(hook, "__qualname__", "").startswith("install_output_capuring_hook")
        if not inert or collecting_inner_outputs():
            return True
    return False


class _Gemms:
    """The layer's four GEMMs as `kernels.BinaryGemm`s, built from the six linears' kernel states (Q, K
    and V as one: their weights stacked, N a multiple of 32, so blocks line up); their weights, scales
    and biases are checked once here instead of in every call."""

    __slots__ = ("states", "qkv", "attn_out", "inter", "out")

    def __init__(self, states):
        from bebert_cli.kernels import BinaryGemm, PackedWeight

        self.states = states
        qkv, first = states[:3], states[0].weight
        words = torch.cat([p.weight.words for p in qkv], dim=0)
        weight = PackedWeight(words, first.K, sum(p.weight.N for p in qkv))
        bias = None if qkv[0].bias is None else torch.cat([p.bias for p in qkv]).contiguous()
        self.qkv = BinaryGemm(weight, torch.cat([p.scale for p in qkv]).contiguous(), bias)
        self.attn_out, self.inter, self.out = (BinaryGemm(p.weight, p.scale, p.bias) for p in states[3:])


def _fused_forward(fused: FusedForward, hidden_states, attention_mask):
    from bebert_cli import kernels
    from bebert_cli.quant.ops import key_mask

    parts = fused.parts
    states = [m.kernel_state() for m in parts.linears]
    if any(p is None or p.kind != "sign" for p in states):  # only sign(x) . signs, no shift
        return None
    mask = key_mask(attention_mask)
    if mask is False:
        return None
    B, L, hidden = hidden_states.shape
    x = hidden_states.reshape(B * L, hidden).contiguous()
    g = fused.gemms(tuple(states))

    qkv_bits = g.qkv(x, out="sign")
    ctx_bits = kernels.bi_attention_bits(qkv_bits, mask, B, parts.heads, L, parts.head_size)
    h = parts.attn_norm(g.attn_out(ctx_bits, residual=x))
    ffn = g.inter(h, out="sign")  # sign(y) = the FFN's input
    y = g.out(ffn, residual=h)
    return parts.out_norm(y).view(B, L, hidden)
