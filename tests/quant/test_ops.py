"""quant/ops.py: the kernel-backed operations (what the packed runtime calls per layer)."""

import torch

from bebert_cli.quant.ops import key_mask, packed_bi_attention


def test_per_query_mask_falls_back_to_the_simulated_path():
    q = torch.randn(2, 2, 5, 8)
    padding = torch.zeros(2, 1, 5, 5)
    padding[1, :, :, 3:] = torch.finfo(torch.float32).min
    assert packed_bi_attention(q, q, q, padding) is not None
    causal = torch.triu(torch.full((5, 5), torch.finfo(torch.float32).min), 1).expand(2, 1, 5, 5).contiguous()
    assert packed_bi_attention(q, q, q, causal) is None


def test_key_mask_is_converted_once_per_mask_tensor_and_refreshed_after_an_in_place_change():
    mask = torch.zeros(2, 1, 1, 4)
    mask[1, :, :, 2:] = torch.finfo(torch.float32).min
    first = key_mask(mask)
    assert first.dtype == torch.bool and first.tolist() == [[True] * 4, [True, True, False, False]]
    assert key_mask(mask) is first  # every layer of one forward shares the conversion
    mask[0, :, :, 3] = torch.finfo(torch.float32).min
    assert key_mask(mask).tolist()[0] == [True, True, True, False]
    assert key_mask(None) is None


def test_lsq_layers_get_the_table_kernels_weight_layout_at_load_time():
    """Where a 4-bit LSQ linear runs lookup tables (AVX2 always, AVX-512 where they measured faster),
    `prepare_linear` builds the weights' nibbles layout with the weights (load time), not inside the
    first forward; elsewhere (8 bits, VPDPBUSD, scalar, NEON) it is not built."""
    from bebert_cli import kernels
    from bebert_cli.quant.layers import PackedLinear
    from bebert_cli.quant.ops import prepare_linear
    from bebert_cli.quant.quantizers import LsqActivation

    def prepared(bits):
        layer = PackedLinear(40, 24, True, LsqActivation(bits).eval(), runtime="packed")
        return prepare_linear(layer).weight._nibbles is not None

    backends = kernels.available_backends()
    prev_backend = kernels.backend()
    try:
        for name in ("scalar", "neon", "torch"):
            if name in backends:
                kernels.set_backend(name)
                assert not prepared(4), name
        if "avx2" in backends:
            kernels.set_backend("avx2")
            assert prepared(4) and not prepared(8)  # w1a8 runs PMADDUBSW on the words
        if "avx512_vpopcntdq" in backends:
            kernels.set_backend("avx512_vpopcntdq")
            prev = kernels.set_lowbit_kernel("tables")
            try:
                assert prepared(4) and not prepared(8)  # w1a8 runs VPDPBUSD: no second layout
                kernels.set_lowbit_kernel("dot")
                assert not prepared(4)
            finally:
                kernels.set_lowbit_kernel(prev)
    finally:
        kernels.set_backend(prev_backend)
