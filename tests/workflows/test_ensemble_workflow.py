"""`workflows.ensemble.train_ensemble` called as a library: resume after an interrupted member, bagging under a
seed, AdaBoost.R2 for regression (the CLI's own tests: tests/cli/test_ensemble.py)."""

import json

import numpy as np
import pytest

from tests.conftest import member_logits, train_data


def fast_recipe(**overrides):
    from bebert_cli.quant.recipes import resolve_recipe

    return resolve_recipe("bibert", distill="none", max_train_samples=48, epochs=1, batch_size=16, max_seq_length=16,
                          **overrides)


def train_in_process(teacher, glue, out, *, task="sst2", strategy="adaboost", members=2, resume=False, overwrite=False):
    from bebert_cli.cli.output import Output
    from bebert_cli.dataspec import DataOptions
    from bebert_cli.workflows.context import RunContext
    from bebert_cli.workflows.ensemble import train_ensemble

    ctx = RunContext(Output(quiet=True), out, DataOptions(task=task, data_dir=glue), overwrite=overwrite, resume=resume)
    return train_ensemble(ctx, str(teacher), fast_recipe(), members=members, strategy=strategy)


def same_weights(a, b) -> bool:
    """Tensor-for-tensor equality of two safetensors files (the header's metadata order is not stable
    across processes: safetensors keeps it in a hash map)."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


def test_resume_keeps_the_finished_member_and_continues(adaboost_ens, tiny_bert, ensemble_glue, tmp_path, monkeypatch):
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
        train_in_process(tiny_bert, ensemble_glue, out)
    work = tmp_path / ".ENS.bebert-run"
    state = json.loads((work / "ensemble_state.json").read_text())
    assert [m["path"] for m in state["members"]] == ["member-0"] and len(state["sample_weights"]) == 46
    assert (work / "member-0" / "packed" / "model.safetensors").is_file()
    assert not (work / "member-0" / "train_state.safetensors").exists()  # dropped once the member was packed
    assert (work / "member-1" / "train_state.safetensors").is_file() and not out.exists()

    with pytest.raises(UsageError, match="--resume"):
        train_in_process(tiny_bert, ensemble_glue, out)  # no silent restart over the kept members

    calls.clear()
    result = train_in_process(tiny_bert, ensemble_glue, out, resume=True)
    assert calls == [True]  # member-0 was not retrained; member-1 resumed from its own saved state
    assert not work.exists() and result["output"] == str(out)
    ref, _ = adaboost_ens
    for k in range(2):  # identical to the uninterrupted run
        assert same_weights(out / f"member-{k}" / "model.safetensors", ref / f"member-{k}" / "model.safetensors")
    got = json.loads((out / "ensemble.json").read_text())["members"]
    want = json.loads((ref / "ensemble.json").read_text())["members"]
    assert [m["weight"] for m in got] == pytest.approx([m["weight"] for m in want])


def test_bagging_is_deterministic_under_a_seed(adaboost_ens, tiny_bert, ensemble_glue, tmp_path):
    from bebert_cli.ensemble.boosting import bootstrap_indices

    out = tmp_path / "BAG"
    result = train_in_process(tiny_bert, ensemble_glue, out, strategy="bagging")
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["strategy"] == "bagging" and manifest["combination"] == "weighted_logits"
    assert [(m["weight"], m["error"]) for m in manifest["members"]] == [(1.0, None), (1.0, None)]
    assert [m["unique_rows"] for m in result["members"]] == [len(set(bootstrap_indices(46, 42 + k))) for k in range(2)]
    # Round 0 draws the same bootstrap (seed 42) as AdaBoost's uniform first round, so the member
    # trained in another process, by another command, is bit-identical.
    ref, _ = adaboost_ens
    assert same_weights(out / "member-0" / "model.safetensors", ref / "member-0" / "model.safetensors")
    assert bootstrap_indices(46, 43) != bootstrap_indices(46, 42)


def test_regression_adaboost_r2(tiny_regression, ensemble_glue, tmp_path):
    import torch

    import bebert_cli
    from bebert_cli.ensemble.boosting import r2_step

    out = tmp_path / "STSB"
    result = train_in_process(tiny_regression, ensemble_glue, out, task="stsb")
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["combination"] == "weighted_mean" and manifest["num_labels"] == 1
    assert set(result["splits"]["validation"]["metrics"]) == {"pearson", "spearman"}
    data = train_data(tiny_regression, ensemble_glue, task="stsb")
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
