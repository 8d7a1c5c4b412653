"""Data specs: columns, label kinds, label order from the checkpoint, metrics, saving, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bebert_cli import dataspec
from bebert_cli.dataspec import DataOptions, DataSpec, load_rows, resolve
from bebert_cli.errors import CheckpointError, DataError, ModelError, UsageError


def _cfg(*names, generic=False):
    n = len(names)
    return SimpleNamespace(num_labels=n, id2label={i: (f"LABEL_{i}" if generic else x) for i, x in enumerate(names)})


def _csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def sentiment(tmp_path):
    # shuffled column order, string labels, the file lists "pos" first
    train = _csv(tmp_path / "train.csv", ["id", "label", "text"],
                 [[1, "pos", "a fine film"], [2, "neg", "dull"], [3, "pos", "lovely"], [4, "neg", "awful"]])
    dev = _csv(tmp_path / "dev.csv", ["text", "label"], [["great", "pos"], ["bad", "neg"], ["fine", "pos"]])
    return train, dev


def test_new_head_sorts_string_labels_and_guesses_columns(sentiment):
    train, dev = sentiment
    spec = resolve(DataOptions(train_file=train, validation_file=dev), new_head=True, need_train=True)
    assert spec.labels == ("neg", "pos") and spec.text_fields == ("text",) and spec.label_column == "label"
    assert spec.metrics == ("accuracy", "f1", "macro_f1") and spec.name == train.parent.name
    assert load_rows(spec, "validation")["label"] == [1, 0, 1]


def test_label_order_comes_from_the_checkpoint(sentiment):
    _, dev = sentiment
    forward = resolve(DataOptions(validation_file=dev), config=_cfg("neg", "pos"), checkpoint="m")
    reverse = resolve(DataOptions(validation_file=dev), config=_cfg("pos", "neg"), checkpoint="m")
    assert forward.labels == ("neg", "pos") and reverse.labels == ("pos", "neg")
    assert load_rows(forward, "validation")["label"] == [1, 0, 1]
    assert load_rows(reverse, "validation")["label"] == [0, 1, 0]


def test_generic_names_need_label_order(sentiment):
    _, dev = sentiment
    with pytest.raises(ModelError, match="generic label names.*--label-order"):
        resolve(DataOptions(validation_file=dev), config=_cfg("a", "b", generic=True), checkpoint="m")
    spec = resolve(DataOptions(validation_file=dev, label_order="pos,neg"), config=_cfg("a", "b", generic=True), checkpoint="m")
    assert load_rows(spec, "validation")["label"] == [0, 1, 0]
    with pytest.raises(ModelError, match="contradicts"):
        resolve(DataOptions(validation_file=dev, label_order="pos,neg"), config=_cfg("neg", "pos"), checkpoint="m")


def test_unknown_label_and_count_mismatch(tmp_path, sentiment):
    _, dev = sentiment
    with pytest.raises(ModelError, match="has 3 output label"):
        resolve(DataOptions(validation_file=dev, label_order="neg,pos"), config=_cfg("a", "b", "c", generic=True),
                checkpoint="m")
    with pytest.raises(DataError, match=r"label\(s\) \['pos'\] are not among m's labels"):
        resolve(DataOptions(validation_file=dev), config=_cfg("neg", "positive"), checkpoint="m")


def test_validation_labels_the_training_file_never_had(tmp_path, sentiment):
    train, _ = sentiment
    dev = _csv(tmp_path / "dev2.csv", ["text", "label"], [["x", "pos"], ["y", "meh"]])
    with pytest.raises(DataError, match=r"\['meh'\] never occur in the training data"):
        resolve(DataOptions(train_file=train, validation_file=dev), new_head=True, need_train=True)


@pytest.mark.parametrize("rows,match", [
    ([["x", "pos"], ["y", "1"]], "mixes numbers"),
    ([["x", "pos"], ["y", ""]], "row 2 has no label"),
    ([["x", "pos"], ["", "neg"]], "row 2 has an empty text"),
])
def test_bad_rows(tmp_path, rows, match):
    dev = _csv(tmp_path / "bad.csv", ["text", "label"], rows)
    with pytest.raises(DataError, match=match):
        spec = resolve(DataOptions(validation_file=dev), config=_cfg("neg", "pos"), checkpoint="m")
        load_rows(spec, "validation")


def test_missing_column_names_the_columns(sentiment):
    _, dev = sentiment
    with pytest.raises(DataError, match=r"no column 'review'; its columns are \['text', 'label'\]"):
        resolve(DataOptions(validation_file=dev, text_columns=("review",)), config=_cfg("neg", "pos"), checkpoint="m")
    nolabel = _csv(dev.parent / "nolabel.csv", ["text", "y"], [["a", 1]])
    with pytest.raises(DataError, match=r"no label column found.*\['text', 'y'\]"):
        resolve(DataOptions(validation_file=nolabel), config=_cfg("neg", "pos"), checkpoint="m")


def test_file_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "rows.xlsx").write_text("x")
    (tmp_path / "header.csv").write_text("text,label\n")
    cases = {"empty.csv": "is empty", "rows.xlsx": "unsupported file type '.xlsx'", "header.csv": "has no rows",
             "missing.csv": "no such file"}
    for name, match in cases.items():
        with pytest.raises(DataError, match=match):
            resolve(DataOptions(validation_file=tmp_path / name), config=_cfg("neg", "pos"), checkpoint="m")


@pytest.mark.parametrize("opts,match", [
    (DataOptions(task="sst2", validation_file=Path("x.csv")), "cannot be combined"),
    (DataOptions(dataset="d", train_file=Path("x.csv")), "not both"),
    (DataOptions(train_split="train"), "need --dataset"),
    (DataOptions(validation_file=Path("x.csv"), text_columns=("a", "b", "c")), "not 3 times"),
    (DataOptions(task="sst2", label_column="y"), "a GLUE --task has its own columns"),
])
def test_contradictory_options_are_usage_errors(opts, match):
    with pytest.raises(UsageError, match=match):
        resolve(opts)


def test_float_labels_mean_regression_and_int_labels_are_ids(tmp_path):
    reg = _csv(tmp_path / "reg.csv", ["sentence1", "sentence2", "score"], [["a", "b", 3.5], ["c", "d", 1.0]])
    spec = resolve(DataOptions(validation_file=reg, label_column="score"), config=SimpleNamespace(num_labels=1, id2label={0: "LABEL_0"}),
                   checkpoint="m")
    assert spec.is_regression and spec.metrics == ("pearson", "spearman") and spec.text_fields == ("sentence1", "sentence2")
    assert load_rows(spec, "validation")["label"] == [3.5, 1.0]
    with pytest.raises(ModelError, match="regression"):
        resolve(DataOptions(validation_file=reg, label_column="score"), config=_cfg("a", "b"), checkpoint="m")
    ints = _csv(tmp_path / "ints.csv", ["text", "label"], [["a", 2], ["b", 0]])
    assert load_rows(resolve(DataOptions(validation_file=ints), config=_cfg("x", "y", "z", generic=True), checkpoint="m"),
                     "validation")["label"] == [2, 0]
    with pytest.raises(DataError, match="label 2 does not exist"):
        resolve(DataOptions(validation_file=ints), config=_cfg("x", "y", generic=True), checkpoint="m")


def test_metrics_option():
    assert dataspec.parse_metrics("macro_f1,accuracy,matthews", regression=False, num_labels=3) == (
        "macro_f1", "accuracy", "matthews_correlation")
    with pytest.raises(UsageError, match="with 3 classes use macro_f1"):
        dataspec.parse_metrics("f1", regression=False, num_labels=3)
    with pytest.raises(UsageError, match="does not apply to a regression"):
        dataspec.parse_metrics("accuracy", regression=True, num_labels=1)
    with pytest.raises(UsageError, match="unknown metric"):
        dataspec.parse_metrics("auc", regression=False, num_labels=2)


def test_multiclass_metrics_match_sklearn():
    from sklearn.metrics import f1_score, matthews_corrcoef

    from bebert_cli.metrics import METRICS

    rng = np.random.default_rng(0)
    ref, pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert METRICS["macro_f1"](pred, ref) == pytest.approx(f1_score(ref, pred, average="macro"))
    assert METRICS["matthews_correlation"](pred, ref) == pytest.approx(matthews_corrcoef(ref, pred))


def test_saved_dataset_dict_with_class_labels_and_test_fallback(tmp_path):
    import datasets

    feats = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    rows = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 1, 2]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=feats),
                          "test": datasets.Dataset.from_dict(rows, features=feats)}).save_to_disk(str(tmp_path / "nli"))
    # a hub MNLI model lists the same names in another order: mapped by name
    spec = resolve(DataOptions(dataset=str(tmp_path / "nli")), config=_cfg("contradiction", "entailment", "neutral"),
                   checkpoint="m")
    assert spec.validation_split == "test" and any("test split" in n for n in spec.notes)
    assert spec.text_fields == ("premise", "hypothesis") and spec.metrics == ("accuracy", "macro_f1")
    assert load_rows(spec, "validation")["label"] == [1, 2, 0]
    with pytest.raises(DataError, match="no such directory"):
        resolve(DataOptions(dataset=str(tmp_path / "nope")), config=_cfg("a", "b"), checkpoint="m")


def test_glue_preset_maps_a_reordered_checkpoint_by_name_or_refuses(small_glue):
    from bebert_cli import data as data_mod
    from bebert_cli.pipeline import load_rows as pipeline_rows
    from bebert_cli.tasks import get_task

    rte = get_task("rte")  # GLUE order: entailment, not_entailment; this hub-style model lists them the other way
    spec = resolve(DataOptions(task="rte", data_dir=small_glue), config=_cfg("NOT_ENTAILMENT", "Entailment"),
                   checkpoint="hub-rte")
    assert spec.labels == ("not_entailment", "entailment") and "mapped by name" in spec.notes[0]
    glue_ids = data_mod.load_split(rte, "validation", small_glue)["label"]
    ours = pipeline_rows(spec, "validation", small_glue)["label"]
    assert [spec.labels[i] for i in ours] == [rte.labels[i] for i in glue_ids] and ours != glue_ids
    with pytest.raises(ModelError, match="are not the mrpc labels"):
        resolve(DataOptions(task="mrpc", data_dir=small_glue), config=_cfg("negative", "positive"), checkpoint="sst2-model")
    forced = resolve(DataOptions(task="mrpc", data_dir=small_glue, force=True), config=_cfg("negative", "positive"),
                     checkpoint="sst2-model")
    assert forced.labels == get_task("mrpc").labels


def test_checkpoint_knows_its_task(tmp_path):
    (tmp_path / "bebert_run.json").write_text(json.dumps({"command": "finetune", "task": "sst2"}))
    with pytest.raises(ModelError, match="was made for sst2.*--force"):
        resolve(DataOptions(task="mrpc"), config=_cfg("LABEL_0", "LABEL_1", generic=True), checkpoint=str(tmp_path))
    assert resolve(DataOptions(), config=_cfg("a", "b", generic=True), checkpoint=str(tmp_path)).name == "sst2"


def test_spec_round_trips_and_hostile_specs_are_refused(sentiment):
    train, dev = sentiment
    spec = resolve(DataOptions(train_file=train, validation_file=dev), new_head=True, need_train=True)
    again = DataSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    for bad in ({"name": "x"}, {**spec.to_dict(), "labels": "neg"}, {**spec.to_dict(), "source": "ftp"},
                {**spec.to_dict(), "max_seq_length": True}, [1]):
        with pytest.raises(CheckpointError):
            DataSpec.from_dict(bad)


def test_a_recorded_spec_fills_in_what_is_not_given(sentiment, tmp_path):
    train, dev = sentiment
    spec = resolve(DataOptions(train_file=train, validation_file=dev), new_head=True, need_train=True)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "bebert_run.json").write_text(json.dumps({"command": "finetune", "task": spec.name, "data": spec.to_dict()}))
    other = _csv(tmp_path / "march.csv", ["label", "text"], [["neg", "meh"]])
    # binarize-style: new validation rows, training rows from the checkpoint's spec
    again = resolve(DataOptions(validation_file=other), config=_cfg("neg", "pos"), checkpoint=str(ckpt), need_train=True)
    assert again.train_file == str(train.resolve()) and again.validation_file == str(other.resolve())
    assert again.name == spec.name and again.labels == ("neg", "pos")
    with pytest.raises(ModelError, match=f"was made for {spec.name}"):
        resolve(DataOptions(task="sst2"), config=_cfg("neg", "pos", generic=True), checkpoint=str(ckpt))
    with pytest.raises(ModelError, match="are not the sst2 labels.*--force"):  # its names say so too
        resolve(DataOptions(task="sst2"), config=_cfg("neg", "pos"), checkpoint=str(ckpt))
