"""Every command's `--json` output, and the error object, validated against bebert_cli/schemas/bebert.schema.json
(docs/json.md): the real CLI on a tiny model, in this process."""

from __future__ import annotations

import copy
import json
import shutil

import jsonschema
import pytest

from bebert_cli.schema import KINDS, SCHEMA_VERSION, load_schema, split_name, teacher_payload, validate, with_schema
from tests.cli.test_ensemble import cli_in_process
from tests.conftest import error_line, one_json

FAST = ["--max-train-samples", "48", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16"]


def run_captured(*argv):
    """The CLI in this process with its own stdout / stderr (a module fixture cannot use capsys)."""
    import contextlib
    import io

    from bebert_cli.cli.main import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tiny_bert, small_glue, tmp_path_factory):
    """{command: (exit code, stdout, stderr)} of one tiny pipeline: finetune -> binarize -> eval -> ensemble
    (trained and --from) -> export -> report -> predict -> env."""
    root = tmp_path_factory.mktemp("schema")
    data = ["--task", "sst2", "--data-dir", small_glue]
    teacher, binary, ens = root / "teacher", root / "binary", root / "ens"
    steps = {
        "finetune": ["finetune", tiny_bert, "-o", teacher, *data, *FAST],
        "binarize": ["binarize", teacher, "-o", binary, "--recipe", "bibert", *data, *FAST],
        "eval": ["eval", teacher, *data],
        "eval packed": ["eval", binary, *data, "--runtime", "packed"],
        "ensemble": ["ensemble", teacher, "-o", ens, "--members", "2", *data, *FAST],
        "ensemble --from": ["ensemble", "--from", ens / "member-0", ens / "member-1", "-o", root / "from", *data],
        "export": ["export", binary, "-o", root / "remote", "--format", "remote-code"],
        "report": ["report", binary, ens, "--baseline", teacher, "--by-module"],
        "env": ["env"],
    }
    results = {name: run_captured(*argv, "--json") for name, argv in steps.items()}
    results["predict"] = run_captured("predict", binary, "a fine film", "a dull one")
    results["paths"] = {"teacher": teacher, "binary": binary, "ens": ens}
    return results


