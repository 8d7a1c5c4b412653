"""The fused w1a4 / w1a8 layer of the packed runtime: identical logits to the unfused runtime and the
simulated model, and the layer's own forward wherever the fused one would not be exact."""

import shutil

import pytest
import torch

from bebert_cli import kernels
from bebert_cli.quant import fused_layer, fused_lsq
from bebert_cli.quant.packed import load_packed
from bebert_cli.quant.runtime import set_runtime
from tests.conftest import backends_to_test
from tests.quant.test_fused_layer import compiled_only, spy_fused_calls
from tests.quant.test_runtime import as_format, batch, logits, packed_checkpoint

@pytest.fixture
def fused_calls(monkeypatch):
    return spy_fused_calls(monkeypatch, fused_lsq, "fused_forward")


@pytest.fixture(scope="module", params=["w1a4", "w1a8"])
def ckpt(request, tmp_path_factory):
    return packed_checkpoint(tmp_path_factory.mktemp("fused-lsq") / request.param, request.param)


def _layers(model):
    return model.bert.encoder.layer


@compiled_only
def test_fused_equals_unfused_and_simulated(ckpt, fused_calls, monkeypatch):
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    assert all(isinstance(layer.forward, fused_layer.FusedForward) and layer.forward.kind == "lsq"
               for layer in _layers(packed))
    for seed in (1, 2, 3):
        b = batch(seed=seed)  # rows with padding included
        fused = logits(packed, b)
        assert fused_calls == [True] * len(_layers(packed))
        fused_calls.clear()
        monkeypatch.setenv("BEBERT_FUSED_LAYERS", "0")
        unfused = logits(packed, b)
        monkeypatch.delenv("BEBERT_FUSED_LAYERS")
        assert not fused_calls
        assert torch.equal(fused, unfused)
        assert torch.equal(fused, logits(simulated, b))
        fused_calls.clear()
    with torch.inference_mode():  # inference tensors have no version counters: the caches still hold
        assert torch.equal(packed(**batch()).logits, logits(simulated, batch()))
    b = batch(rows=4, length=7)
    b.pop("attention_mask")
    assert torch.equal(logits(packed, b), logits(simulated, b))


def _layer_outputs(model):
    with torch.no_grad():
        return model(**batch(), output_hidden_states=True).hidden_states[1:]


@compiled_only
def test_changed_steps_and_weights_are_seen(ckpt, fused_calls):
    """The fused layer keeps GEMM objects and attention constants between forwards; quantizer steps,
    scales and biases written in place (as training or a user edit does) are used by the next forward.
    Compared on the layers' outputs: this tiny model's logits hardly move."""
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    before = _layer_outputs(simulated)
    assert all(map(torch.equal, _layer_outputs(packed), before))
    for model in (packed, simulated):
        layer = _layers(model)[0]
        s, aq = layer.attention.self, layer.attention.self.bebert_attn
        with torch.no_grad():
            s.query.weight_scale.mul_(10)  # larger scores: the attention's quantizers then decide more
            s.key.weight_scale.mul_(10)
            aq.q_quant.step.mul_(13)
            aq.k_quant.step.mul_(10)
            aq.p_quant.step.mul_(0.6)
            aq.v_quant.step.mul_(1.2)
            layer.intermediate.dense.act_quant.step.mul_(1.3)
            layer.output.dense.bias.add_(0.25)
    fused_calls.clear()
    after = _layer_outputs(simulated)
    assert not torch.equal(after[0], before[0])
    assert all(map(torch.equal, _layer_outputs(packed), after))
    assert fused_calls and all(fused_calls)


@compiled_only
def test_layer_forward_wherever_fusing_is_not_exact(ckpt, fused_calls):
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    want = logits(simulated, batch())
    n = len(_layers(packed))
    layer = _layers(packed)[0]
    seen = []
    for module in (layer.attention.self, layer.intermediate.intermediate_act_fn):
        handle = module.register_forward_hook(lambda m, i, o: seen.append(m))
        assert torch.equal(logits(packed, batch()), want)
        handle.remove()
        assert len(seen) == 1 and fused_calls.count(True) == n - 1  # layer 0 ran unfused: its hook fired
        seen.clear()
        fused_calls.clear()
    with torch.no_grad():
        out = packed(**batch(), output_hidden_states=True)  # recorded from the layers' outputs: still fused
        want_hidden = simulated(**batch(), output_hidden_states=True).hidden_states
    assert torch.equal(out.logits, want) and all(map(torch.equal, out.hidden_states, want_hidden))
    assert fused_calls == [True] * n
    with torch.no_grad():
        out = packed(**batch(), output_attentions=True)  # the weights come from inside the layer: unfused
        want_attn = simulated(**batch(), output_attentions=True).attentions
    assert torch.equal(out.logits, want) and all(map(torch.equal, out.attentions, want_attn))
    assert fused_calls == [True] * n
    set_runtime(packed, "simulated")  # runtime switched back: the fused forward steps aside
    assert torch.equal(logits(packed, batch()), want)
    set_runtime(packed, "packed")
    for model in (packed, simulated):  # another attention function: the layers' own forward
        model.config._attn_implementation = "eager"
    assert torch.equal(logits(packed, batch()), logits(simulated, batch()))
    for model in (packed, simulated):
        model.config._attn_implementation = "bebert"
    assert fused_calls.count(True) == n and fused_calls.count(False) == n  # tried, declined
    packed.train()
    packed(**batch()).logits.sum()  # training mode (dropout) never fuses
    assert fused_calls.count(True) == n


def test_only_format_3_lowbit_layers_fuse(ckpt, tmp_path):
    """Format 2 multiplies the quantized floats in its attention (not the integer kernels): unfused."""
    assert all(fused_layer.fusion_kind(layer) == "lsq" for layer in _layers(load_packed(ckpt)))
    copy = tmp_path / "format-2"
    shutil.copytree(ckpt, copy)
    old = load_packed(as_format(copy, 2), runtime="packed")
    assert not any(fused_layer.fusable(layer) for layer in _layers(old))
    assert not any(isinstance(layer.forward, fused_layer.FusedForward) for layer in _layers(old))


def test_every_compiled_backend_fuses_to_the_same_logits(ckpt, fused_calls):
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    want = logits(simulated, batch())
    n = len(_layers(packed))
    before = kernels.backend()
    try:
        for name in backends_to_test():
            kernels.set_backend(name)
            fused_calls.clear()
            assert torch.equal(logits(packed, batch()), want), name
            assert fused_calls == ([] if name == "torch" else [True] * n), name  # pure torch: unfused
    finally:
        kernels.set_backend(before)
