"""`bebert upload` against a local stand-in for huggingface_hub.HfApi (no network).

The command's own code runs unchanged up to HfApi; the fake checks every call against the real
HfApi method's signature and lists the files upload_folder would send with huggingface_hub's own filter.
"""

import inspect
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub.utils import filter_repo_objects

from bebert_cli.cli.main import main
from tests.conftest import error_line, one_json

REAL = huggingface_hub.HfApi


class FakeHfApi:
    made: list = []

    def __init__(self, *args, **kwargs):
        inspect.signature(REAL.__init__).bind(self, *args, **kwargs)
        self.token = kwargs.get("token")
        self.calls = []
        self.fail = None
        FakeHfApi.made.append(self)

    def _call(self, name, args, kwargs):
        bound = inspect.signature(getattr(REAL, name)).bind(self, *args, **kwargs)
        self.calls.append((name, {k: v for k, v in bound.arguments.items() if k != "self"}))
        if self.fail:
            raise self.fail
        return bound.arguments

    def create_repo(self, *args, **kwargs):
        a = self._call("create_repo", args, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{a['repo_id']}")

    def create_branch(self, *args, **kwargs):
        self._call("create_branch", args, kwargs)

    def upload_folder(self, *args, **kwargs):
        a = self._call("upload_folder", args, kwargs)
        root = Path(a["folder_path"])
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        self.sent = list(filter_repo_objects(files, ignore_patterns=a.get("ignore_patterns")))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{a['repo_id']}/commit/abc123", oid="abc123")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    FakeHfApi.made = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login to fall back on
    return FakeHfApi


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tokenizer):
    from tests.quant.test_runtime import packed_checkpoint

    d = packed_checkpoint(tmp_path_factory.mktemp("up") / "student", "bibert", tokenizer=tokenizer)
    (d / "eval_results.json").write_text(json.dumps({"task": "sst2", "main_metric": "accuracy", "main_value": 0.8,
                                                      "splits": {"validation": {"metrics": {"accuracy": 0.8}, "samples": 8}}}))
    return d


def _run(capsys, *argv):
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_upload_pushes_the_checkpoint_with_its_card(hub, packed, tmp_path, capsys):
    d = tmp_path / "student"
    shutil.copytree(packed, d)
    (d / ".bebert.lock").write_text("")
    assert not (d / "README.md").exists()
    code, io = _run(capsys, "upload", d, "me/bebert-sst2", "--private", "--revision", "w1-run", "--json")
    assert code == 0, io.err
    api = hub.made[-1]
    assert api.token == "hf_test_token"  # HF_TOKEN
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (c[1] for c in api.calls)
    assert create["repo_id"] == "me/bebert-sst2" and create["private"] is True and create["exist_ok"] is True
    assert branch["branch"] == "w1-run"
    assert upload["revision"] == "w1-run" and Path(upload["folder_path"]) == d
    assert (d / "README.md").is_file()  # the missing card was written first
    assert "README.md" in api.sent and "model.safetensors" in api.sent and ".bebert.lock" not in api.sent
    payload = one_json(io.out)
    assert payload["files"] == api.sent and payload["revision"] == "w1-run" and payload["kind"] == "packed"
    assert payload["url"] == "https://huggingface.co/me/bebert-sst2" and payload["commit"] == "abc123"


def test_upload_defaults_to_main_and_keeps_an_existing_card(hub, packed, tmp_path, capsys):
    d = tmp_path / "student"
    shutil.copytree(packed, d)
    (d / "README.md").write_text("---\nlicense: mit\n---\n# mine\n")
    code, io = _run(capsys, "upload", d, "me/x", "-q")
    assert code == 0, io.err
    assert [c[0] for c in hub.made[-1].calls] == ["create_repo", "upload_folder"]
    assert hub.made[-1].calls[0][1]["private"] is False and hub.made[-1].calls[1][1]["revision"] is None
    assert (d / "README.md").read_text().endswith("# mine\n")


@pytest.mark.parametrize("what", ["empty", "missing", "pickle_only"])
def test_upload_refuses_what_is_not_a_checkpoint(hub, tiny_bert, tmp_path, capsys, what):
    d = tmp_path / "d"
    if what == "empty":
        d.mkdir()
    elif what == "pickle_only":
        shutil.copytree(tiny_bert, d)
        (d / "model.safetensors").rename(d / "pytorch_model.bin")
    code, io = _run(capsys, "upload", d, "me/x")
    assert code == 1
    line = error_line(io.err)
    assert {"empty": "not a model directory", "missing": "does not exist", "pickle_only": "no model.safetensors"}[what] in line
    assert hub.made == []  # refused before any Hub call


def test_upload_without_a_token_or_with_a_bad_repo_id_is_a_usage_error(hub, tiny_bert, monkeypatch, capsys):
    code, io = _run(capsys, "upload", tiny_bert, "not a repo id")
    assert code == 2 and "invalid repository id" in error_line(io.err)
    monkeypatch.delenv("HF_TOKEN")
    code, io = _run(capsys, "upload", tiny_bert, "me/x")
    assert code == 2 and "HF_TOKEN" in error_line(io.err)
    assert hub.made == []


def test_a_hub_failure_is_one_error_line(hub, tiny_bert, tmp_path, monkeypatch, capsys):
    d = tmp_path / "fp"
    shutil.copytree(tiny_bert, d)
    (d / "README.md").write_text("# card\n")
    real_init = FakeHfApi.__init__

    def failing(self, *a, **k):
        real_init(self, *a, **k)
        response = SimpleNamespace(status_code=403, headers={}, request=None)
        self.fail = huggingface_hub.errors.HfHubHTTPError("403 Forbidden: you cannot write to me/x", response=response)

    monkeypatch.setattr(FakeHfApi, "__init__", failing)
    code, io = _run(capsys, "upload", d, "me/x")
    assert code == 1 and "upload to me/x failed: 403 Forbidden" in error_line(io.err)