COMMANDS = ["finetune", "binarize", "eval", "eval packed", "ensemble", "ensemble --from", "export", "report", "env"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_validates(runs, name):
    code, out, err = runs[name]
    assert code == 0, err
    obj = one_json(out)
    validate(obj)
    assert obj["schema"] == "bebert." + name.split()[0] and obj["schema_version"] == SCHEMA_VERSION


def test_shared_names_mean_the_same_everywhere(runs):
    got = {name: one_json(runs[name][1]) for name in COMMANDS}
    for name in ("finetune", "binarize", "eval", "ensemble", "ensemble --from"):
        assert got[name]["split"] == "validation" and set(got[name]["splits"]) == {"validation"}
    assert got["binarize"]["teacher"] == str(runs["paths"]["teacher"])
    assert got["binarize"]["teacher_evaluation"]["model"] == got["binarize"]["teacher"]
    assert got["ensemble"]["teacher"] == got["binarize"]["teacher"]
    assert got["ensemble --from"]["teacher"] == got["binarize"]["teacher"]  # both members name the same one
    assert got["ensemble --from"]["teacher_evaluation"] is None  # nothing scored it in that command
    # A size is the same number whoever reports it.
    report = {e["path"]: e for e in got["report"]["models"]}
    binary = str(runs["paths"]["binary"])
    assert {k: report[binary]["bytes"][k] for k in ("disk", "weights")} == got["binarize"]["bytes"]
    assert got["export"]["source_bytes"] == got["binarize"]["bytes"]
    # The report's saved metrics are the evaluation binarize printed.
    assert report[binary]["metrics"]["splits"] == got["binarize"]["splits"]
    assert report[binary]["metrics"]["split"] == "validation"
    assert got["eval packed"]["runtime"] == "packed" and got["eval"]["runtime"] == "fp"
    # An ensemble's members are what its manifest records, scored by main_value as everywhere else.
    manifest = json.loads((runs["paths"]["ens"] / "ensemble.json").read_text())
    assert manifest["members"] == got["ensemble"]["members"] and manifest["teacher"] == got["ensemble"]["teacher"]
    best = max(got["ensemble"]["members"], key=lambda m: m["main_value"])
    assert got["ensemble"]["best_member"] == {"path": best["path"], "main_metric": "accuracy",
                                              "main_value": best["main_value"]}


def test_predict_rows_validate(runs):
    code, out, err = runs["predict"]
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["a fine film", "a dull one"]
    for r in rows:
        validate(r)
        assert r["schema"] == "bebert.prediction"


def test_upload_validates(runs, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from tests.cli.test_upload import FakeHfApi

    FakeHfApi.made = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    d = tmp_path / "binary"
    shutil.copytree(runs["paths"]["binary"], d)
    code, out, err = cli_in_process(capsys, "upload", d, "me/bebert-schema", "--json")
    assert code == 0, err
    validate(one_json(out))


@pytest.mark.parametrize("argv, code, error_type", [
    (["eval", "no/such/dir", "--task", "sst2"], 1, "ModelError"),
    (["eval", "x", "--fail-under", "5"], 2, "UsageError"),
    (["eval", "x", "--no-such-option"], 2, "UsageError"),  # the option parser's own error
    (["report"], 2, "UsageError"),  # a missing argument
])
def test_failures_print_one_error_object(capsys, argv, code, error_type):
    got, out, err = cli_in_process(capsys, *argv, "--json")
    assert got == code
    obj = one_json(out)
    validate(obj)
    assert obj["schema"] == "bebert.error" and obj["error"]["type"] == error_type
    assert obj["error"]["exit_code"] == code and error_line(err) == f"Error: {obj['error']['message']}"


def test_no_error_object_without_json(capsys):
    got, out, err = cli_in_process(capsys, "eval", "no/such/dir", "--task", "sst2")
    assert got == 1 and out == "" and error_line(err)


def test_quality_gate_keeps_the_result_as_the_one_object(runs, small_glue, capsys):
    got, out, err = cli_in_process(capsys, "eval", runs["paths"]["binary"], "--task", "sst2", "--data-dir", small_glue,
                                   "--fail-under", "1.0", "--json")
    obj = one_json(out)
    validate(obj)
    assert got == 3 and obj["schema"] == "bebert.eval" and obj["passed"] is False and "below --fail-under" in err


def test_the_schema_rejects_old_and_stray_names(runs):
    """The check can fail: the names schema 2 replaced, and a field the schema does not know."""
    binarize = one_json(runs["binarize"][1])
    eval_ = one_json(runs["eval"][1])
    ensemble = one_json(runs["ensemble"][1])
    broken = {
        "split dev": dict(eval_, split="dev"),
        "size_bytes": {**{k: v for k, v in binarize.items() if k != "bytes"}, "size_bytes": 1},
        "teacher object": dict(binarize, teacher=binarize["teacher_evaluation"]),
        "stray field": dict(eval_, accuracy=0.5),
        "old report schema": dict(one_json(runs["report"][1]), schema="bebert-report"),
        "no version": {k: v for k, v in eval_.items() if k != "schema_version"},
        "member dev": dict(ensemble, members=[{**m, "dev": {"accuracy": m["main_value"]}} for m in ensemble["members"]]),
        "best_member by metric name": dict(ensemble, best_member={"path": "member-0", "accuracy": 0.5}),
    }
    for what, obj in broken.items():
        with pytest.raises(jsonschema.ValidationError):
            validate(obj)
            pytest.fail(f"{what} was accepted")
    report = one_json(runs["report"][1])
    old = copy.deepcopy(report)
    old["models"][0]["metrics"]["splits"]["validation"] = {"accuracy": 0.5}  # schema 1's metrics.splits shape
    with pytest.raises(jsonschema.ValidationError):
        validate(old)


def test_builders():
    assert [split_name(s) for s in ("dev", "Validation", "train", "matched", "dev_mismatched")] == [
        "validation", "validation", "train", "validation_matched", "validation_mismatched"]
    assert list(with_schema("env", {"schema": "old", "a": 1})) == ["schema", "schema_version", "a"]
    with pytest.raises(ValueError, match="unknown output kind"):
        with_schema("evaluate", {})
    assert teacher_payload(None) == {"teacher": None, "teacher_evaluation": None}


def test_the_schema_file_is_a_valid_json_schema_with_every_kind():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(KINDS) <= set(schema["$defs"])
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]} == set(KINDS)
