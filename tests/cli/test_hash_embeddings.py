"""EELBERT hashed embeddings through the CLI: no stored table, survives save/load, evaluates the same."""

import json

import pytest
from safetensors import safe_open

from tests.conftest import error_line, one_json, run_cli

FAST = ["--max-train-samples", "48", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "24"]


def _keys(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_binarize_with_hashed_embeddings(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "hash-bibert"
    payload = one_json(run_cli("binarize", tiny_bert, "--task", "sst2", "-o", out, "--recipe", "bibert", "--embeddings", "hash",
                               "--hash-ngrams", "2,3", "--hash-seed", "7", "--data-dir", small_glue, *FAST, "--json",
                               check=0).stdout)
    assert payload["bits"] == "1-h-1"
    assert not any("word_embeddings" in k for k in _keys(out))  # nothing of the table is stored
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["hashed_embeddings"] == ["bert.embeddings.word_embeddings"]
    assert qc["recipe"]["hash_ngrams"] == [2, 3] and qc["recipe"]["hash_seed"] == 7
    again = one_json(run_cli("eval", out, "--task", "sst2", "--data-dir", small_glue, "--json", check=0).stdout)
    assert again["splits"] == payload["splits"]


def test_finetune_with_hashed_embeddings_and_projection(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "hash-fp"
    payload = one_json(run_cli("finetune", tiny_bert, "--task", "sst2", "-o", out, "--embeddings", "hash",
                               "--hash-projection", "--data-dir", small_glue, "--epochs", "1", "--max-train-samples", "48",
                               "--max-seq-length", "24", "--json", check=0).stdout)
    keys = _keys(out)
    assert "bert.embeddings.word_embeddings.projection.weight" in keys
    assert not any(k.startswith("bert.embeddings.word_embeddings.") and "projection" not in k for k in keys)
    assert any(k.endswith("attention.self.query.weight") for k in keys)  # encoder stays full precision
    again = one_json(run_cli("eval", out, "--task", "sst2", "--data-dir", small_glue, "--json", check=0).stdout)
    assert again["splits"] == payload["splits"]


@pytest.mark.parametrize("command", ["finetune", "binarize"])
@pytest.mark.parametrize("flags, message", [
    (["--hash-ngrams", "3,3"], "lists a size twice"), (["--hash-ngrams", "0"], "positive integers"),
    (["--hash-seed", "-1"], "--hash-seed must be"),
])
def test_bad_hash_options_are_usage_errors_before_loading(tmp_path, command, flags, message):
    # The model path does not exist: a check made after loading would report that (exit 1) instead.
    proc = run_cli(command, tmp_path / "no-model", "--task", "sst2", "-o", tmp_path / "out", "--embeddings", "hash",
                   *flags, check=2)
    assert message in error_line(proc.stderr)


def test_student_width_not_a_multiple_of_32_is_a_usage_error(tmp_path):
    proc = run_cli("binarize", tmp_path / "no-model", "--task", "sst2", "-o", tmp_path / "out", "--student-width", "48",
                   check=2)
    assert "multiple of 32 (heads of 64 or 32 dimensions)" in error_line(proc.stderr)
