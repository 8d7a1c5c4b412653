"""Your own data through the CLI: CSV / JSONL / Parquet files and a save_to_disk dataset built from rows of
the shared GLUE files (string labels, shuffled columns, a 3-class set, a pair set, a regression set), through
finetune, binarize, ensemble, eval (also without --task) and report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.cli.test_ensemble import cli_in_process as _cli
from tests.conftest import error_line, make_tiny, one_json, run_cli

FAST = ["--max-train-samples", "48", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "32"]


def _ok(capsys, *args) -> dict:
    """The CLI in this process (no interpreter start-up per call): exit 0 and its one JSON object."""
    code, out, err = _cli(capsys, *args, "--json")
    assert code == 0, err
    return one_json(out)


def _tsv(path: Path, n: int) -> list[dict]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, ln.split("\t"))) for ln in lines[1 : n + 1]]


@pytest.fixture(scope="module")
def own(tmp_path_factory, glue_dir):
    root = tmp_path_factory.mktemp("own")
    # sentiment CSV: string labels, shuffled column order, unusual column names
    d = root / "reviews"
    d.mkdir()
    for split, src, n in (("train", "train.tsv", 80), ("dev", "dev.tsv", 40)):
        rows = _tsv(glue_dir / "SST-2" / src, n)
        with open(d / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sentiment", "id", "review"])
            for i, r in enumerate(rows):
                w.writerow(["pos" if r["label"] == "1" else "neg", i, r["sentence"]])
    # a pair set in JSONL (MRPC, integer labels)
    with open(root / "pairs.jsonl", "w") as f:
        for r in _tsv(glue_dir / "MRPC" / "dev.tsv", 30):
            f.write(json.dumps({"label": int(r["Quality"]), "sentence2": r["#2 String"], "sentence1": r["#1 String"]}) + "\n")
    # a regression set in Parquet (STS-B scores) and a 3-class save_to_disk dataset (the same scores binned)
    import datasets

    sts = {"train": _tsv(glue_dir / "STS-B" / "train.tsv", 80), "validation": _tsv(glue_dir / "STS-B" / "dev.tsv", 40)}
    datasets.Dataset.from_dict({"sentence1": [r["sentence1"] for r in sts["validation"]],
                                "sentence2": [r["sentence2"] for r in sts["validation"]],
                                "score": [float(r["score"]) for r in sts["validation"]]}).to_parquet(str(root / "sts.parquet"))

    def band(s):
        return "low" if float(s) < 2 else "mid" if float(s) < 3.5 else "high"

    feats = datasets.Features({"hypothesis": datasets.Value("string"), "premise": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["low", "mid", "high"])})
    datasets.DatasetDict({
        k: datasets.Dataset.from_dict({"hypothesis": [r["sentence2"] for r in v], "premise": [r["sentence1"] for r in v],
                                       "label": [["low", "mid", "high"].index(band(r["score"])) for r in v]}, features=feats)
        for k, v in sts.items()}).save_to_disk(str(root / "sts3"))
    return root


@pytest.fixture(scope="module")
def reviews_model(own, tmp_path_factory, tokenizer):
    """A fine-tuned classifier on the CSV: string labels, named columns."""
    base = make_tiny(tmp_path_factory.mktemp("base") / "bert", tokenizer=tokenizer)
    out = tmp_path_factory.mktemp("ft") / "reviews"
    payload = one_json(run_cli("finetune", base, "-o", out, "--train-file", own / "reviews" / "train.csv",
                               "--validation-file", own / "reviews" / "dev.csv", "--text-column", "review",
                               "--label-column", "sentiment", *FAST, "--json", check=0).stdout)
    return out, payload


def test_finetune_on_a_csv_saves_labels_and_the_spec(reviews_model, own):
    out, payload = reviews_model
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    data = json.loads((out / "bebert_run.json").read_text())["data"]
    assert data["source"] == "files" and data["text_fields"] == ["review"] and data["label_column"] == "sentiment"
    assert data["labels"] == ["neg", "pos"] and data["max_seq_length"] == 32 and data["name"] == "reviews"
    assert Path(data["validation_file"]) == (own / "reviews" / "dev.csv").resolve()
    assert payload["main_metric"] == "accuracy" and set(payload["splits"]["validation"]["metrics"]) == {"accuracy", "f1", "macro_f1"}
    assert "reviews" in (out / "README.md").read_text()


def test_eval_without_task_uses_the_recorded_data(reviews_model, own, tmp_path, capsys):
    out, payload = reviews_model
    proc = run_cli("eval", out, "--json", check=0)
    again = one_json(proc.stdout)
    assert again["splits"] == payload["splits"] and again["task"] == "reviews"
    assert "text column(s) ['review']" in " ".join(proc.stderr.split())
    # other data with the same columns, and a first metric chosen for --fail-under
    other = tmp_path / "other.csv"
    other.write_text("review,sentiment\nterrible,neg\nwonderful,pos\nso bad,neg\n")
    res = _ok(capsys, "eval", out, "--validation-file", other, "--metric", "macro_f1,accuracy")
    assert res["main_metric"] == "macro_f1" and res["splits"]["validation"]["samples"] == 3
    code, _, err = _cli(capsys, "eval", out, "--validation-file", other, "--metric", "macro_f1", "--fail-under", "1.0")
    assert code == 3 and "macro_f1" in error_line(err)


def test_binarize_and_report_without_task(reviews_model, tmp_path, capsys):
    out, _ = reviews_model
    binary = tmp_path / "bin"
    payload = _ok(capsys, "binarize", out, "-o", binary, *FAST)
    assert payload["task"] == "reviews" and payload["teacher_evaluation"]["main_metric"] == "accuracy"
    assert json.loads((binary / "bebert_run.json").read_text())["data"]["labels"] == ["neg", "pos"]
    assert _ok(capsys, "eval", binary, "--runtime", "packed")["splits"] == payload["splits"]
    report = _ok(capsys, "report", binary, "--baseline", out)
    assert report["models"][0]["metrics"]["task"] == "reviews" and report["models"][0]["metrics"]["main_metric"] == "accuracy"
    # a second member and `ensemble --from`, data options again read from the checkpoints
    other = tmp_path / "bin2"
    _ok(capsys, "binarize", out, "-o", other, *FAST, "--seed", "1", "--recipe", "w1a4")
    ens = _ok(capsys, "ensemble", "--from", binary, other, "-o", tmp_path / "ens")
    assert ens["task"] == "reviews" and len(ens["members"]) == 2
    assert json.loads((tmp_path / "ens" / "bebert_run.json").read_text())["data"]["labels"] == ["neg", "pos"]


def test_reversed_id2label_scores_by_name(reviews_model, own, tmp_path, capsys):
    out, _ = reviews_model
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for f in out.iterdir():
        if f.is_file() and f.name != "bebert_run.json":
            (flipped / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((out / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "pos", "1": "neg"}, {"pos": 0, "neg": 1}  # the head's meaning, renamed
    (flipped / "config.json").write_text(json.dumps(cfg))
    common = ["--validation-file", own / "reviews" / "dev.csv", "--text-column", "review", "--label-column", "sentiment"]
    right = _ok(capsys, "eval", out, *common)["splits"]["validation"]["metrics"]["accuracy"]
    renamed = _ok(capsys, "eval", flipped, *common)["splits"]["validation"]["metrics"]["accuracy"]
    assert renamed == pytest.approx(1 - right)  # same logits, names swapped: every row flips


def test_three_class_dataset_dir_finetune_and_ensemble(own, tmp_path, tokenizer, capsys):
    base = make_tiny(tmp_path / "base", tokenizer=tokenizer)
    ft = tmp_path / "ft3"
    payload = _ok(capsys, "finetune", base, "-o", ft, "--dataset", own / "sts3", *FAST)
    assert json.loads((ft / "config.json").read_text())["id2label"] == {"0": "low", "1": "mid", "2": "high"}
    assert set(payload["splits"]["validation"]["metrics"]) == {"accuracy", "macro_f1"}
    assert "premise" in json.loads((ft / "bebert_run.json").read_text())["data"]["text_fields"]
    ens = tmp_path / "ens3"
    res = _ok(capsys, "ensemble", ft, "-o", ens, "--members", "2", *FAST)
    assert len(res["members"]) == 2 and res["task"] == "sts3"
    manifest = json.loads((ens / "ensemble.json").read_text())
    assert manifest["num_labels"] == 3 and manifest["task"] == "sts3"
    assert _ok(capsys, "eval", ens)["splits"] == res["splits"]


def test_pair_jsonl_and_regression_parquet(own, tiny_bert, tiny_regression, capsys):
    pairs = _ok(capsys, "eval", tiny_bert, "--validation-file", own / "pairs.jsonl")
    assert pairs["data"]["text_fields"] == ["sentence1", "sentence2"] and pairs["splits"]["validation"]["samples"] == 30
    reg = _ok(capsys, "eval", tiny_regression, "--validation-file", own / "sts.parquet", "--label-column", "score")
    assert set(reg["splits"]["validation"]["metrics"]) == {"pearson", "spearman"} and reg["main_metric"] == "pearson"


def test_bad_input_is_one_error_line_and_nothing_written(own, tiny_bert, tmp_path, capsys):
    base = tmp_path / "bad"
    base.mkdir()
    (base / "empty.csv").write_text("")
    (base / "rows.xlsx").write_text("x")
    (base / "mixed.csv").write_text("text,label\na,pos\nb,1\n")
    (base / "nan.csv").write_text("text,label\na,pos\n,neg\n")
    (base / "dev_new.csv").write_text("review,sentiment\na,pos\nb,meh\n")
    cases = [
        (["--validation-file", own / "reviews" / "dev.csv", "--text-column", "text", "--label-column", "sentiment"], "no column 'text'; its columns are"),
        (["--validation-file", base / "empty.csv"], "is empty"),
        (["--validation-file", base / "rows.xlsx"], "unsupported file type"),
        (["--validation-file", base / "mixed.csv", "--label-order", "neg,pos"], "mixes numbers"),
        (["--validation-file", base / "nan.csv", "--label-order", "neg,pos"], "empty text"),
    ]
    for extra, match in cases:
        code, _, err = _cli(capsys, "eval", tiny_bert, *extra)
        assert code == 1 and match in error_line(err)
    out = tmp_path / "never"
    code, _, err = _cli(capsys, "finetune", tiny_bert, "-o", out, "--train-file", own / "reviews" / "train.csv",
                        "--validation-file", base / "dev_new.csv", "--text-column", "review", "--label-column",
                        "sentiment", *FAST)
    assert code == 1 and "['meh'] never occur in the training data" in error_line(err) and not out.exists()
    assert not list(tmp_path.glob(".never*"))  # no temporary or state directory left either
    code, _, err = _cli(capsys, "eval", tiny_bert, "--task", "sst2", "--validation-file", base / "nan.csv")
    assert code == 2 and "cannot be combined" in error_line(err)


def test_a_checkpoint_refuses_another_task_unless_forced(tiny_bert, small_glue, tmp_path, capsys):
    out = tmp_path / "sst2-model"
    out.mkdir()
    for f in tiny_bert.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    (out / "bebert_run.json").write_text(json.dumps({"command": "finetune", "task": "sst2"}))
    code, _, err = _cli(capsys, "eval", out, "--task", "mrpc", "--data-dir", small_glue)
    assert code == 1 and "was made for sst2" in error_line(err) and "--force" in error_line(err)
    code, stdout, _ = _cli(capsys, "eval", out, "--task", "mrpc", "--data-dir", small_glue, "--force", "--max-samples", "8", "--json")
    assert code == 0 and one_json(stdout)["task"] == "mrpc"
    code, stdout, _ = _cli(capsys, "eval", out, "--data-dir", small_glue, "--max-samples", "8", "--json")
    assert code == 0 and one_json(stdout)["task"] == "sst2"
