import pytest
import torch

from bebert_cli.quant.quantizers import (
    BinaryActivation, LsqActivation, binarize_weight, bool_ste, make_activation_quantizer, sign_ste,
)


def test_sign_maps_zero_to_plus_one_and_clips_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, -0.0, 0.5, 2.0], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]


def test_bool_forward_and_gradient():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.7, 1.5], requires_grad=True)
    y = bool_ste(x)
    assert y.tolist() == [0, 0, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]


def test_weight_binarization_per_row():
    w = torch.tensor([[0.5, -0.1, 0.3, -0.7], [2.0, 2.0, 2.0, 2.0]], requires_grad=True)
    signs, alpha = binarize_weight(w)
    # row 0: mean -0.0 -> centred signs; alpha = mean |w| = 0.4
    assert signs[0].tolist() == [1, -1, 1, -1]
    assert alpha[0].item() == pytest.approx(0.4, rel=1e-3)
    # row 1: constant row, centred to exactly 0 -> +1 everywhere (never 0)
    assert signs[1].tolist() == [1, 1, 1, 1]
    (signs * alpha[:, None]).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_scale_is_rounded_to_fp16_exactly():
    w = torch.randn(8, 16)
    _, alpha = binarize_weight(w)
    assert torch.equal(alpha, alpha.half().float())


def test_elastic_binary_activation_learns_scale_and_shift():
    q = BinaryActivation("elastic").train()
    x = torch.randn(4, 16)
    y = q(x)
    assert q.initialized.item() == 1
    vals = y.detach().unique()
    assert len(vals) <= 2 and torch.allclose(vals.abs(), q.alpha.detach().abs().expand_as(vals))
    y.sum().backward()
    assert q.alpha.grad is not None and q.beta.grad is not None


def test_unsigned_elastic_goes_to_zero_or_alpha():
    q = BinaryActivation("elastic_unsigned").train()
    p = torch.softmax(torch.randn(3, 8), -1)
    vals = q(p).detach().unique()
    assert set(vals.tolist()) <= {0.0, q.alpha.item()}


@pytest.mark.parametrize("bits", [4, 8])
def test_lsq_levels_and_gradients(bits):
    q = LsqActivation(bits).train()
    x = torch.randn(64, 32, requires_grad=True)
    y = q(x)
    levels = (y / q.step).detach().round()
    assert levels.min() >= -(2 ** (bits - 1)) and levels.max() <= 2 ** (bits - 1) - 1
    assert torch.allclose(y / q.step, levels, atol=1e-4)
    y.pow(2).sum().backward()
    assert q.step.grad is not None and x.grad is not None


def test_factory():
    assert isinstance(make_activation_quantizer(32, "sign"), torch.nn.Identity)
    assert make_activation_quantizer(1, "sign").mode == "sign"
    assert make_activation_quantizer(1, "elastic", unsigned=True).mode == "elastic_unsigned"
    assert make_activation_quantizer(4, "sign").bits == 4
    with pytest.raises(ValueError):
        make_activation_quantizer(1, "sign", unsigned=True)
