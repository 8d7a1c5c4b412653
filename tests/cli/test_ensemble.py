"""`bebert ensemble` on tiny models: AdaBoost / bagging training, resume, --from, and the round trip through eval."""

import json
import math

import numpy as np
import pytest

from tests.conftest import error_line, one_json, write_slice

FAST = ["--max-train-samples", "48", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16"]
MEMBER_FILES = ("config.json", "model.safetensors", "recipe.json", "eval_results.json")


def fast_recipe(**overrides):
    from bebert_cli.quant.recipes import resolve_recipe

    return resolve_recipe("bibert", distill="none", max_train_samples=48, epochs=1, batch_size=16, max_seq_length=16,
                          **overrides)


def train_in_process(teacher, glue, out, *, task="sst2", strategy="adaboost", members=2, resume=False, overwrite=False):
    from bebert_cli.cli.output import Output
    from bebert_cli.ensemble.train import run_ensemble
    from bebert_cli.tasks import get_task

    return run_ensemble(str(teacher), get_task(task), out, fast_recipe(), members=members, strategy=strategy,
                        out=Output(quiet=True), data_dir=glue, overwrite=overwrite, resume=resume, save_every=200,
                        eval_batch_size=64)


def cli_in_process(capsys, *argv):
    """The real CLI entry point without a new interpreter: (exit code, stdout, stderr)."""
    from bebert_cli.cli.main import main

    capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_data(teacher, glue, task="sst2"):
    from bebert_cli.models import load_tokenizer
    from bebert_cli.pipeline import load_train_data
    from bebert_cli.tasks import get_task

    tokenizer = load_tokenizer(str(teacher))
    return load_train_data(get_task(task), tokenizer, data_dir=glue, max_seq_length=16, max_train_samples=48, seed=42)


def same_weights(a, b) -> bool:
    """Tensor-for-tensor equality of two safetensors files (the header's metadata order is not stable
    across processes: safetensors keeps it in a hash map)."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


def member_logits(path, ds, collator):
    from bebert_cli.evaluation import predict_logits
    from bebert_cli.quant.packed import load_packed

    return predict_logits(load_packed(path), ds, collator)


@pytest.fixture(scope="module")
def small_glue(glue_dir, tmp_path_factory):
    """SST-2 and STS-B only, 120 training rows, 32 dev rows: every run evaluates the dev set several times."""
    root = tmp_path_factory.mktemp("ensglue")
    for name in ("SST-2", "STS-B"):
        write_slice(glue_dir / name / "train.tsv", root / name / "train.tsv", 121)
        write_slice(glue_dir / name / "dev.tsv", root / name / "dev.tsv", 33)
    return root


@pytest.fixture(scope="module")
def adaboost_ens(tiny_bert, small_glue, tmp_path_factory):
    """One run through the real CLI entry point (in this process: an interpreter start costs seconds)."""
    import contextlib
    import io

    from bebert_cli.cli.main import main

    out = tmp_path_factory.mktemp("ens") / "ENS"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(["ensemble", str(tiny_bert), "--task", "sst2", "-o", str(out), "--members", "2", "--strategy", "adaboost",
              "--recipe", "bibert", "--data-dir", str(small_glue), *FAST, "--json"])
    return out, one_json(stdout.getvalue())


def test_adaboost_ensemble_directory_and_eval_round_trip(adaboost_ens, tiny_bert, small_glue, capsys):
    out, payload = adaboost_ens
    manifest = json.loads((out / "ensemble.json").read_text())
    assert set(manifest) == {"format", "format_version", "task", "num_labels", "strategy", "combination", "members",
                             "teacher"}
    assert manifest["format"] == "bebert-ensemble" and manifest["format_version"] == 1
    assert (manifest["task"], manifest["num_labels"], manifest["strategy"], manifest["combination"]) == \
        ("sst2", 2, "adaboost", "weighted_logits")
    assert manifest["teacher"] == str(tiny_bert)
    assert [m["path"] for m in manifest["members"]] == ["member-0", "member-1"]
    for k, m in enumerate(manifest["members"]):
        assert m["recipe"] == "bibert" and math.isfinite(m["weight"]) and m["weight"] > 0 and 0 < m["error"] < 1
        assert all((out / m["path"] / f).is_file() for f in MEMBER_FILES)
        recipe = json.loads((out / m["path"] / "recipe.json").read_text())
        assert recipe["distill"] == [] and recipe["seed"] == 42 + k  # no distillation by default
    assert {"vocab.txt", "tokenizer_config.json", "eval_results.json", "bebert_run.json"} <= {p.name for p in out.iterdir()}
    run = json.loads((out / "bebert_run.json").read_text())
    assert run["max_seq_length"] == 16 and run["strategy"] == "adaboost" and run["distillation"] is False
    assert len(run["member_train_seconds"]) == 2 and run["train_seconds"] >= sum(run["member_train_seconds"]) > 0
    assert json.loads((out / "eval_results.json").read_text())["splits"] == payload["splits"]
    assert payload["teacher_evaluation"]["main_metric"] == "accuracy" and len(payload["members"]) == 2

    # SAMME by hand, from each member's predictions on the FULL training set (not its resample).
    from bebert_cli.ensemble.boosting import samme_step

    data = train_data(tiny_bert, small_glue)
    labels = np.asarray(data.train["labels"])
    w = np.full(len(labels), 1 / len(labels))
    for m in manifest["members"]:
        wrong = member_logits(out / m["path"], data.train, data.collator).argmax(-1) != labels
        err = float(w[wrong].sum())
        assert m["error"] == pytest.approx(max(err, 1e-10))
        step = samme_step(w, wrong, 2)
        expected = math.log((1 - err) / err) if err < 0.5 - 1e-9 else 1e-3
        assert m["weight"] == pytest.approx(expected) == pytest.approx(step.weight)
        w = step.sample_weights

    # `bebert eval ENS` scores it like any model, with the saved max_seq_length.
    code, stdout, _ = cli_in_process(capsys, "eval", out, "--task", "sst2", "--data-dir", small_glue, "--json")
    assert code == 0
    again = one_json(stdout)
    assert again["splits"] == payload["splits"] and again["max_seq_length"] == 16

    import bebert_cli
    from bebert_cli.ensemble.model import EnsembleModel

    model = bebert_cli.load_model(out)
    assert isinstance(model, EnsembleModel) and model.weights == tuple(m["weight"] for m in manifest["members"])


def test_resume_keeps_the_finished_member_and_continues(adaboost_ens, tiny_bert, small_glue, tmp_path, monkeypatch):
    import bebert_cli.quant.student as student_mod
    from bebert_cli.errors import UsageError
    from bebert_cli.training import TrainingInterrupted

    real, calls = student_mod.train_student, []

    def interrupt_second_member(*args, **kwargs):
        calls.append(kwargs["resume"])
        result = real(*args, **kwargs)
        if len(calls) == 2:  # member-1 trained and saved its state, then Ctrl-C before it was packed
            raise TrainingInterrupted("interrupted at step 3/3; rerun the same command with --resume to continue")
        return result

    monkeypatch.setattr(student_mod, "train_student", interrupt_second_member)
    out = tmp_path / "ENS"
    with pytest.raises(TrainingInterrupted, match="1 of 2 ensemble members finished and kept"):
        train_in_process(tiny_bert, small_glue, out)
    work = tmp_path / ".ENS.bebert-run"
    state = json.loads((work / "ensemble_state.json").read_text())
    assert [m["path"] for m in state["members"]] == ["member-0"] and len(state["sample_weights"]) == 46
    assert (work / "member-0" / "packed" / "model.safetensors").is_file()
    assert not (work / "member-0" / "train_state.safetensors").exists()  # dropped once the member was packed
    assert (work / "member-1" / "train_state.safetensors").is_file() and not out.exists()

    with pytest.raises(UsageError, match="--resume"):
        train_in_process(tiny_bert, small_glue, out)  # no silent restart over the kept members

    calls.clear()
    result = train_in_process(tiny_bert, small_glue, out, resume=True)
    assert calls == [True]  # member-0 was not retrained; member-1 resumed from its own saved state
    assert not work.exists() and result["output"] == str(out)
    ref, _ = adaboost_ens
    for k in range(2):  # identical to the uninterrupted run
        assert same_weights(out / f"member-{k}" / "model.safetensors", ref / f"member-{k}" / "model.safetensors")
    got = json.loads((out / "ensemble.json").read_text())["members"]
    want = json.loads((ref / "ensemble.json").read_text())["members"]
    assert [m["weight"] for m in got] == pytest.approx([m["weight"] for m in want])


def test_bagging_is_deterministic_under_a_seed(adaboost_ens, tiny_bert, small_glue, tmp_path):
    from bebert_cli.ensemble.boosting import bootstrap_indices

    out = tmp_path / "BAG"
    result = train_in_process(tiny_bert, small_glue, out, strategy="bagging")
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["strategy"] == "bagging" and manifest["combination"] == "weighted_logits"
    assert [(m["weight"], m["error"]) for m in manifest["members"]] == [(1.0, None), (1.0, None)]
    assert [m["unique_rows"] for m in result["members"]] == [len(set(bootstrap_indices(46, 42 + k))) for k in range(2)]
    # Round 0 draws the same bootstrap (seed 42) as AdaBoost's uniform first round, so the member
    # trained in another process, by another command, is bit-identical.
    ref, _ = adaboost_ens
    assert same_weights(out / "member-0" / "model.safetensors", ref / "member-0" / "model.safetensors")
    assert bootstrap_indices(46, 43) != bootstrap_indices(46, 42)


def test_regression_adaboost_r2(tiny_regression, small_glue, tmp_path):
    import torch

    import bebert_cli
    from bebert_cli.ensemble.boosting import r2_step

    out = tmp_path / "STSB"
    result = train_in_process(tiny_regression, small_glue, out, task="stsb")
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["combination"] == "weighted_mean" and manifest["num_labels"] == 1
    assert set(result["splits"]["validation"]["metrics"]) == {"pearson", "spearman"}
    data = train_data(tiny_regression, small_glue, task="stsb")
    labels = np.asarray(data.train["labels"], dtype=np.float64)
    preds = member_logits(out / "member-0", data.train, data.collator).reshape(-1)
    step = r2_step(np.ones(len(labels)), preds - labels)
    m0 = manifest["members"][0]
    assert m0["error"] == pytest.approx(step.error) and m0["weight"] == pytest.approx(step.weight)
    model = bebert_cli.load_model(out)
    batch = data.collator([data.train[i] for i in range(4)])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        got = model(**inputs).logits
        each = [m(**inputs).logits for m in model.members]
    w = [m["weight"] for m in manifest["members"]]
    torch.testing.assert_close(got, (w[0] * each[0] + w[1] * each[1]) / (w[0] + w[1]))


def test_from_combines_checkpoints_with_held_out_weights(adaboost_ens, tiny_bert, small_glue, tmp_path, capsys):
    from bebert_cli.ensemble.boosting import heldout_weight

    src, _ = adaboost_ens
    out = tmp_path / "FROM"
    code, stdout, stderr = cli_in_process(capsys, "ensemble", "--from", src / "member-1", src / "member-0", "-o", out,
                                          "--task", "sst2", "--data-dir", small_glue, "--json")
    assert code == 0, stderr
    payload = one_json(stdout)
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["strategy"] == "from" and manifest["teacher"] == str(tiny_bert)
    assert (out / "member-0" / "model.safetensors").read_bytes() == (src / "member-1" / "model.safetensors").read_bytes()
    data = train_data(tiny_bert, small_glue)  # the members' own held-out slice: their seed and max-train-samples
    held = np.asarray(data.select["labels"])
    for m, name in zip(manifest["members"], ("member-1", "member-0")):
        step = heldout_weight(member_logits(src / name, data.select, data.collator), held, regression=False, num_classes=2)
        assert m["weight"] == pytest.approx(step.weight) and m["error"] == pytest.approx(step.error)
    code, stdout, _ = cli_in_process(capsys, "eval", out, "--task", "sst2", "--data-dir", small_glue, "--json")
    assert code == 0 and one_json(stdout)["splits"] == payload["splits"]


def test_from_refuses_other_tasks_label_counts_and_non_packed(adaboost_ens, tiny_bert, small_glue, tmp_path, capsys):
    import shutil

    src, _ = adaboost_ens
    other = tmp_path / "mrpc-member"
    shutil.copytree(src / "member-1", other)
    (other / "eval_results.json").write_text(json.dumps({"task": "mrpc"}))
    out = tmp_path / "X"
    base = ["--data-dir", small_glue, "-o", out]
    code, _, err = cli_in_process(capsys, "ensemble", "--from", src / "member-0", other, "--task", "sst2", *base)
    assert code == 1 and "was trained for task mrpc, not sst2" in error_line(err)
    code, _, err = cli_in_process(capsys, "ensemble", "--from", src / "member-0", src / "member-1", "--task", "mnli", *base)
    assert code == 1 and "has 2 output label(s) but task mnli needs 3" in error_line(err)
    code, _, err = cli_in_process(capsys, "ensemble", "--from", src / "member-0", tiny_bert, "--task", "sst2", *base)
    assert code == 1 and "full-precision checkpoint" in error_line(err)
    code, _, err = cli_in_process(capsys, "ensemble", "--from", src / "member-0", "--task", "sst2", *base)
    assert code == 2 and "at least two" in error_line(err)
    code, _, err = cli_in_process(capsys, "ensemble", "--from", src / "member-0", src / "member-1", "--task", "sst2",
                                  "--members", "3", *base)
    assert code == 2 and "--members" in error_line(err)
    code, _, err = cli_in_process(capsys, "ensemble", tiny_bert, "--task", "sst2", "--strategy", "boost", *base)
    assert code == 2 and "--strategy" in error_line(err)
    assert not out.exists()
