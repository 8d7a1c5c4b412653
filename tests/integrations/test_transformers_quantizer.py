"""transformers' from_pretrained reads bebert packed checkpoints once bebert registered its quantizer.

The reference is `bebert_cli.load_model`: same logits bit for bit, same tensors, for every recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import bebert_cli
from bebert_cli.errors import CheckpointError
from tests.conftest import tiny_batch

# name -> (preset, overrides). fp32 exercises the "scales stay float16" rule on save.
RECIPES = {
    "bibert": ("bibert", {}),
    "bit": ("bit", {}),
    "w1a4": ("w1a4", {}),
    "w1a8-fp32": ("w1a8", {"fp_dtype": "float32"}),
    "bibert-hash": ("bibert", {"embeddings": "hash", "hash_projection": True}),
}


_batch = tiny_batch


def _write_packed(path, preset, overrides, tokenizer, *, full_vocab: bool = False):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.hash_embedding import tokens_from_vocab
    from bebert_cli.quant.packed import round_full_precision_, save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    recipe = resolve_recipe(preset, **overrides)
    hashed = recipe.embeddings == "hash"
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("bert", vocab_size=tokenizer.vocab_size if hashed or full_vocab else 60, hidden_size=32,
                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2,
                               max_position_embeddings=64)
    model = AutoModelForSequenceClassification.from_config(cfg)
    plan = quantize_(model, recipe, vocab=tokens_from_vocab(tokenizer.get_vocab()) if hashed else None)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # move weights and quantizer parameters (and LSQ/BiT init flags) off their defaults
        model(**_batch()).logits.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    round_full_precision_(model, recipe.fp_dtype)
    path.mkdir(parents=True)
    save_packed(model, path, recipe, plan)
    if hashed:
        tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def packed_dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("packed")
    return {name: _write_packed(root / name, preset, ov, tokenizer) for name, (preset, ov) in RECIPES.items()}


@pytest.fixture(autouse=True)
def registered():
    bebert_cli.register_with_transformers()


def _logits(model):
    with torch.no_grad():
        return model(**_batch()).logits


def _from_pretrained(path, **kwargs):
    from transformers import AutoModelForSequenceClassification

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' note that a passed quantization_config is merged
        return AutoModelForSequenceClassification.from_pretrained(str(path), output_loading_info=True, **kwargs)


def _assert_same_model(got, ref):
    assert not got.training
    assert torch.equal(_logits(got), _logits(ref))
    a, b = got.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # same dtypes (uint8 signs, fp16 scales, fp32 rest) and values: nothing cast or re-initialised
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert got.bebert_recipe == ref.bebert_recipe
    assert got.bebert_plan == ref.bebert_plan


@pytest.mark.parametrize("name", list(RECIPES))
def test_from_pretrained_equals_load_model(packed_dirs, name):
    from bebert_cli.integrations.transformers_quantizer import BebertHfQuantizer

    model, info = _from_pretrained(packed_dirs[name])
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    assert isinstance(model.hf_quantizer, BebertHfQuantizer)
    _assert_same_model(model, bebert_cli.load_model(packed_dirs[name]))
    if name == "bibert-hash":  # the hashed table is recomputed, not left as transformers' empty buffer
        from bebert_cli.quant.hash_embedding import HashEmbedding

        emb = model.bert.embeddings.word_embeddings
        assert isinstance(emb, HashEmbedding) and torch.isfinite(emb.hash_table).all()


@pytest.mark.parametrize("name", ["bibert", "w1a4"])
def test_packed_runtime_through_a_config_object(packed_dirs, name):
    from bebert_cli.integrations.transformers_quantizer import BebertQuantizationConfig
    from bebert_cli.quant.layers import PackedLinear

    model, _ = _from_pretrained(packed_dirs[name], quantization_config=BebertQuantizationConfig(runtime="packed"))
    assert {m.runtime for m in model.modules() if isinstance(m, PackedLinear)} == {"packed"}
    ref = bebert_cli.load_model(packed_dirs[name], runtime="packed")
    assert torch.equal(_logits(model), _logits(ref))
    # the loading option is not part of the format
    assert "runtime" not in model.config.to_dict()["quantization_config"]
    with pytest.raises(ValueError, match="runtime"):
        BebertQuantizationConfig(runtime="gpu")


@pytest.mark.parametrize("name", ["bibert-hash", "w1a8-fp32"])
def test_save_pretrained_round_trip(packed_dirs, tokenizer, tmp_path, name):
    from safetensors.torch import load_file

    src = packed_dirs[name]
    model, _ = _from_pretrained(src)
    out = tmp_path / "resaved"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # as with any HF model; hashed embeddings are computed from it
    # the same packed tensors (names, dtypes, values) and the same quantization_config block
    before, after = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    for k in before:
        assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k
    qc = lambda d: json.loads((d / "config.json").read_text())["quantization_config"]  # noqa: E731
    assert qc(out) == qc(src)
    # and both loaders read it back to the same model
    ref = bebert_cli.load_model(src)
    _assert_same_model(bebert_cli.load_model(out), ref)
    _assert_same_model(_from_pretrained(out)[0], ref)


def test_bad_checkpoints_are_refused_by_from_pretrained(packed_dirs, tmp_path, tiny_bert):
    from transformers import AutoModel

    from bebert_cli.integrations.transformers_quantizer import BebertQuantizationConfig

    cfg = json.loads((packed_dirs["bibert"] / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((packed_dirs["bibert"] / "model.safetensors").read_bytes())
    cfg["quantization_config"]["format_version"] = 99
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="upgrade bebert"):
        _from_pretrained(bad)
    cfg["quantization_config"]["format_version"] = 1
    cfg["intermediate_size"] = 96  # config.json no longer describes the file
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.\w+ is F16\[64\], expected F16\[96\]"):
        _from_pretrained(bad)
    with pytest.raises(CheckpointError, match="AutoModelForSequenceClassification"):
        AutoModel.from_pretrained(str(packed_dirs["bibert"]))
    with pytest.raises(ValueError, match="pre-quantized"):  # bebert binarizes with `bebert binarize`, not on load
        _from_pretrained(tiny_bert, quantization_config=BebertQuantizationConfig())


def test_registration_is_idempotent():
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    from bebert_cli.integrations.transformers_quantizer import BebertHfQuantizer, BebertQuantizationConfig

    bebert_cli.register_with_transformers()
    bebert_cli.register_with_transformers()
    assert AUTO_QUANTIZER_MAPPING["bebert"] is BebertHfQuantizer
    assert AUTO_QUANTIZATION_CONFIG_MAPPING["bebert"] is BebertQuantizationConfig


def _python(code: str, **env) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


def test_without_bebert_transformers_does_not_read_the_packed_format(packed_dirs):
    # transformers 5 does not refuse an unknown quant_method: it warns, skips quantization and loads
    # the plain architecture, leaving every binarized weight newly initialised (missing). Only with
    # bebert imported is the directory read as what it is. Importing bebert after transformers
    # registers at once.
    r = _python(f"""
        import json, sys
        from transformers import AutoModelForSequenceClassification as A
        _, info = A.from_pretrained({str(packed_dirs['bibert'])!r}, output_loading_info=True)
        plain = dict(bebert_loaded="bebert_cli" in sys.modules, missing=sorted(info["missing_keys"]),
                     unexpected=len(info["unexpected_keys"]))
        import bebert_cli
        m, info = A.from_pretrained({str(packed_dirs['bibert'])!r}, output_loading_info=True)
        print(json.dumps(dict(plain=plain, registered=hasattr(m, "bebert_recipe"), missing=len(info["missing_keys"]))))
    """, TRANSFORMERS_VERBOSITY="warning")  # bebert's CLI, run in-process by other tests, sets "error"
    assert r["plain"]["bebert_loaded"] is False
    assert "bert.encoder.layer.0.attention.self.query.weight" in r["plain"]["missing"]
    assert r["plain"]["unexpected"] > 0
    assert "Unknown quantization type, got bebert" in r["stderr"]
    assert r["registered"] is True and r["missing"] == 0


def test_import_is_cheap_and_registers_when_transformers_loads(packed_dirs):
    r = _python(f"""
        import json, sys
        import bebert_cli
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        hooked = sum(type(f).__name__ == "_TransformersHook" for f in sys.meta_path)
        import transformers  # still lazy: the hook waits for the quantizer registry
        lazy = "transformers.quantizers.auto" not in sys.modules
        from transformers import AutoModelForSequenceClassification as A
        m, info = A.from_pretrained({str(packed_dirs['w1a4'])!r}, output_loading_info=True)
        left = sum(type(f).__name__ == "_TransformersHook" for f in sys.meta_path)
        print(json.dumps(dict(heavy=heavy, hooked=hooked, lazy=lazy, left=left, recipe=m.bebert_recipe.name,
                              missing=len(info["missing_keys"]), unexpected=len(info["unexpected_keys"]))))
    """)
    assert r["heavy"] == [] and r["hooked"] == 1 and r["lazy"] is True
    assert r["recipe"] == "w1a4" and r["missing"] == 0 and r["unexpected"] == 0
    assert r["left"] == 0  # one shot: the hook removed itself
    assert "could not register" not in r["stderr"]

    # importing the integration module first: its own import of transformers' registry fires the hook
    direct = _python("""
        import json
        from bebert_cli.integrations import transformers_quantizer as tq
        print(json.dumps(dict(registered=tq.is_registered())))
    """)
    assert direct["registered"] is True and "could not register" not in direct["stderr"]

    opted_out = _python("""
        import json, sys
        import bebert_cli
        print(json.dumps(dict(hooked=sum(type(f).__name__ == "_TransformersHook" for f in sys.meta_path))))
    """, BEBERT_NO_TRANSFORMERS_HOOK="1")
    assert opted_out["hooked"] == 0


def test_a_packed_checkpoint_is_refused_as_teacher_or_starting_point(packed_dirs):
    # from_pretrained can read it now, but a binary model is neither a teacher nor a fine-tuning start.
    from bebert_cli.errors import ModelError
    from bebert_cli.models import load_classifier
    from bebert_cli.tasks import get_task

    for new_head in (False, True):
        with pytest.raises(ModelError, match="packed .binary. checkpoint"):
            load_classifier(str(packed_dirs["bibert"]), get_task("sst2"), new_head=new_head)
