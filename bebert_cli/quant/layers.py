"""Binary layers: a trainable form (latent fp weights) and a packed form (uint8 signs + scales).

Both compute `F.linear(x_q, signs) * alpha + bias` in the same order, so a packed model loaded
from disk reproduces the trained student bit for bit in the simulated runtime.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bebert_cli.quant import ops
from bebert_cli.quant.packing import pack_signs, packed_width, unpack_signs
from bebert_cli.quant.quantizers import binarize_weight, hard_sign


def quantized_linear(act_quant: nn.Module, x: torch.Tensor, signs: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """linear(act_quant(x), signs) * w_scale, every scale applied after an exact integer matmul.

    Quantized activations are integers times one scale (alpha for BiT, the LSQ step): the matmul of
    the integers is exact in float32, and `* (w_scale * a_scale)` is exactly what the bit kernels
    compute, so the simulated and the packed runtime give the same bits. (Multiplying the scale in
    first makes the matmul sum +-alpha terms, whose rounding depends on the BLAS summation order.)
    """
    split = getattr(act_quant, "split", None)
    if split is None:  # nn.Identity: 32-bit activations
        return F.linear(act_quant(x), signs) * w_scale
    values, a_scale = split(x)
    return F.linear(values, signs) * (w_scale if a_scale is None else w_scale * a_scale)


class QuantLinear(nn.Module):
    """nn.Linear with 1-bit weights (per-row scale) and quantized input activations (training form)."""

    def __init__(self, linear: nn.Linear, act_quant: nn.Module):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None
        self.act_quant = act_quant

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_bits=1"

    def forward(self, x):
        signs, alpha = binarize_weight(self.weight)
        y = quantized_linear(self.act_quant, x, signs, alpha)
        return y + self.bias if self.bias is not None else y

    def packed_state(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            signs, alpha = binarize_weight(self.weight)
            return {"weight_packed": pack_signs(signs), "weight_scale": alpha.half()}


class PackedLinear(nn.Module):
    """Inference form of QuantLinear: holds only packed signs and fp16 scales.

    runtime "simulated" unpacks the signs once (cached) and runs the same float ops as training;
    runtime "packed" calls the XNOR/popcount kernels of `bebert_cli.kernels` (through `ops`). The layer
    owns both caches; `runtime.set_runtime` switches between them.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, act_quant: nn.Module, runtime: str = "simulated"):
        super().__init__()
        self.in_features, self.out_features, self.runtime = in_features, out_features, runtime
        self.register_buffer("weight_packed", torch.zeros(out_features, packed_width(in_features), dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float16))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.act_quant = act_quant
        self._signs = None  # unpacked +-1 cache for the simulated runtime
        self._kernel = None  # ops.KernelState cache for the packed runtime

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_bits=1, runtime={self.runtime}"

    def _apply(self, fn, *args, **kwargs):
        self._signs, self._kernel = None, None  # device/dtype moves invalidate caches
        return super()._apply(fn, *args, **kwargs)

    def kernel_state(self) -> ops.KernelState | None:
        """This layer as the bit kernels take it, or None where its quantizer has no kernel form.

        Prepared once and kept; rebuilt when a tensor it was made from has changed in place.
        """
        state = self._kernel
        if state is None or not state.is_current(self):
            state = self._kernel = ops.prepare_linear(self, previous=state)
        return state

    def drop_kernel_state(self) -> None:
        self._kernel = None

    def signs(self) -> torch.Tensor:
        if self._signs is None:
            self._signs = unpack_signs(self.weight_packed, self.in_features)
        return self._signs

    def forward(self, x):
        if self.runtime == "packed" and not torch.is_grad_enabled():
            out = ops.packed_linear(self, x)
            if out is not None:
                return out
        y = quantized_linear(self.act_quant, x, self.signs(), self.weight_scale.float())
        return y + self.bias if self.bias is not None else y


class QuantEmbedding(nn.Module):
    """Word-embedding table with 1-bit rows and a per-row (per-token) scale (training form)."""

    def __init__(self, emb: nn.Embedding):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = emb.num_embeddings, emb.embedding_dim, emb.padding_idx
        self.weight = nn.Parameter(emb.weight.detach().clone())

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits=1"

    def forward(self, ids):
        signs, alpha = binarize_weight(self.weight)
        return F.embedding(ids, signs) * alpha[ids].unsqueeze(-1)

    def packed_state(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            signs, alpha = binarize_weight(self.weight)
            return {"weight_packed": pack_signs(signs), "weight_scale": alpha.half()}


class PackedEmbedding(nn.Module):
    """Inference form of QuantEmbedding: unpacks only the rows a batch looks up."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_packed", torch.zeros(num_embeddings, packed_width(embedding_dim), dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.float16))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits=1, packed"

    @property
    def weight(self) -> torch.Tensor:
        # transformers reads `.weight` for dtype/device; a full unpack is only done if asked.
        return unpack_signs(self.weight_packed, self.embedding_dim) * self.weight_scale.float().unsqueeze(-1)

    def forward(self, ids):
        # Gather first, then unpack the rows by a byte -> 8 signs table: three small ops where the bit
        # shifts took eight (about 0.1 ms of a 4 ms batch-1 forward). Same values: +-1 times the scale.
        rows = self.weight_packed[ids]
        signs = _byte_signs(rows.device)[rows.int()].flatten(-2)[..., : self.embedding_dim]
        # in place: the gathered signs are this call's own buffer (one [..., dim] float buffer less)
        return signs.mul_(self.weight_scale[ids].float().unsqueeze(-1))


_BYTE_SIGNS: dict = {}


def _byte_signs(device) -> torch.Tensor:
    """float32 [256, 8]: row b holds the +-1 signs of byte b's bits (bit i -> column i). Built on first
    use per device, never at import (an import inside transformers' loading runs on the meta device)."""
    table = _BYTE_SIGNS.get(device)
    if table is None:
        table = _BYTE_SIGNS[device] = unpack_signs(torch.arange(256, device=device).to(torch.uint8).unsqueeze(-1), 8)
    return table


__all__ = ["QuantLinear", "PackedLinear", "QuantEmbedding", "PackedEmbedding", "hard_sign"]
