"""Hub ids versus paths, and failing in seconds without a network."""

from __future__ import annotations

import time

import pytest

from bebert_cli.dataspec import DataOptions, resolve
from bebert_cli.errors import DataError, ModelError
from bebert_cli.hub import looks_like_path
from bebert_cli.models import load_config


def test_what_looks_like_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    for name in ("./x", "/x", "~/x", "../x", "x/y/z", "out/model"):
        assert looks_like_path(name), name
    for name in ("bert-base-uncased", "google-bert/bert-base-uncased", "nyu-mll/glue"):
        assert not looks_like_path(name), name


@pytest.mark.parametrize("name", ["./nope", "runs/a/b", "out/model"])
def test_a_missing_path_is_no_such_directory_not_a_hub_lookup(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would fail differently if it were tried
    with pytest.raises(ModelError, match="does not exist"):
        load_config(name)
    with pytest.raises(DataError, match="no such directory"):
        resolve(DataOptions(dataset=name))


def test_no_network_fails_in_seconds_naming_offline_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(ModelError, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        load_config("someone/private-model")
    with pytest.raises(DataError, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        resolve(DataOptions(dataset="someone/private-data"))
    assert time.monotonic() - start < 10


def test_offline_mode_reads_the_cache_and_says_what_is_missing(tmp_path):
    from tests.conftest import error_line, run_cli

    # huggingface_hub reads HF_HUB_OFFLINE when it is imported: a fresh process, as a user runs it
    start = time.monotonic()
    proc = run_cli("eval", "someone/model", "--task", "sst2", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1 and "someone/model" in error_line(proc.stderr)
    assert time.monotonic() - start < 60  # interpreter start-up on a busy machine; no network retries


def test_glue_from_the_hub_without_a_network_names_data_dir(monkeypatch):
    from bebert_cli import data
    from bebert_cli.tasks import get_task

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError, match="--data-dir.*HF_HUB_OFFLINE=1"):
        data.load_split(get_task("sst2"), "validation", None)
