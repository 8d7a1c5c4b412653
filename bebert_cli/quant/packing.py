"""Bit packing of signs: 8 per uint8, bit 1 = +1, little bit order (`format.BIT_ORDER`).

Bit i (value 1 << i) of byte j holds column 8*j + i; padding bits of the last byte are 0.
This is the on-disk layout of every binarized matrix (`quantization_config.bit_order`). The packer
itself is the kernels' reference one (`kernels._reference`), so the layers, the exporters and the
kernels' oracle share one implementation; this module adds the checks a caller
reading a file needs. (The remote-code template keeps its own copy by design: an export must run
without bebert; its round-trip test checks the two agree.)
"""

from __future__ import annotations

import torch

from bebert_cli.format import BIT_ORDER  # noqa: F401 - re-exported: the layout these functions implement
from bebert_cli.kernels._reference import pack_signs_u8, unpack_bits


def packed_width(k: int) -> int:
    return (k + 7) // 8


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """[..., K] real values -> [..., ceil(K/8)] uint8, bit set where x >= 0 (sign(0) = +1)."""
    return pack_signs_u8(x)


def unpack_signs(packed: torch.Tensor, k: int, dtype=torch.float32) -> torch.Tensor:
    """[..., ceil(K/8)] uint8 -> [..., K] of +-1 in `dtype`."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed signs must be uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_width(k):
        raise ValueError(f"packed width {packed.shape[-1]} does not hold {k} columns")
    signs = unpack_bits(packed, k)  # float32 +-1
    return signs if dtype == torch.float32 else signs.to(dtype)
