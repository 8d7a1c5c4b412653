"""quant/layers.py: the packed embedding looks up what the training form computes, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bebert_cli.quant.layers import PackedEmbedding, QuantEmbedding


@pytest.mark.parametrize("dim", [1, 8, 13, 384])
def test_packed_embedding_is_the_quant_embedding(dim):
    torch.manual_seed(dim)
    emb = nn.Embedding(50, dim)
    with torch.no_grad():
        emb.weight[3, : min(dim, 4)] = 0.0  # sign(0) = +1
        emb.weight[4] = -emb.weight[4].abs()  # a row of -1 only
    q = QuantEmbedding(emb)
    packed = PackedEmbedding(50, dim)
    for name, t in q.packed_state().items():
        getattr(packed, name).copy_(t)
    for ids in (torch.tensor([[3, 4, 0, 49, 3]]), torch.tensor([7]), torch.randint(0, 50, (4, 9)).t()):
        with torch.no_grad():
            want = q(ids)
        got = packed(ids)
        assert got.dtype == torch.float32 and got.shape == (*ids.shape, dim)
        assert torch.equal(got, want)
        assert torch.equal(got, packed.weight[ids])  # the full table, unpacked, agrees
