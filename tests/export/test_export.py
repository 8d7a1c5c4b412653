"""`bebert export`: packed, dense and remote-code round trips, and the remote-code directory without bebert."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForSequenceClassification

from bebert_cli.errors import UsageError
from bebert_cli.export import export_checkpoint, load_remote_code_class
from bebert_cli.quant.convert import quantize_
from bebert_cli.quant.packed import load_packed, round_full_precision_, save_packed
from bebert_cli.quant.recipes import resolve_recipe
from tests.conftest import error_line, one_json, run_cli

RECIPES = ["bibert", "bit", "w1a4", "w1a8"]


def tiny_model(model_type="bert", vocab=60):
    torch.manual_seed(0)
    if model_type == "distilbert":
        cfg = AutoConfig.for_model("distilbert", vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                   num_labels=2, max_position_embeddings=64)
    else:
        cfg = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64, num_labels=2, max_position_embeddings=64)
    return AutoModelForSequenceClassification.from_config(cfg)


def batch(vocab=60, seed=1, token_types=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (5, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[4, 3:] = 0
    b = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        b["token_type_ids"] = torch.zeros_like(ids)
    return b


def packed_checkpoint(path, recipe_name="bibert", model_type="bert", *, tokenizer=None, **overrides):
    """A tiny student, a few training steps off its initial values, saved packed (+ tokenizer)."""
    vocab = tokenizer.vocab_size if tokenizer is not None else 60
    model, recipe = tiny_model(model_type, vocab), resolve_recipe(recipe_name, **overrides)
    tokens = None
    if recipe.embeddings == "hash":
        from bebert_cli.quant.hash_embedding import tokens_from_vocab

        tokens = tokens_from_vocab(tokenizer.get_vocab())
    plan = quantize_(model, recipe, vocab=tokens)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for i in range(3):
        model(**batch(vocab, seed=10 + i, token_types=False)).logits.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    round_full_precision_(model, recipe.fp_dtype)
    path = Path(path)
    path.mkdir(parents=True)
    save_packed(model, path, recipe, plan)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def logits(model, b):
    with torch.no_grad():
        return model(**b).logits


def remote_load(d):
    return load_remote_code_class().from_pretrained(str(d))


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe_name", RECIPES)
def test_round_trip_every_format(tmp_path, recipe_name):
    src = packed_checkpoint(tmp_path / "src", recipe_name)
    want = logits(load_packed(src), batch())
    for fmt in ("packed", "dense", "remote-code"):
        out = tmp_path / fmt
        payload = export_checkpoint(src, out, fmt)
        assert payload["format"] == fmt and payload["verification"]["verified"] is True
        assert sorted(p.name for p in out.iterdir()) == payload["files"]
        got = logits(load_packed(out) if fmt == "packed" else remote_load(out), batch())
        assert torch.equal(got, want), fmt


def test_full_precision_encoder_with_binary_embeddings(tmp_path):
    # --weight-bits 32 --activation-bits 32: only the word-embedding table is binary, attention stays softmax.
    src = packed_checkpoint(tmp_path / "src", "bibert", weight_bits=32, activation_bits=32)
    want = logits(load_packed(src), batch())
    for fmt in ("dense", "remote-code"):
        export_checkpoint(src, tmp_path / fmt, fmt)
        assert torch.equal(logits(remote_load(tmp_path / fmt), batch()), want)


def test_packed_export_is_a_validated_copy(tmp_path):
    src = packed_checkpoint(tmp_path / "src")
    export_checkpoint(src, tmp_path / "out", "packed")
    for name in ("config.json", "model.safetensors", "recipe.json"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


@pytest.mark.parametrize("model_type", ["distilbert", "roberta"])
def test_other_architectures(tmp_path, model_type):
    src = packed_checkpoint(tmp_path / "src", "bit", model_type)
    b = batch(token_types=model_type != "distilbert")
    want = logits(load_packed(src), b)
    for fmt in ("dense", "remote-code"):
        export_checkpoint(src, tmp_path / fmt, fmt)
        assert torch.equal(logits(remote_load(tmp_path / fmt), b), want)


def test_hashed_embeddings(tmp_path, tokenizer):
    src = packed_checkpoint(tmp_path / "src", "bibert", tokenizer=tokenizer, embeddings="hash", hash_projection=True)
    b = batch(tokenizer.vocab_size)
    want = logits(load_packed(src), b)
    for fmt in ("dense", "remote-code"):
        payload = export_checkpoint(src, tmp_path / fmt, fmt)
        assert torch.equal(logits(remote_load(tmp_path / fmt), b), want)
    assert "hashed" in payload["note"]


# -- remote-code ---------------------------------------------------------------------------------------

_FRESH = textwrap.dedent("""
    import sys
    sys.modules["bebert_cli"] = None  # bebert is NOT importable in this process
    try:
        import bebert_cli  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("bebert_cli is importable")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory, batch_file, out_file = sys.argv[1:4]
    model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)
    b = torch.load(batch_file)
    with torch.no_grad():
        logits = model(**b).logits
    torch.save({"logits": logits, "class": type(model).__name__, "module": type(model).__module__,
                "tokenizer": type(AutoTokenizer.from_pretrained(directory, trust_remote_code=True)).__name__,
                "bebert_modules": sorted(m for m in sys.modules if m.startswith("bebert_cli") and sys.modules[m] is not None)},
               out_file)
