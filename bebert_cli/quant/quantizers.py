"""Quantizers with straight-through gradients: the building blocks of every recipe.

Conventions shared with packing and the kernels: sign(x) is +1 for x >= 0 (so sign(0) = +1, never
0), bool(x) is 1 for x >= 0. A binarized weight row is alpha_r * sign(W_r - mean(W_r)) with
alpha_r = mean(|W_r|); alpha is rounded to fp16 in every forward so that the value saved in a
packed checkpoint (fp16) is exactly the one the model was trained and evaluated with.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _SignSTE(torch.autograd.Function):
    """sign with sign(0)=+1; gradient passes where |x| <= 1 (clipped STE)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _BoolSTE(torch.autograd.Function):
    """bool(x) = 1 for x >= 0 else 0; gradient passes where |x| <= 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _SignIdentity(torch.autograd.Function):
    """sign for latent weights: identity gradient (weights live well inside [-1, 1])."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(x)


def bool_ste(x: torch.Tensor) -> torch.Tensor:
    return _BoolSTE.apply(x)


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """Inference-only sign with sign(0)=+1 (what packing stores)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def round_fp16(x: torch.Tensor) -> torch.Tensor:
    """Round to fp16 precision but keep dtype and gradient (straight-through)."""
    return x + (x.detach().half().to(x.dtype) - x.detach())


def binarize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (per output feature) binarization: returns (signs in {-1,+1}, alpha [rows])."""
    centred = w - w.mean(dim=-1, keepdim=True)
    signs = _SignIdentity.apply(centred)
    alpha = round_fp16(w.abs().mean(dim=-1))
    return signs, alpha


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    # LSQ: forward value unchanged, gradient multiplied by `scale`.
    return (x - x * scale).detach() + x * scale


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


class BinaryActivation(nn.Module):
    """Binarizes activations entering a binary matmul.

    mode "sign": sign(x) (BiBERT). mode "elastic" (BiT): alpha * sign(x - beta) with learned scale
    alpha and shift beta. mode "elastic_unsigned" (BiT, for non-negative inputs such as attention
    probabilities): alpha * clip(round((x - beta) / alpha), 0, 1).
    """

    def __init__(self, mode: str = "sign"):
        super().__init__()
        if mode not in ("sign", "elastic", "elastic_unsigned"):
            raise ValueError(f"unknown binary activation mode {mode!r}")
        self.mode = mode
        if mode != "sign":
            self.alpha = nn.Parameter(torch.tensor(1.0))
            self.beta = nn.Parameter(torch.tensor(0.0))
            # Data-dependent initialisation of alpha on the first training batch.
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """alpha: initialised from the first training batch; LSQ grad-scaled while training, and the
        parameter itself in eval (the grad-scaling trick can move its forward value by an ulp)."""
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.alpha.copy_(x.detach().abs().mean().clamp_min(1e-4) * (1.0 if self.mode == "elastic" else 2.0))
                self.initialized.fill_(1)
        return _grad_scale(self.alpha, 1.0 / math.sqrt(max(1, x.numel()))) if self.training else self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "sign":
            return sign_ste(x)
        alpha = self._scale(x)
        if self.mode == "elastic":
            return alpha * sign_ste(x - self.beta)
        return alpha * _round_ste(((x - self.beta) / alpha).clamp(0, 1))

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward(x) as (values in {-1,+1}, scale or None), with forward's gradients.

        Binary layers multiply the scale in after an exact integer matmul of the values, as the bit
        kernels do, so the simulated and the packed runtime agree bit for bit.
        """
        if self.mode == "sign":
            return sign_ste(x), None
        if self.mode != "elastic":
            raise ValueError("elastic_unsigned activations have no split form")
        return sign_ste(x - self.beta), self._scale(x)

    def unit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(values in {-1,+1} or {0,1}, scale or None): what a bit kernel consumes."""
        if self.mode == "sign":
            return hard_sign(x), None
        if self.mode == "elastic":
            return hard_sign(x - self.beta), self.alpha
        return ((x - self.beta) / self.alpha).round().clamp(0, 1), self.alpha


class LsqActivation(nn.Module):
    """Learned-step-size uniform quantization (LSQ) for low-bit activations (w1a4, w1a8).

    Signed inputs use the symmetric range [-2^(b-1), 2^(b-1)-1]; unsigned ones [0, 2^b - 1].
    """

    def __init__(self, bits: int, signed: bool = True):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"LSQ activations need 2..8 bits, got {bits}")
        self.bits, self.signed = bits, signed
        self.qmin = -(2 ** (bits - 1)) if signed else 0
        self.qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """The step: initialised from the first training batch; grad-scaled while training (LSQ)."""
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.step.copy_(2 * x.detach().abs().mean().clamp_min(1e-5) / math.sqrt(self.qmax))
                self.initialized.fill_(1)
        return _grad_scale(self.step, 1.0 / math.sqrt(max(1, x.numel()) * self.qmax)) if self.training else self.step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        integers, step = self.split(x)
        return integers * step

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward(x) as (integer-valued tensor, step), with forward's gradients (see BinaryActivation.split)."""
        step = self._scale(x)
        return _round_ste((x / step).clamp(self.qmin, self.qmax)), step

    def unit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer-valued tensor, step): the low-bit integers and their scale."""
        return (x / self.step).round().clamp(self.qmin, self.qmax), self.step


def make_activation_quantizer(bits: int, mode: str, *, unsigned: bool = False) -> nn.Module:
    """The quantizer for activations of `bits` bits (32 = keep full precision)."""
    if bits >= 32:
        return nn.Identity()
    if bits == 1:
        if mode == "sign" and unsigned:
            raise ValueError("plain sign cannot binarize non-negative inputs; use elastic")
        return BinaryActivation("elastic_unsigned" if unsigned else mode)
    return LsqActivation(bits, signed=not unsigned)
