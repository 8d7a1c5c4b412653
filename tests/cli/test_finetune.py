import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import error_line, one_json, run_cli


def test_finetune_saves_a_normal_checkpoint(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "teacher"
    proc = run_cli("finetune", tiny_bert, "--task", "sst2", "-o", out, "--data-dir", small_glue, "--epochs", "1",
                   "--batch-size", "16", "--max-seq-length", "32", "--json", check=0)
    payload = one_json(proc.stdout)
    assert payload["task"] == "sst2" and payload["splits"]["validation"]["samples"] == 120
    for f in ("config.json", "model.safetensors", "eval_results.json", "bebert_run.json", "tokenizer_config.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["main_value"] == payload["main_value"]
    assert json.loads((out / "bebert_run.json").read_text())["selection"]["held_out_rows"] > 0
    # No temporary or state directories are left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]
    # The result evaluates like any checkpoint.
    again = one_json(run_cli("eval", out, "--task", "sst2", "--data-dir", small_glue, "--json", check=0).stdout)
    assert again["main_value"] == payload["main_value"]
    assert again["max_seq_length"] == 32  # taken from bebert_run.json


def test_existing_output_refused_without_overwrite(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    line = error_line(run_cli("finetune", tiny_bert, "--task", "sst2", "-o", out, "--data-dir", small_glue, check=2).stderr)
    assert "already exists; pass --overwrite" in line
    assert (out / "keep.txt").read_text() == "precious"


def test_new_head_for_another_label_count(tiny_bert, small_glue, tmp_path):
    # A 2-label checkpoint fine-tuned for regression gets a fresh 1-output head.
    out = tmp_path / "stsb"
    run_cli("finetune", tiny_bert, "--task", "stsb", "-o", out, "--data-dir", small_glue, "--epochs", "0.2",
            "--max-seq-length", "32", check=0)
    assert json.loads((out / "config.json").read_text())["num_labels"] == 1 if "num_labels" in json.loads(
        (out / "config.json").read_text()) else len(json.loads((out / "config.json").read_text())["id2label"]) == 1


def test_ctrl_c_saves_state_and_resume_finishes(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "bebert_cli", "finetune", str(tiny_bert), "--task", "sst2", "-o", str(out),
            "--data-dir", str(small_glue), "--epochs", "30", "--batch-size", "8", "--max-seq-length", "16",
            "--save-every", "1000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / ".run.bebert-run"
    deadline = time.time() + 120
    while time.time() < deadline and not (state / "best_model.safetensors").exists():
        time.sleep(0.2)  # wait until training is under way (first epoch done)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rerun the same command with --resume" in error_line(err)
    assert (state / "train_state.safetensors").is_file() and not out.exists()
    # Without --resume the saved state is protected.
    assert "--resume" in error_line(run_cli(*args[3:], check=2).stderr)
    # Resume with fewer epochs would be a different run: refused clearly.
    bad = run_cli(*args[3:-6], "--epochs", "2", "--batch-size", "8", "--max-seq-length", "16", "--resume", check=1)
    assert "different settings" in error_line(bad.stderr)
