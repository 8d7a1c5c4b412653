"""The FFN's binary input is sign(y), not sign(GELU(y)) as a float computation would round it.

A 1-1-1 layer binarizes GELU's output: sign(GELU(y)). Mathematically that is sign(y) for every y
(GELU(y) = y * Phi(y) with Phi > 0; likewise for the tanh/sigmoid approximations and SiLU), but in
float32 GELU(y) rounds to -0.0 (whose sign is +1) below about y = -5.5, and where that starts depends
on the CPU and on which of torch's erf loops (libm or SLEEF) a tensor happens to take. A definition
that depends on rounding cannot be computed by a bit kernel exactly on every CPU.

So since packed format 2 the quantized model *defines* the FFN's binary input as sign(y): the
activation's forward value is corrected wherever its sign disagrees with y's (a float of the right
sign and negligible size takes its place; the gradient still flows through the activation), and the
packed runtime's GEMM epilogue writes sign(y) directly. Checkpoints of format 1 keep their own
definition (torch's GELU, then sign) and run the unfused packed runtime, exact on the CPU they run on.
"""

from __future__ import annotations

import torch
from torch import nn

from bebert_cli.families import family

SIGN_OF_INPUT_SINCE = 2  # the packed format version that introduced this definition

# Activations with act(y) = y * (a positive function of y): their sign is y's.
_SIGN_PRESERVING = frozenset(
    {"GELUActivation", "AccurateGELUActivation", "FastGELUActivation", "NewGELUActivation", "GELUTanh",
     "QuickGELUActivation", "ClippedGELUActivation", "SiLUActivation", "GELU", "SiLU"}
)


class SignOfInput(nn.Module):
    """`act(y)`, with every value whose sign differs from y's replaced by +-(smallest normal float).

    Only the sign of the output is ever read (the next layer binarizes it), so the replacement changes
    nothing but the few underflowed (or NaN from +inf) values, and makes the sign exactly sign(y):
    y >= 0 (incl. -0.0) -> +1, y < 0 -> -1, NaN stays NaN (-1 downstream, as in the kernels).
    """

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        out = self.act(y)
        positive = y >= 0
        wrong = (out >= 0) != positive
        tiny = torch.finfo(out.dtype).tiny
        return torch.where(wrong, torch.where(positive, tiny, -tiny).to(out.dtype), out)


def is_sign_preserving(act) -> bool:
    return type(act).__name__ in _SIGN_PRESERVING


def define_ffn_sign_by_input_(layer, model_type: str) -> bool:
    """Wrap `layer`'s FFN activation in SignOfInput (once); False where it is not sign-preserving."""
    holder_name, attr = family(model_type).ffn_activation
    holder = layer.get_submodule(holder_name)
    act = getattr(holder, attr)
    if isinstance(act, SignOfInput):
        return True
    if not is_sign_preserving(act):
        return False
    setattr(holder, attr, SignOfInput(act))
    return True
