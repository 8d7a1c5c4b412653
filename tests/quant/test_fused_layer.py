"""The fused BiBERT layer of the packed runtime: identical logits to the unfused runtime and the
simulated model, and the layer's own forward wherever the fused one would not be exact."""

import pytest
import torch

from bebert_cli import kernels
from bebert_cli.quant import fused_layer
from bebert_cli.quant.runtime import set_runtime
from bebert_cli.quant.packed import load_packed
from tests.conftest import backends_to_test
from tests.quant.test_runtime import batch, logits, packed_checkpoint


def _checkpoint(path, recipe_name="bibert", hidden=64):
    """A tiny packed student; 2 heads of hidden/2: 32 wide by default (the fused layer needs whole
    sign words per head)."""
    return packed_checkpoint(path, recipe_name, hidden=hidden)


# Under BEBERT_KERNEL_BACKEND=torch (CI runs these tests once per backend) nothing fuses: the pure-torch
# fallback is checked for equality by the other tests and by test_every_compiled_backend_fuses_to_the_same_logits.
compiled_only = pytest.mark.skipif(kernels.backend() == "torch", reason="the pure-torch backend never fuses")


def spy_fused_calls(monkeypatch, module, name) -> list:
    """Replaces module.name (a fused forward) by a spy; the list gets True per call that fused, False
    per call that declined (returned None)."""
    calls = []
    real = getattr(module, name)

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.fixture
def fused_calls(monkeypatch):
    return spy_fused_calls(monkeypatch, fused_layer, "_fused_forward")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("fused") / "ckpt")


@compiled_only
def test_fused_equals_unfused_and_simulated(ckpt, fused_calls, monkeypatch):
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    assert all(isinstance(layer.forward, fused_layer.FusedForward) for layer in packed.bert.encoder.layer)
    for seed in (1, 2, 3):
        b = batch(seed=seed)  # rows with padding included
        fused = logits(packed, b)
        assert fused_calls and all(fused_calls)
        fused_calls.clear()
        monkeypatch.setenv("BEBERT_FUSED_LAYERS", "0")
        unfused = logits(packed, b)
        monkeypatch.delenv("BEBERT_FUSED_LAYERS")
        assert not fused_calls
        assert torch.equal(fused, unfused)
        assert torch.equal(fused, logits(simulated, b))
    with torch.inference_mode():
        assert torch.equal(packed(**batch()).logits, logits(simulated, batch()))
    b = batch()
    b.pop("attention_mask")
    assert torch.equal(logits(packed, b), logits(simulated, b))


def _push_ffn_into_gelu_underflow(model):
    """Shift the FFN-in biases so that many pre-activations land where torch's GELU rounds to -0.0
    (about y <= -5.5 on every CPU and loop; where exactly varies), and some below and above it."""
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            bias = layer.intermediate.dense.bias
            bias.copy_(torch.linspace(-7.0, -4.5, bias.numel()))


@compiled_only
def test_ffn_input_is_sign_of_y_where_gelu_underflows(ckpt, fused_calls):
    """Format 2 defines the FFN's binary input as sign(y): pre-activations in GELU's underflow band
    (sign(-0.0) would be +1) give -1 in the simulated model, the unfused and the fused runtime alike."""
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    for m in (packed, simulated):
        _push_ffn_into_gelu_underflow(m)
    seen = []
    act = simulated.bert.encoder.layer[0].intermediate.intermediate_act_fn
    hook = act.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    want = logits(simulated, batch())
    hook.remove()
    y, out = seen[0]
    band = (y < 0) & (torch.nn.functional.gelu(y) == 0)
    assert int(band.sum()) > 50  # the band is really exercised
    assert bool((out[band] < 0).all()) and torch.equal(out >= 0, y >= 0)
    assert torch.equal(logits(packed, batch()), want)
    assert fused_calls and all(fused_calls)


@compiled_only
def test_layer_forward_wherever_fusing_is_not_exact(ckpt, fused_calls):
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    want = logits(simulated, batch())
    layer = packed.bert.encoder.layer[0]
    seen = []
    handle = layer.attention.self.register_forward_hook(lambda m, i, o: seen.append(o[0].shape))
    assert torch.equal(logits(packed, batch()), want)
    handle.remove()
    assert seen and fused_calls.count(True) == 1  # layer 0 ran unfused (its hook fired), layer 1 fused
    fused_calls.clear()
    with torch.no_grad():
        out = packed(**batch(), output_hidden_states=True)  # recorded from the layers' outputs: still fused
        want_hidden = simulated(**batch(), output_hidden_states=True).hidden_states
    assert torch.equal(out.logits, want) and all(map(torch.equal, out.hidden_states, want_hidden))
    assert fused_calls == [True, True]
    with torch.no_grad():
        out = packed(**batch(), output_attentions=True)  # attentions come from inside the layer: unfused
    assert torch.equal(out.logits, want)
    assert fused_calls == [True, True]
    set_runtime(packed, "simulated")  # runtime switched back: the fused forward steps aside
    assert torch.equal(logits(packed, batch()), want)
    set_runtime(packed, "packed")
    packed.train()
    packed(**batch()).logits.sum()  # training mode (dropout) never fuses
    assert fused_calls == [True, True]


def test_only_bibert_layers_with_32_wide_heads_fuse(tmp_path):
    bit = load_packed(_checkpoint(tmp_path / "bit", "bit"), runtime="packed")  # softmax attention
    assert not any(isinstance(layer.forward, fused_layer.FusedForward) for layer in bit.bert.encoder.layer)
    narrow = load_packed(_checkpoint(tmp_path / "narrow", hidden=32), runtime="packed")  # 16-wide heads
    assert not any(fused_layer.fusable(layer) for layer in narrow.bert.encoder.layer)


def test_every_compiled_backend_fuses_to_the_same_logits(ckpt, fused_calls):
    packed, simulated = load_packed(ckpt, runtime="packed"), load_packed(ckpt)
    want = logits(simulated, batch())
    before = kernels.backend()
    try:
        for name in backends_to_test():
            kernels.set_backend(name)
            fused_calls.clear()
            assert torch.equal(logits(packed, batch()), want), name
            assert fused_calls == ([] if name == "torch" else [True, True]), name  # pure torch: unfused
    finally:
        kernels.set_backend(before)