""")


def run_fresh(tmp_path, directory, b):
    """Load `directory` with plain transformers in a new process where bebert_cli cannot be imported."""
    torch.save(b, tmp_path / "batch.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")  # a fresh copy of the remote code, no stale cache
    env["TRANSFORMERS_VERBOSITY"] = "error"
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-I", "-c", _FRESH, str(directory), str(tmp_path / "batch.pt"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return torch.load(tmp_path / "out.pt")


@pytest.mark.parametrize("recipe_name", ["bibert", "w1a4"])
def test_remote_code_runs_without_bebert(tmp_path, tokenizer, recipe_name):
    src = packed_checkpoint(tmp_path / "src", recipe_name, tokenizer=tokenizer)
    out = tmp_path / "remote"
    export_checkpoint(src, out, "remote-code")
    b = batch(tokenizer.vocab_size)
    result = run_fresh(tmp_path, out, b)
    assert result["bebert_modules"] == []
    assert result["class"] == "BebertForSequenceClassification" and "bebert_cli" not in result["module"]
    assert result["tokenizer"].startswith("Bert")
    assert torch.equal(result["logits"], logits(load_packed(src), b))


def test_remote_code_directory_is_still_packed(tmp_path):
    src = packed_checkpoint(tmp_path / "src")
    out = tmp_path / "remote"
    export_checkpoint(src, out, "remote-code")
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bebert" and "quantization_config" not in cfg
    assert cfg["auto_map"] == {"AutoConfig": "configuration_bebert.BebertConfig",
                               "AutoModelForSequenceClassification": "modeling_bebert.BebertForSequenceClassification"}
    qc = cfg["bebert_quantization"]
    assert qc["storage"] == "packed" and cfg["base_config"]["model_type"] == "bert"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for name in qc["binary_modules"] + qc["binary_embeddings"]:
            assert f"{name}.weight" not in keys and f.get_tensor(f"{name}.weight_packed").dtype == torch.uint8
    for name in ("modeling_bebert.py", "configuration_bebert.py"):
        code = (out / name).read_text()
        assert "bebert_cli" not in code.replace("bebert export", "")
        imports = {ln.split()[1].split(".")[0] for ln in code.splitlines() if ln.startswith(("import ", "from "))}
        assert imports <= {"__future__", "json", "math", "torch", "transformers", "safetensors", ""}, imports


def test_remote_code_needs_trust(tmp_path):
    src = packed_checkpoint(tmp_path / "src")
    export_checkpoint(src, tmp_path / "remote", "remote-code")
    with pytest.raises(ValueError, match="trust_remote_code|custom code"):
        AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "remote"), trust_remote_code=False)


# -- dense -----------------------------------------------------------------------------------------------


def test_dense_is_an_ordinary_fp32_checkpoint(tmp_path):
    src = packed_checkpoint(tmp_path / "src", "bibert")
    out = tmp_path / "dense"
    payload = export_checkpoint(src, out, "dense")
    binary_model = load_packed(src)
    qc = json.loads((src / "config.json").read_text())["quantization_config"]
    # Plain transformers, no remote code: the original architecture with the binarized weights.
    plain = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert type(plain).__name__ == "BertForSequenceClassification"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype in (torch.float32, torch.int64) for k in f.keys())
        assert not any("weight_packed" in k or "act_quant" in k or "bebert_attn" in k for k in f.keys())
    for name in qc["binary_modules"]:
        w = plain.get_submodule(name).weight
        packed = binary_model.get_submodule(name)
        assert torch.equal(w, packed.signs() * packed.weight_scale.float().unsqueeze(-1))
        assert torch.equal(w.abs(), w.abs().amax(-1, keepdim=True).expand_as(w))  # one magnitude per row
    # ... which is not the binary model (activations stay full precision) -- the export says so.
    assert payload["exact"] == "with trust_remote_code=True only"
    assert payload["verification"]["plain_load"]["exact"] is False
    assert not torch.equal(logits(plain, batch()), logits(binary_model, batch()))
    # With the bundled code the same directory is the exact binary model.
    assert torch.equal(logits(remote_load(out), batch()), logits(binary_model, batch()))


def test_dense_runs_without_bebert_with_remote_code(tmp_path, tokenizer):
    src = packed_checkpoint(tmp_path / "src", "bit", tokenizer=tokenizer)
    export_checkpoint(src, tmp_path / "dense", "dense")
    b = batch(tokenizer.vocab_size)
    result = run_fresh(tmp_path, tmp_path / "dense", b)
    assert result["bebert_modules"] == [] and torch.equal(result["logits"], logits(load_packed(src), b))


# -- CLI ----------------------------------------------------------------------------------------------


def test_cli_export_json_overwrite_and_errors(tmp_path, tiny_bert, tokenizer):
    src = packed_checkpoint(tmp_path / "src", "bibert", tokenizer=tokenizer)
    out = tmp_path / "out"
    payload = one_json(run_cli("export", src, "-o", out, "--format", "remote-code", "--json", check=0).stdout)
    assert payload["format"] == "remote-code" and payload["storage"] == "packed" and payload["verified"] is True
    assert payload["output"] == str(out) and "modeling_bebert.py" in payload["files"]
    # An existing output is refused without --overwrite, and left alone.
    before = (out / "config.json").read_bytes()
    assert "--overwrite" in error_line(run_cli("export", src, "-o", out, "--format", "dense", check=2).stderr)
    assert (out / "config.json").read_bytes() == before
    run_cli("export", src, "-o", out, "--format", "dense", "--overwrite", "--quiet", check=0)
    assert json.loads((out / "config.json").read_text())["bebert_quantization"]["storage"] == "dense"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dirs left behind
    # Usage errors.
    assert "'onnx' is not one of 'packed', 'dense', 'remote-code'" in error_line(
        run_cli("export", src, "-o", tmp_path / "x", "--format", "onnx", check=2).stderr)
    assert "needs a packed binary checkpoint" in error_line(run_cli("export", tiny_bert, "-o", tmp_path / "y", check=2).stderr)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_library_refuses_bad_input(tmp_path):
    src = packed_checkpoint(tmp_path / "src")
    with pytest.raises(UsageError, match="is the source"):
        export_checkpoint(src, src, "packed", overwrite=True)
    with pytest.raises(UsageError, match="--format"):
        export_checkpoint(src, tmp_path / "o", "onnx")


def test_every_export_has_its_own_card(tmp_path):
    from huggingface_hub import ModelCard

    from bebert_cli.report import write_model_card

    src = packed_checkpoint(tmp_path / "src")
    write_model_card(src)
    cards = {}
    for fmt in ("packed", "remote-code", "dense"):
        export_checkpoint(src, tmp_path / fmt, fmt)
        cards[fmt] = ModelCard.load(tmp_path / fmt / "README.md")
    packed, remote, dense = cards["packed"], cards["remote-code"], cards["dense"]
    assert packed.data.library_name == "bebert" and "# packed" in packed.text  # named after the export
    assert remote.content != packed.content and remote.content != (src / "README.md").read_text()
    for card in (remote, dense):
        # Plain transformers loads it (with the bundled code): not a bebert library model.
        assert card.data.library_name == "transformers" and "custom_code" in card.data.tags
        assert "trust_remote_code=True" in card.text and "bebert_cli.load_model" not in card.text
    assert "NOT this binary model" in dense.text and "NOT this binary model" not in remote.text
    # The load call the remote-code card shows works on the export.
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "remote-code"), trust_remote_code=True)
    assert torch.equal(logits(model, batch()), logits(load_packed(src), batch()))


@pytest.mark.parametrize("k", [1, 7, 8, 9, 65, 383])
def test_the_templates_own_packer_agrees_with_bebert_s(k):
    """The remote-code template keeps a copy of the bit packer (an export must run without bebert):
    it must read and write exactly bebert's layout (`quant.packing`, i.e. `kernels._reference`)."""
    import torch

    from bebert_cli.export.remote_template import modeling_bebert as template
    from bebert_cli.quant.packing import pack_signs, unpack_signs

    x = torch.randn(4, k)
    x[0, 0] = 0.0  # sign(0) = +1
    packed = pack_signs(x)
    assert torch.equal(template.pack_bits(x >= 0), packed)
    assert torch.equal(template.unpack_signs(packed, k), unpack_signs(packed, k))
