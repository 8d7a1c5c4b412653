"""The ensemble directory: manifest validation (before any weights are read) and the combining model."""

import json
import os
import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

import bebert_cli
from bebert_cli.ensemble.model import EnsembleModel, load_ensemble, write_manifest
from bebert_cli.errors import CheckpointError, ModelError
from bebert_cli.quant.convert import quantize_
from bebert_cli.quant.packed import load_packed, round_full_precision_, save_packed
from bebert_cli.quant.recipes import resolve_recipe
from bebert_cli.tasks import get_task


def packed_member(path, *, labels=2, seed=0, task="sst2", recipe="bibert"):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("bert", vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, num_labels=labels, max_position_embeddings=64)
    model = AutoModelForSequenceClassification.from_config(cfg)
    rec = resolve_recipe(recipe)
    plan = quantize_(model, rec)
    model.eval()
    round_full_precision_(model, rec.fp_dtype)
    path.mkdir(parents=True)
    save_packed(model, path, rec, plan)
    (path / "eval_results.json").write_text(json.dumps({"task": task}))
    return path


def make_ensemble(root, *, task="sst2", labels=2, weights=(2.0, 0.5), recipes=("bibert", "w1a4")):
    members = []
    for k, (w, r) in enumerate(zip(weights, recipes)):
        packed_member(root / f"member-{k}", labels=labels, seed=k + 1, task=task, recipe=r)
        members.append({"path": f"member-{k}", "weight": w, "recipe": r, "error": 0.25})
    write_manifest(root, task=task, num_labels=labels, strategy="adaboost", members=members, teacher=None)
    return root


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (4, 10), generator=g)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    return make_ensemble(tmp_path_factory.mktemp("ens") / "ENS")


@pytest.fixture
def ens_copy(ens, tmp_path):
    dst = tmp_path / "ENS"
    shutil.copytree(ens, dst)
    return dst


def test_weighted_logits_combination(ens):
    model = load_ensemble(ens)
    assert isinstance(model, EnsembleModel) and model.weights == (2.0, 0.5) and len(model.members) == 2
    assert model.config.num_labels == 2 and model.combination == "weighted_logits"
    with torch.no_grad():
        got = model(**batch()).logits
        l0 = load_packed(ens / "member-0")(**batch()).logits
        l1 = load_packed(ens / "member-1")(**batch()).logits
    torch.testing.assert_close(got, (2.0 * l0 + 0.5 * l1) / 2.5)
    assert not torch.equal(l0, l1)


def test_load_model_dispatches_and_checks_the_task(ens):
    model = bebert_cli.load_model(ens, task=get_task("sst2"))
    assert isinstance(model, EnsembleModel) and not model.training
    with pytest.raises(ModelError, match="needs 3"):
        bebert_cli.load_model(ens, task=get_task("mnli"))


def test_regression_weighted_mean(tmp_path):
    root = make_ensemble(tmp_path / "REG", task="stsb", labels=1, weights=(1.0, 3.0), recipes=("bibert", "bibert"))
    manifest = json.loads((root / "ensemble.json").read_text())
    assert manifest["combination"] == "weighted_mean" and manifest["num_labels"] == 1
    model = bebert_cli.load_model(root, task=get_task("stsb"))
    with torch.no_grad():
        got = model(**batch()).logits
        p0 = load_packed(root / "member-0")(**batch()).logits
        p1 = load_packed(root / "member-1")(**batch()).logits
    assert got.shape == (4, 1)
    torch.testing.assert_close(got, (p0 + 3.0 * p1) / 4.0)


def _edit(root, fn):
    f = root / "ensemble.json"
    m = json.loads(f.read_text())
    fn(m)
    f.write_text(json.dumps(m))


