import pytest
import torch

from bebert_cli.quant.packing import pack_signs, packed_width, unpack_signs


@pytest.mark.parametrize("k", [1, 7, 8, 9, 63, 64, 65, 383, 384, 1001])
def test_round_trip_on_odd_widths(k):
    x = torch.randn(5, k)
    x[0, 0] = 0.0  # sign(0) = +1 must survive packing
    p = pack_signs(x)
    assert p.dtype == torch.uint8 and p.shape == (5, packed_width(k))
    signs = unpack_signs(p, k)
    assert torch.equal(signs, torch.where(x >= 0, 1.0, -1.0))


def test_bit_order_is_little_and_padding_is_zero():
    x = torch.tensor([[1.0, -1, -1, -1, -1, -1, -1, -1, 1, -1, 1]])  # columns 0, 8, 10 positive
    p = pack_signs(x)
    assert p.tolist() == [[0b00000001, 0b00000101]]


def test_unpack_rejects_wrong_width_or_dtype():
    with pytest.raises(ValueError):
        unpack_signs(torch.zeros(2, 3, dtype=torch.uint8), 30)
    with pytest.raises(TypeError):
        unpack_signs(torch.zeros(2, 3), 20)
