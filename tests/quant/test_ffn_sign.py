"""The FFN's binary input is sign(y) (packed format 2), and format-1 checkpoints keep their own definition."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from bebert_cli.quant import fused_layer
from bebert_cli.quant.convert import format_definition
from bebert_cli.quant.ffn_sign import SignOfInput
from bebert_cli.quant.packed import FORMAT_VERSION, load_packed, save_packed
from tests.quant.test_runtime import batch, logits, packed_checkpoint

SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, -5.5, -5.54, -5.6, -6.0, -10.0, -100.0, -3e38, 3e38,
           float("inf"), float("-inf"), 2.0, -2.0]


@pytest.mark.parametrize("name", ["gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "silu"])
def test_sign_of_output_is_sign_of_input(name):
    y = torch.cat([torch.tensor(SPECIAL), torch.linspace(-12, 12, 100_001)])
    act = SignOfInput(ACT2FN[name])
    out = act(y)
    assert torch.equal(out >= 0, y >= 0)  # -0.0 counts as >= 0 in both, as in the kernels
    raw = ACT2FN[name](y)
    same = (raw >= 0) == (y >= 0)
    torch.testing.assert_close(out[same], raw[same], rtol=0, atol=0, equal_nan=True)  # only disagreeing values change
    if name == "gelu":
        assert int((~same).sum()) > 0  # torch's GELU really does underflow to -0.0 here


def test_nan_stays_nan_and_gradient_flows_through_the_activation():
    y = torch.tensor([float("nan"), -1.0, 0.5, -8.0], requires_grad=True)
    out = SignOfInput(ACT2FN["gelu"])(y)
    assert torch.isnan(out[0])
    out[1:].sum().backward()
    ref = y.detach()[1:3].clone().requires_grad_()
    F.gelu(ref).sum().backward()
    assert torch.equal(y.grad[1:3], ref.grad) and y.grad[3] == 0  # replaced values pass no gradient


def test_only_sign_activations_get_the_definition(tmp_path):
    for recipe, wrapped in (("bibert", True), ("bit", False), ("w1a4", False)):
        model = load_packed(packed_checkpoint(tmp_path / recipe, recipe))
        acts = [layer.intermediate.intermediate_act_fn for layer in model.bert.encoder.layer]
        assert all(isinstance(a, SignOfInput) == wrapped for a in acts), recipe
        cfg = json.loads((tmp_path / recipe / "config.json").read_text())
        assert cfg["quantization_config"]["format_version"] == FORMAT_VERSION == 3


def test_format_1_checkpoint_keeps_torch_gelu_and_runs_unfused_exactly(tmp_path, monkeypatch):
    d = packed_checkpoint(tmp_path / "v1", "bibert", hidden=64)
    cfg_path = d / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"]["format_version"] = 1
    cfg_path.write_text(json.dumps(cfg))
    simulated, packed = load_packed(d), load_packed(d, runtime="packed")
    for m in (simulated, packed):
        assert not any(isinstance(layer.intermediate.intermediate_act_fn, SignOfInput) for layer in m.bert.encoder.layer)
        with torch.no_grad():  # pre-activations in GELU's underflow band: the old definition differs there
            for layer in m.bert.encoder.layer:
                layer.intermediate.dense.bias.copy_(torch.linspace(-7.0, -4.5, layer.intermediate.dense.bias.numel()))
    assert not any(isinstance(layer.forward, fused_layer.FusedForward) for layer in packed.bert.encoder.layer)
    assert torch.equal(logits(packed, batch()), logits(simulated, batch()))
    assert format_definition(simulated, simulated.bebert_recipe) == 1
    (tmp_path / "resaved").mkdir()
    save_packed(simulated, tmp_path / "resaved", simulated.bebert_recipe, simulated.bebert_plan)  # keeps format 1
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["quantization_config"]["format_version"] == 1
