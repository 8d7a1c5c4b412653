"""`bebert report` end to end: JSON schema, tables, markdown, plot, model cards, errors."""

import json
import shutil

import pytest

from tests.conftest import error_line, one_json, run_cli
from tests.conftest import write_eval_results as _eval

L = 16




@pytest.fixture(scope="module")
def models(tiny_bert, tmp_path_factory):
    """A full-precision teacher, a packed 1-1-1 student of it, and an ensemble of two such students."""
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.packed import round_full_precision_, save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    root = tmp_path_factory.mktemp("report-cli")
    teacher = root / "teacher"
    shutil.copytree(tiny_bert, teacher)
    _eval(teacher, 0.85)
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    rec = resolve_recipe("bibert")
    plan = quantize_(model, rec)
    model.eval()
    round_full_precision_(model, rec.fp_dtype)
    student = root / "student"
    student.mkdir()
    save_packed(model, student, rec, plan)
    _eval(student, 0.81)
    (student / "bebert_run.json").write_text(json.dumps({"command": "binarize", "teacher": str(teacher), "task": "sst2",
                                                         "max_seq_length": L, "recipe": rec.to_dict()}))
    ens = root / "ens"
    ens.mkdir()
    for i in range(2):
        shutil.copytree(student, ens / f"member-{i}")
    (ens / "ensemble.json").write_text(json.dumps({
        "format": "bebert-ensemble", "format_version": 1, "task": "sst2", "num_labels": 2, "strategy": "bagging",
        "combination": "weighted_logits",
        "members": [{"path": "member-0", "weight": 0.5, "recipe": "bibert"}, {"path": "member-1", "weight": 0.5, "recipe": "bibert"}]}))
    _eval(ens, 0.83)
    return {"teacher": teacher, "student": student, "ens": ens}


def test_json_schema(models):
    proc = run_cli("report", models["student"], models["ens"], "--baseline", models["teacher"], "--json", "--by-module",
                   check=0)
    r = one_json(proc.stdout)
    assert r["schema"] == "bebert.report" and r["schema_version"] == 2 and r["seq_len"] == L
    assert set(r["conventions"]) >= {"flops", "binary_ops", "flop_equivalent", "params", "bytes", "ratios"}
    assert r["plot"] is None and r["cards"] == [] and r["baseline"]["kind"] == "fp"
    precisions = {"fp32", "fp16", "bf16", "fp64", "int8", "1bit", "on_the_fly", "scales"}
    for e in r["models"] + [r["baseline"]]:
        assert set(e) >= {"path", "name", "kind", "bits", "recipe", "members", "params", "bytes", "flops", "metrics",
                          "notes", "modules"}
        assert set(e["params"]) == precisions | {"total"}
        assert set(e["bytes"]) == {"weights", "disk", "by_precision"} and set(e["bytes"]["by_precision"]) == precisions | {"buffers"}
        assert set(e["flops"]) == {"seq_len", "flops", "binary_ops", "flop_equivalent"}
        assert e["metrics"]["task"] == "sst2" and e["metrics"]["main_metric"] == "accuracy"
        assert all({"name", "kind", "precision", "params", "bytes", "reason"} <= set(m) for m in e["modules"])
    student, ens = r["models"]
    assert student["kind"] == "packed" and student["bits"] == "1-1-1" and student["members"] is None
    assert ens["kind"] == "ensemble" and ens["members"] == 2 and ens["params"]["1bit"] == 2 * student["params"]["1bit"]
    assert student["flops"] == {"seq_len": L, "flops": 128, "binary_ops": 591_872, "flop_equivalent": 9376.0}
    assert r["baseline"]["flops"]["flops"] == 592_000
    vs = student["vs_baseline"]
    assert vs["flop_ratio"] == pytest.approx(592_000 / 9376) and vs["size_ratio"] > 5
    assert vs["metric_delta_points"] == pytest.approx(-4.0) and ens["vs_baseline"]["metric_delta_points"] == pytest.approx(-2.0)
    assert proc.stderr.strip() == ""


