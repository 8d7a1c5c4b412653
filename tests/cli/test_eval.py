import json
from pathlib import Path

import pytest

from tests.conftest import error_line, make_tiny, one_json, run_cli


def test_help_and_version():
    assert "binarize" in run_cli("--help", check=0).stdout
    assert run_cli("--version", check=0).stdout.strip() == "bebert 0.1.0"


def test_eval_json_is_one_object_and_logs_go_to_stderr(tiny_bert, glue_dir):
    proc = run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", glue_dir, "--max-samples", "40", "--json", check=0)
    payload = one_json(proc.stdout)
    assert payload["task"] == "sst2" and payload["main_metric"] == "accuracy"
    assert payload["splits"]["validation"]["samples"] == 40
    assert 0.0 <= payload["main_value"] <= 1.0 and payload["passed"] is True


def test_eval_human_table(tiny_bert, glue_dir):
    proc = run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", glue_dir, "--max-samples", "20", check=0)
    assert "accuracy" in proc.stdout and "validation" in proc.stdout


def test_fail_under_exits_3(tiny_bert, glue_dir):
    proc = run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", glue_dir, "--max-samples", "20",
                   "--fail-under", "0.99", "--json", check=3)
    assert one_json(proc.stdout)["passed"] is False
    assert "below --fail-under 0.99" in error_line(proc.stderr)


def test_env_var_data_dir(tiny_bert, glue_dir):
    run_cli("eval", tiny_bert, "--task", "rte", "--max-samples", "8", env={"BEBERT_DATA_DIR": str(glue_dir)}, check=0)


def test_regression_task(tiny_regression, glue_dir):
    payload = one_json(run_cli("eval", tiny_regression, "--task", "stsb", "--data-dir", glue_dir, "--max-samples", "30",
                               "--json", check=0).stdout)
    assert set(payload["splits"]["validation"]["metrics"]) == {"pearson", "spearman"}


def test_unknown_task_is_usage_error(tiny_bert, glue_dir):
    proc = run_cli("eval", tiny_bert, "--task", "sst3", "--data-dir", glue_dir, check=2)
    assert "unknown task 'sst3'" in error_line(proc.stderr)


def test_missing_option_is_usage_error(tiny_bert):
    error_line(run_cli("eval", tiny_bert, check=2).stderr)


def test_not_a_model(tmp_path, glue_dir):
    assert "not a model directory" in error_line(run_cli("eval", tmp_path, "--task", "sst2", "--data-dir", glue_dir, check=1).stderr)
    assert "does not exist" in error_line(run_cli("eval", tmp_path / "x", "--task", "sst2", check=1).stderr)


def test_not_bert_family(tmp_path, glue_dir):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "bebert supports bert, roberta, electra, distilbert" in error_line(
        run_cli("eval", tmp_path, "--task", "sst2", "--data-dir", glue_dir, check=1).stderr)


def test_label_count_mismatch(tiny_bert, glue_dir):
    line = error_line(run_cli("eval", tiny_bert, "--task", "mnli", "--data-dir", glue_dir, check=1).stderr)
    assert "has 2 output label(s) but task mnli needs 3" in line


def test_missing_data_and_malformed_tsv(tiny_bert, tmp_path):
    assert "missing data file" in error_line(run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", tmp_path, check=1).stderr)
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nfine\t1\nbroken row\n")
    line = error_line(run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", tmp_path, check=1).stderr)
    assert "dev.tsv:3: malformed row" in line


def test_debug_env_shows_traceback(tiny_bert, tmp_path):
    proc = run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", tmp_path, env={"BEBERT_DEBUG": "1"}, check=1)
    assert "Traceback" in proc.stderr


@pytest.mark.slow  # over 15 s; moved out of the default suite to keep it under 15 minutes
def test_other_architectures_evaluate(tmp_path, glue_dir, tokenizer):
    for mt in ("roberta", "electra", "distilbert"):
        path = make_tiny(tmp_path / mt, model_type=mt, tokenizer=tokenizer)
        run_cli("eval", path, "--task", "sst2", "--data-dir", glue_dir, "--max-samples", "8", check=0)


def test_without_data_dir_the_hub_is_tried_and_fails_clearly_offline(tiny_bert, tmp_path):
    env = {"BEBERT_DATA_DIR": "", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    line = error_line(run_cli("eval", tiny_bert, "--task", "sst2", env=env, check=1).stderr)
    assert "from the hub" in line and "--data-dir" in line


def test_runtime_packed_of_a_full_precision_checkpoint_reports_what_ran(tiny_bert, small_glue):
    proc = run_cli("eval", tiny_bert, "--task", "sst2", "--data-dir", small_glue, "--max-samples", "8",
                   "--runtime", "packed", "--json", check=0)
    assert one_json(proc.stdout)["runtime"] == "fp"
    warning = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "Warning: --runtime packed:" in warning and "no binary layers" in warning and "full precision" in warning


def test_packed_runtime_is_prepared_once(tmp_path, small_glue, tokenizer, monkeypatch, capsys):
    # Every binary layer's kernel weights are prepared at load time and reused by every batch; a
    # model.to() after preparing would drop them and the first batch would prepare each layer again.
    from bebert_cli.cli.main import main
    from bebert_cli.quant import ops
    from bebert_cli.quant.layers import PackedLinear
    from bebert_cli.quant.packed import load_packed
    from tests.quant.test_runtime import packed_checkpoint

    d = packed_checkpoint(tmp_path / "student", "w1a4", tokenizer=tokenizer)
    layers = sum(isinstance(m, PackedLinear) for m in load_packed(d).modules())
    calls = []
    real = ops.prepare_linear
    monkeypatch.setattr(ops, "prepare_linear", lambda layer, **kw: calls.append(layer) or real(layer, **kw))
    main(["eval", str(d), "--task", "sst2", "--data-dir", str(small_glue), "--max-samples", "16", "--batch-size", "4",
          "--runtime", "packed", "--json"])
    assert one_json(capsys.readouterr().out)["runtime"] == "packed"
    assert layers > 0 and len(calls) == layers