BAD = {
    "format": (lambda m: m.update(format="other"), "format must be"),
    "newer version": (lambda m: m.update(format_version=2), "upgrade bebert"),
    "version type": (lambda m: m.update(format_version="1"), "format_version must be"),
    "version bool": (lambda m: m.update(format_version=True), "format_version must be"),
    "task": (lambda m: m.update(task=5), "task must be a GLUE task"),
    "empty task": (lambda m: m.update(task=" "), "task must be a GLUE task"),
    "num_labels": (lambda m: m.update(num_labels=3), "does not match task"),
    "strategy": (lambda m: m.update(strategy="boost"), "strategy must be"),
    "combination": (lambda m: m.update(combination="weighted_mean"), "combination must be"),
    "teacher": (lambda m: m.update(teacher=5), "teacher must be"),
    "no members": (lambda m: m.update(members=[]), "non-empty list"),
    "member type": (lambda m: m["members"].__setitem__(0, "member-0"), "must be an object"),
    "absolute": (lambda m: m["members"][1].update(path="/etc"), "must be relative"),
    "dotdot": (lambda m: m["members"][1].update(path="../ENS/member-1"), "must not contain '..'"),
    "inner dotdot": (lambda m: m["members"][1].update(path="member-0/../member-1"), "must not contain '..'"),
    "empty path": (lambda m: m["members"][1].update(path=""), "non-empty string"),
    "root itself": (lambda m: m["members"][1].update(path="."), "outside the ensemble directory"),
    "twice": (lambda m: m["members"][1].update(path="member-0"), "twice"),
    "missing": (lambda m: m["members"][1].update(path="member-9"), "missing"),
    "nan weight": (lambda m: m["members"][1].update(weight=float("nan")), "finite numbers"),
    "inf weight": (lambda m: m["members"][1].update(weight=float("inf")), "finite numbers"),
    "string weight": (lambda m: m["members"][1].update(weight="1"), "finite numbers"),
    "bool weight": (lambda m: m["members"][1].update(weight=True), "finite numbers"),
    "negative weight": (lambda m: m["members"][1].update(weight=-1.0), "negative"),
    "zero weights": (lambda m: [e.update(weight=0) for e in m["members"]], "sum to zero"),
    "recipe": (lambda m: m["members"][1].update(recipe=1), "recipe must be a string"),
    "error": (lambda m: m["members"][1].update(error="low"), "error must be"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_manifests_are_refused_before_any_member_is_loaded(ens_copy, monkeypatch, case):
    edit, message = BAD[case]
    _edit(ens_copy, edit)

    def no_loading(*a, **k):
        raise AssertionError("a member was loaded before the manifest was validated")

    monkeypatch.setattr("bebert_cli.quant.packed.load_packed", no_loading)
    with pytest.raises(CheckpointError, match=message):
        bebert_cli.load_model(ens_copy)


def test_not_json(ens_copy):
    (ens_copy / "ensemble.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_ensemble(ens_copy)


def test_symlinked_member_escaping_the_directory_is_refused(ens_copy, tmp_path):
    outside = tmp_path / "outside-member"
    shutil.move(str(ens_copy / "member-1"), outside)
    os.symlink(outside, ens_copy / "member-1")
    with pytest.raises(CheckpointError, match="outside the ensemble directory"):
        load_ensemble(ens_copy)


def test_symlinked_member_file_escaping_the_directory_is_refused(ens_copy, tmp_path):
    weights = ens_copy / "member-1" / "model.safetensors"
    shutil.move(str(weights), tmp_path / "w.safetensors")
    os.symlink(tmp_path / "w.safetensors", weights)
    with pytest.raises(CheckpointError, match="link to outside"):
        load_ensemble(ens_copy)


def test_member_with_another_task_is_refused(ens_copy):
    (ens_copy / "member-1" / "eval_results.json").write_text(json.dumps({"task": "mrpc"}))
    with pytest.raises(CheckpointError, match="trained for task mrpc"):
        load_ensemble(ens_copy)


def test_member_with_another_label_count_is_refused(ens_copy):
    shutil.rmtree(ens_copy / "member-1")
    packed_member(ens_copy / "member-1", labels=3, task="sst2")
    with pytest.raises(CheckpointError, match="has 3 label"):
        load_ensemble(ens_copy)


def test_member_that_is_not_packed_is_refused(ens_copy):
    cfg = json.loads((ens_copy / "member-1" / "config.json").read_text())
    cfg.pop("quantization_config")
    (ens_copy / "member-1" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a packed bebert checkpoint"):
        load_ensemble(ens_copy)


def test_model_refuses_bad_weights_and_label_mismatch():
    a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    a.config = b.config = AutoConfig.for_model("bert", num_labels=2)
    with pytest.raises(ModelError):
        EnsembleModel([a, b], [1.0])
    with pytest.raises(ModelError, match="negative"):
        EnsembleModel([a, b], [1.0, -1.0])
    c = torch.nn.Linear(1, 1)
    c.config = AutoConfig.for_model("bert", num_labels=3)
    with pytest.raises(ModelError, match="disagree"):
        EnsembleModel([a, c], [1.0, 1.0])
