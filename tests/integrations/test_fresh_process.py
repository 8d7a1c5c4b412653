"""Plain transformers loading in a fresh interpreter, as a user does it: `import bebert_cli`, then
`from_pretrained` or `pipeline("text-classification")`, and a real forward pass on text.

A fresh process matters: bebert's modules are first imported *inside* transformers' loading there
(under `torch.device("meta")`), which is where a module-level tensor used to become a meta tensor
("Cannot copy out of meta tensor; no data!"). In-process tests import everything up front and miss it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.integrations.test_transformers_quantizer import RECIPES, _write_packed

TEXTS = ["a fine film", "the plot falls apart in the second hour and never recovers"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer, tiny_bert):
    root = tmp_path_factory.mktemp("fresh")
    dirs = {"fp": tiny_bert}
    for name, (preset, overrides) in RECIPES.items():
        path = _write_packed(root / name, preset, overrides, tokenizer, full_vocab=True)
        tokenizer.save_pretrained(path)
        dirs[name] = path
    return dirs


def _fresh(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference_logits(path, texts, runtime="simulated"):
    import bebert_cli
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    with torch.no_grad():
        return bebert_cli.load_model(path, runtime=runtime)(**tok(texts, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("name", ["fp", *RECIPES])
def test_readme_snippet_forward_pass_in_a_fresh_process(checkpoints, name):
    r = _fresh(f"""
        import json
        import bebert_cli
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        path = {str(checkpoints[name])!r}
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        with torch.no_grad():
            logits = model(**tok({TEXTS!r}, padding=True, return_tensors="pt")).logits
        print(json.dumps(dict(logits=logits.tolist(), meta=any(t.is_meta for t in model.state_dict().values()))))
    """)
    assert r["meta"] is False
    got = torch.tensor(r["logits"])
    assert got.shape == (2, 2) and torch.isfinite(got).all()
    assert torch.allclose(got, _reference_logits(checkpoints[name], TEXTS), atol=1e-5)  # the model, not a fresh init


@pytest.mark.parametrize("name", ["fp", *RECIPES])
def test_pipeline_text_classification_in_a_fresh_process(checkpoints, name):
    r = _fresh(f"""
        import json
        import bebert_cli
        from transformers import pipeline
        clf = pipeline("text-classification", model={str(checkpoints[name])!r}, device="cpu")
        print(json.dumps(clf({TEXTS!r}, top_k=None)))
    """)
    assert len(r) == 2
    ref = torch.softmax(_reference_logits(checkpoints[name], TEXTS), dim=-1)
    for row, probs in zip(r, ref):
        by_label = {d["label"]: d["score"] for d in row}
        assert set(by_label) == {"LABEL_0", "LABEL_1"}
        assert by_label["LABEL_0"] == pytest.approx(float(probs[0]), abs=1e-5)
        assert by_label["LABEL_1"] == pytest.approx(float(probs[1]), abs=1e-5)


def test_packed_runtime_forward_pass_in_a_fresh_process(checkpoints):
    r = _fresh(f"""
        import json
        import bebert_cli, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from bebert_cli.integrations.transformers_quantizer import BebertQuantizationConfig
        path = {str(checkpoints['bibert'])!r}
        model = AutoModelForSequenceClassification.from_pretrained(
            path, quantization_config=BebertQuantizationConfig(runtime="packed"))
        tok = AutoTokenizer.from_pretrained(path)
        with torch.no_grad():
            print(json.dumps(model(**tok({TEXTS!r}, padding=True, return_tensors="pt")).logits.tolist()))
    """)
    assert torch.equal(torch.tensor(r), _reference_logits(checkpoints["bibert"], TEXTS, runtime="packed"))
