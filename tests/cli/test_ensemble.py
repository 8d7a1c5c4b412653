"""`bebert ensemble` on tiny models, through the CLI: the trained directory, --from, and the round trip through eval
(the workflow's resume, bagging and regression: tests/workflows/test_ensemble_workflow.py)."""

import json
import math

import numpy as np
import pytest

from tests.conftest import error_line, member_logits, one_json, train_data

MEMBER_FILES = ("config.json", "model.safetensors", "recipe.json", "eval_results.json")


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


def test_adaboost_ensemble_directory_and_eval_round_trip(adaboost_ens, tiny_bert, ensemble_glue, capsys):
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
    assert payload["teacher"]["main_metric"] == "accuracy" and len(payload["members"]) == 2

    # SAMME by hand, from each member's predictions on the FULL training set (not its resample).
    from bebert_cli.ensemble.boosting import samme_step

    data = train_data(tiny_bert, ensemble_glue)
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
    code, stdout, _ = cli_in_process(capsys, "eval", out, "--task", "sst2", "--data-dir", ensemble_glue, "--json")
    assert code == 0
    again = one_json(stdout)
    assert again["splits"] == payload["splits"] and again["max_seq_length"] == 16

    import bebert_cli
    from bebert_cli.ensemble.model import EnsembleModel

    model = bebert_cli.load_model(out)
    assert isinstance(model, EnsembleModel) and model.weights == tuple(m["weight"] for m in manifest["members"])


def test_from_combines_checkpoints_with_held_out_weights(adaboost_ens, tiny_bert, ensemble_glue, tmp_path, capsys):
    from bebert_cli.ensemble.boosting import heldout_weight

    src, _ = adaboost_ens
    out = tmp_path / "FROM"
    code, stdout, stderr = cli_in_process(capsys, "ensemble", "--from", src / "member-1", src / "member-0", "-o", out,
                                          "--task", "sst2", "--data-dir", ensemble_glue, "--json")
    assert code == 0, stderr
    payload = one_json(stdout)
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["strategy"] == "from" and manifest["teacher"] == str(tiny_bert)
    assert (out / "member-0" / "model.safetensors").read_bytes() == (src / "member-1" / "model.safetensors").read_bytes()
    data = train_data(tiny_bert, ensemble_glue)  # the members' own held-out slice: their seed and max-train-samples
    held = np.asarray(data.select["labels"])
    for m, name in zip(manifest["members"], ("member-1", "member-0")):
        step = heldout_weight(member_logits(src / name, data.select, data.collator), held, regression=False, num_classes=2)
        assert m["weight"] == pytest.approx(step.weight) and m["error"] == pytest.approx(step.error)
    code, stdout, _ = cli_in_process(capsys, "eval", out, "--task", "sst2", "--data-dir", ensemble_glue, "--json")
    assert code == 0 and one_json(stdout)["splits"] == payload["splits"]


def test_from_refuses_other_tasks_label_counts_and_non_packed(adaboost_ens, tiny_bert, ensemble_glue, tmp_path, capsys):
    import shutil

    src, _ = adaboost_ens
    other = tmp_path / "mrpc-member"
    shutil.copytree(src / "member-1", other)
    (other / "eval_results.json").write_text(json.dumps({"task": "mrpc"}))
    out = tmp_path / "X"
    base = ["--data-dir", ensemble_glue, "-o", out]
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
