import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from bebert_cli.errors import CheckpointError, ModelError
from bebert_cli.quant.convert import quantize_
from bebert_cli.quant.packed import load_packed, round_full_precision_, save_packed
from bebert_cli.quant.recipes import resolve_recipe
from tests.conftest import tiny_batch


def tiny(model_type="bert", vocab=60, labels=2):
    torch.manual_seed(0)
    if model_type == "distilbert":
        cfg = AutoConfig.for_model("distilbert", vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=labels)
    else:
        cfg = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, num_labels=labels, max_position_embeddings=64)
    return AutoModelForSequenceClassification.from_config(cfg)


batch = tiny_batch


def trained_student(recipe_name, model_type="bert"):
    model, recipe = tiny(model_type), resolve_recipe(recipe_name)
    plan = quantize_(model, recipe)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):  # move weights and quantizer parameters off their initial values
        loss = model(**batch()).logits.pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    round_full_precision_(model, recipe.fp_dtype)
    return model, recipe, plan


@pytest.mark.parametrize("recipe_name", ["bibert", "bit", "w1a4", "w1a8"])
@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_save_load_reproduces_the_student_exactly(tmp_path, recipe_name, model_type):
    model, recipe, plan = trained_student(recipe_name, model_type)
    with torch.no_grad():
        expected = model(**batch()).logits
    save_packed(model, tmp_path, recipe, plan)
    loaded = load_packed(tmp_path)
    with torch.no_grad():
        got = loaded(**batch()).logits
    assert torch.equal(expected, got)


def test_no_fp32_copy_of_a_binarized_weight(tmp_path):
    from safetensors import safe_open

    model, recipe, plan = trained_student("bibert")
    save_packed(model, tmp_path, recipe, plan)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for name in plan.binary_linears + plan.binary_embeddings:
            assert f"{name}.weight" not in keys
            assert f.get_tensor(f"{name}.weight_packed").dtype == torch.uint8
            assert f.get_tensor(f"{name}.weight_scale").dtype == torch.float16
        assert all(f.get_tensor(k).dtype != torch.float32 for k in keys if "quant" not in k)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bebert" and qc["bit_order"] == "little" and qc["format_version"] == 3
    assert qc["recipe"]["name"] == "bibert" and "bert.embeddings.position_embeddings" in qc["full_precision_modules"]


def test_packed_is_much_smaller_than_fp32():
    model = tiny(vocab=4000)
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    recipe = resolve_recipe("bibert")
    plan = quantize_(model, recipe)
    from bebert_cli.quant.packed import packed_state_dict

    packed = sum(t.numel() * t.element_size() for t in packed_state_dict(model, "float16").values())
    assert fp32_bytes / packed > 15


def _saved(tmp_path):
    model, recipe, plan = trained_student("bibert")
    save_packed(model, tmp_path, recipe, plan)
    return tmp_path


def test_truncated_file_is_refused(tmp_path):
    d = _saved(tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="outside the file|truncated"):
        load_packed(d)


def test_lying_header_is_refused(tmp_path):
    import struct

    d = _saved(tmp_path)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k.endswith("weight_packed"))
    header[name]["shape"] = [header[name]["shape"][0], header[name]["shape"][1] + 1]
    new = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    with pytest.raises(CheckpointError, match="does not match its shape"):
        load_packed(d)


def test_metadata_with_wrong_types_is_refused(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["recipe"]["activation_bits"] = "one"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="invalid recipe"):
        load_packed(d)
    cfg["quantization_config"]["format_version"] = 99
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="upgrade bebert"):
        load_packed(d)


def test_missing_weights_file(tmp_path):
    d = _saved(tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load_packed(d)


def test_unsupported_architecture_refused():
    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_head=2, n_embd=16, vocab_size=50)
    model = AutoModelForSequenceClassification.from_config(cfg)
    with pytest.raises(ModelError, match="supported: bert, roberta, electra, distilbert"):
        quantize_(model, resolve_recipe("bibert"))


@pytest.mark.parametrize("recipe_name", ["bibert", "bit", "w1a4"])
def test_fast_inference_twin_predicts_exactly_like_the_student(recipe_name):
    from bebert_cli import kernels
    from bebert_cli.quant.layers import PackedLinear
    from bebert_cli.quant.packed import fast_inference_twin

    model, recipe, plan = trained_student(recipe_name)
    twin = fast_inference_twin(model, recipe, plan, torch.device("cpu"))
    with torch.no_grad():
        want, got = model(**batch()).logits, twin(**batch()).logits
    assert torch.equal(want, got)
    if kernels.backend() != "torch":  # the point of the twin: the bit kernels compute it
        assert any(isinstance(m, PackedLinear) and m.runtime == "packed" for m in twin.modules())
    # Off the CPU (or without kernels) it is the model itself.
    assert fast_inference_twin(model, recipe, plan, torch.device("meta")) is model
