"""Bit packing of signs: 8 per uint8, bit 1 = +1, little bit order.

Bit i (value 1 << i) of byte j holds column 8*j + i; padding bits of the last byte are 0.
This is the on-disk layout of every binarized matrix (`quantization_config.bit_order`).
"""

from __future__ import annotations

import torch

BIT_ORDER = "little"


def _shifts(device) -> torch.Tensor:
    # Made per call, never at import: a module first imported inside transformers' loading runs under
    # `torch.device("meta")`, and a module-level tensor would be a meta tensor with no data.
    return torch.arange(8, dtype=torch.uint8, device=device)


def packed_width(k: int) -> int:
    return (k + 7) // 8


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """[..., K] real values -> [..., ceil(K/8)] uint8, bit set where x >= 0 (sign(0) = +1)."""
    bits = (x >= 0).to(torch.uint8)
    k = bits.shape[-1]
    pad = packed_width(k) * 8 - k
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    bits = bits.reshape(*bits.shape[:-1], -1, 8)
    return (bits << _shifts(bits.device)).sum(dim=-1, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor, k: int, dtype=torch.float32) -> torch.Tensor:
    """[..., ceil(K/8)] uint8 -> [..., K] of +-1 in `dtype`."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed signs must be uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_width(k):
        raise ValueError(f"packed width {packed.shape[-1]} does not hold {k} columns")
    bits = (packed.unsqueeze(-1) >> _shifts(packed.device)) & 1
    bits = bits.reshape(*packed.shape[:-1], -1)[..., :k]
    return bits.to(dtype) * 2 - 1
