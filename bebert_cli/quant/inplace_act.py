"""The FFN's GELU computed over its input's buffer at inference (the packed runtime of w1a4 / w1a8).

The up-projection's output (B x L x 4H floats, the largest activation of the layer) is read only by
the activation, so writing GELU's result over it gives the same bits (torch's `gelu_` is the same
kernel as `gelu`) with one buffer fewer: less peak memory and no fresh pages to fault in each layer.
Only where that input is certain to be a fresh tensor nobody else holds: the up-projection is a
PackedLinear (its forward always returns a new tensor), no hook sits on it, no autograd is recording.
"""

from __future__ import annotations

import torch
from torch import nn

from bebert_cli.families import FAMILIES, encoder_layers


def _is_erf_gelu(act) -> bool:
    # transformers' "gelu" (GELUActivation over torch's erf GELU), not its python or tanh variants.
    return type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is nn.functional.gelu


class InPlaceGELU(nn.Module):
    """transformers' GELUActivation that overwrites its input when no gradient is wanted."""

    def __init__(self, act: nn.Module, producer: nn.Module):
        super().__init__()
        self.act = act
        self._producer = [producer]  # a list: not registered as a submodule (it already is one)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        producer = self._producer[0]
        if torch.is_grad_enabled() or producer._forward_hooks or y.dtype != torch.float32:
            return self.act(y)
        return torch.ops.aten.gelu_(y)


def install(model) -> int:
    """Wrap the FFN activation of every layer whose up-projection is a PackedLinear; returns how many."""
    from bebert_cli.quant.layers import PackedLinear

    fam = FAMILIES.get(getattr(getattr(model, "config", None), "model_type", None))
    if fam is None:
        return 0
    holder_name, attr = fam.ffn_activation
    count = 0
    for layer in encoder_layers(model):
        holder, up = layer.get_submodule(holder_name), layer.get_submodule(fam.ffn_up)
        act = getattr(holder, attr)
        if isinstance(act, InPlaceGELU):
            count += 1
        elif isinstance(up, PackedLinear) and _is_erf_gelu(act):
            setattr(holder, attr, InPlaceGELU(act, up))
            count += 1
    return count
