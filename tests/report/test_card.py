"""The model card: valid Hugging Face metadata (model-index with the saved metric), sizes, how to load."""

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from bebert_cli.report import count_checkpoint, write_model_card
from bebert_cli.report.card import render_model_card
from tests.conftest import write_eval_results as _eval

H = 32


def _packed(fp_dir, out, accuracy=0.81):
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.packed import round_full_precision_, save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    model = AutoModelForSequenceClassification.from_pretrained(fp_dir)
    rec = resolve_recipe("bibert")
    plan = quantize_(model, rec)
    model.eval()
    round_full_precision_(model, rec.fp_dtype)
    out.mkdir(parents=True)
    save_packed(model, out, rec, plan)
    _eval(out, accuracy)
    (out / "bebert_run.json").write_text(json.dumps({"command": "binarize", "teacher": str(fp_dir), "task": "sst2",
                                                     "max_seq_length": 16, "recipe": rec.to_dict()}))
    return out




@pytest.fixture(scope="module")
def dirs(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    teacher = root / "teacher"
    shutil.copytree(tiny_bert, teacher)
    _eval(teacher, 0.85)
    (teacher / "bebert_run.json").write_text(json.dumps({"command": "finetune", "base_model": "nreimers/MiniLM-L6-H384-uncased",
                                                         "task": "sst2", "max_seq_length": 16}))
    packed = _packed(teacher, root / "binary")
    ens = root / "ens"
    ens.mkdir()
    for i in range(2):
        shutil.copytree(packed, ens / f"member-{i}")
    (ens / "ensemble.json").write_text(json.dumps({
        "format": "bebert-ensemble", "format_version": 1, "task": "sst2", "num_labels": 2, "strategy": "adaboost",
        "combination": "weighted_logits", "teacher": str(teacher),
        "members": [{"path": "member-0", "weight": 0.6, "recipe": "bibert"}, {"path": "member-1", "weight": 0.4, "recipe": "bibert"}]}))
    _eval(ens, 0.83)
    return {"teacher": teacher, "binary": packed, "ens": ens}


def _model_index(card_path):
    card = ModelCard.load(card_path)
    data = card.data.to_dict()
    return card, data, data["model-index"][0]["results"][0]


def test_packed_card_parses_and_holds_the_metric(dirs):
    before = count_checkpoint(dirs["binary"]).disk_bytes
    path = write_model_card(dirs["binary"])
    assert path == dirs["binary"] / "README.md"
    card, data, result = _model_index(path)
    assert data["library_name"] == "bebert" and "1-bit" in data["tags"] and "bibert" in data["tags"]
    assert result["dataset"]["type"] == "nyu-mll/glue" and result["dataset"]["config"] == "sst2"
    assert result["metrics"][0]["type"] == "accuracy" and result["metrics"][0]["value"] == pytest.approx(0.81)
    # A local teacher path is not a Hub id: the teacher's own Hub base model is carried instead.
    assert data["base_model"] == "nreimers/MiniLM-L6-H384-uncased" and data["base_model_relation"] == "quantized"
    assert data["pipeline_tag"] == "text-classification"
    text = card.text
    assert "## How to load" in text and 'bebert_cli.load_model("binary")' in text and "bebert eval binary --task sst2" in text
    c = count_checkpoint(dirs["binary"])
    assert c.disk_bytes == before  # the card does not count itself
    assert f"({c.weights_bytes:,} bytes)" in text and "1-bit" in text and '"name": "bibert"' in text
    assert "classifier head" in text  # why the head stays full precision
    assert "smaller weights" in text  # the teacher from bebert_run.json exists: ratios against it
    assert not [p for p in dirs["binary"].iterdir() if p.name.startswith(".")]  # atomic: no temp file left
    assert write_model_card(dirs["binary"]).read_text() == path.read_text()  # deterministic


def test_fp_card_names_its_hub_base_model(dirs):
    card, data, result = _model_index(write_model_card(dirs["teacher"]))
    assert data["base_model"] == "nreimers/MiniLM-L6-H384-uncased" and data["base_model_relation"] == "finetune"
    assert result["metrics"][0]["value"] == pytest.approx(0.85)
    # A plain HF checkpoint: transformers loads it, bebert is not needed, and there is nothing to pack.
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert 'pipeline("text-classification"' in card.text
    assert "runtime" not in card.text and "load_model" not in card.text


def test_license_and_base_model_follow_the_teacher(dirs, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(dirs["teacher"], teacher)
    (teacher / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n"
                                       "---\n# the teacher\n")
    student = tmp_path / "student"
    shutil.copytree(dirs["binary"], student)
    run = json.loads((student / "bebert_run.json").read_text())
    (student / "bebert_run.json").write_text(json.dumps({**run, "teacher": str(teacher)}))
    _, data, _ = _model_index(write_model_card(student))
    assert data["license"] == "apache-2.0" and data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    # Recorded at training time (bebert_run.json "lineage"): the card no longer needs the teacher.
    shutil.rmtree(teacher)
    (student / "bebert_run.json").write_text(json.dumps({**run, "teacher": str(teacher),
                                                         "lineage": {"license": "mit", "base_model": "org/base"}}))
    _, data, _ = _model_index(write_model_card(student))
    assert data["license"] == "mit" and data["base_model"] == "org/base"


def test_packed_card_shows_the_transformers_way_that_works(dirs):
    text = write_model_card(dirs["binary"]).read_text()
    assert "import bebert_cli  # registers the packed format with transformers" in text
    assert "AutoModelForSequenceClassification.from_pretrained(repo)" in text and "trust_remote_code" not in text


def test_the_pipeline_call_the_fp_card_shows_works(dirs):
    from transformers import pipeline

    out = pipeline("text-classification", model=str(dirs["teacher"]))("a gripping, funny film")
    assert len(out) == 1 and 0.0 <= out[0]["score"] <= 1.0


def test_the_transformers_call_the_packed_card_shows_loads_it(dirs):
    import bebert_cli  # noqa: F401  (what the card tells the reader to import first)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(dirs["binary"]))
    assert model.config.num_labels == 2


def test_unmeasured_metrics_are_not_claimed(dirs, tmp_path):
    d = tmp_path / "nan"
    shutil.copytree(dirs["binary"], d)
    (d / "eval_results.json").write_text(json.dumps({
        "task": "sst2", "main_metric": "accuracy", "main_value": None,
        "splits": {"validation": {"metrics": {"accuracy": float("nan")}, "samples": 0}}}))
    assert "model-index" not in render_model_card(d, baseline=None)


def test_ensemble_card_counts_every_member(dirs):
    card, data, result = _model_index(write_model_card(dirs["ens"], name="bebert-sst2-ens"))
    assert data["model-index"][0]["name"] == "bebert-sst2-ens" and "ensemble" in data["tags"]
    assert result["metrics"][0]["value"] == pytest.approx(0.83)
    c = count_checkpoint(dirs["ens"])
    assert f"{c.params['1bit']:,}" in card.text and "ensemble of 2" in card.text


def test_card_without_metrics_still_parses(dirs, tmp_path):
    d = tmp_path / "noeval"
    shutil.copytree(dirs["binary"], d)
    (d / "eval_results.json").unlink()
    text = render_model_card(d, baseline=None)
    assert "model-index" not in text and "No saved evaluation" in text
    write_model_card(d)
    assert ModelCard.load(d / "README.md").data.to_dict()["library_name"] == "bebert"