def test_human_tables_and_markdown(models):
    proc = run_cli("report", models["student"], "--baseline", models["teacher"], "--by-module", env={"COLUMNS": "220"}, check=0)
    for text in ("size and compute per sequence (L=16)", "1-bit", "scales (fp16)", "teacher (baseline)", "-4.00 pt",
                 "binary linear", "classifier head", "FLOP-eq = FLOPs + binary ops / 64"):
        assert text in proc.stdout, text
    md = run_cli("report", models["student"], models["ens"], "--baseline", models["teacher"], "--markdown", "--max-seq-length", "128",
                 check=0).stdout
    assert md.startswith("### bebert report (L = 128)")
    assert "| model | bits | weights | disk | FLOPs | binary ops | FLOP-eq |" in md and "| ens | 1-1-1 x2 |" in md
    assert "┃" not in md  # no rich table in markdown mode


def test_by_module_fits_80_columns_without_breaking_a_name(models):
    """A pipe or CI log (rich's 80 columns) or COLUMNS=80: no line wider, every module name whole."""
    from bebert_cli.report.module_table import group_of

    names = [m["name"] for m in one_json(run_cli("report", models["student"], "--by-module", "--json", check=0).stdout)
             ["models"][0]["modules"]]
    for env in ({"COLUMNS": "80"}, {}):  # {}: stdout is a pipe, not a terminal
        proc = run_cli("report", models["student"], "--baseline", models["teacher"], "--by-module", env=env, check=0)
        lines = proc.stdout.splitlines()
        assert max(map(len, lines)) <= 80, max(lines, key=len)
        for name in names:
            block, short = group_of(name)
            assert any(short in line for line in lines) and (not block or any(block in line for line in lines)), name
        assert "1. LayerNorm: normalisation statistics need full precision" in proc.stdout  # kind and reason, as notes
    wide = run_cli("report", models["student"], "--by-module", env={"COLUMNS": "220"}, check=0).stdout
    assert all(name in wide for name in names) and "normalisation statistics" in wide  # full rows when they fit


def test_seq_len_is_the_deprecated_spelling_of_max_seq_length(models):
    new = one_json(run_cli("report", models["student"], "--max-seq-length", "32", "--json", check=0).stdout)
    old = run_cli("report", models["student"], "--seq-len", "32", "--json", check=0)
    assert one_json(old.stdout)["seq_len"] == new["seq_len"] == 32
    assert "--seq-len is deprecated; use --max-seq-length" in old.stderr
    assert "--seq-len" not in run_cli("report", "-h", check=0).stdout  # hidden from help
    assert "contradicts" in error_line(run_cli("report", models["student"], "--seq-len", "32", "--max-seq-length", "64",
                                               check=2).stderr)
    quiet = run_cli("report", models["student"], "--seq-len", "32", "--json", "-q", check=0)
    assert quiet.stderr == "" and one_json(quiet.stdout)["seq_len"] == 32  # -q silences warnings too


def test_plot_is_a_png_with_one_point_per_model(models, tmp_path):
    from bebert_cli.report.plot import png_text_chunks

    png = tmp_path / "tradeoff.png"
    r = one_json(run_cli("report", models["student"], models["ens"], "--baseline", models["teacher"], "--plot", png, "--json",
                         check=0).stdout)
    assert r["plot"]["points"] == 3 and r["plot"]["path"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_text_chunks(png)["bebert-points"] == "3"
    assert "ending in .png" in error_line(run_cli("report", models["student"], "--plot", tmp_path / "x.jpg", check=2).stderr)


def test_write_card(models, tmp_path):
    from huggingface_hub import ModelCard

    d = tmp_path / "student"
    shutil.copytree(models["student"], d)
    r = one_json(run_cli("report", d, "--write-card", "--json", check=0).stdout)
    assert r["cards"] == [str(d / "README.md")]
    metrics = ModelCard.load(d / "README.md").data.to_dict()["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == pytest.approx(0.81)


def test_task_filter_and_errors(models, tmp_path):
    r = one_json(run_cli("report", models["student"], "--task", "mrpc", "--json", check=0).stdout)
    assert r["task"] == "mrpc" and r["models"][0]["metrics"] is None
    assert "saved evaluation is for sst2, not mrpc" in r["models"][0]["notes"]
    assert "not a model directory" in error_line(run_cli("report", tmp_path, check=1).stderr)
    assert "does not exist" in error_line(run_cli("report", models["student"], "--baseline", tmp_path / "nope", check=1).stderr)
    assert "choose one" in error_line(run_cli("report", models["student"], "--json", "--markdown", check=2).stderr)
    assert "unknown task" in error_line(run_cli("report", models["student"], "--task", "sst3", check=2).stderr)
    error_line(run_cli("report", check=2).stderr)
