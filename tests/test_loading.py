"""bebert_cli/loading.py: `load_model` dispatches on what a directory is and reads its config.json once."""

from pathlib import Path

import bebert_cli
from tests.ensemble.test_model import packed_member


def config_reads(monkeypatch) -> list:
    reads, real = [], Path.read_text

    def counting(self, *a, **k):
        if self.name == "config.json":
            reads.append(self)
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", counting)
    return reads


def test_a_packed_load_reads_config_json_once(tmp_path, monkeypatch):
    d = packed_member(tmp_path / "packed")
    reads = config_reads(monkeypatch)
    model = bebert_cli.load_model(d)
    assert type(model).__name__ == "BertForSequenceClassification" and not model.training
    assert reads == [d / "config.json"]


def test_an_ensemble_load_reads_each_members_config_json_once(tmp_path, monkeypatch):
    from bebert_cli.ensemble.model import write_manifest

    root = tmp_path / "ens"
    for k in range(2):
        packed_member(root / f"member-{k}", seed=k)
    write_manifest(root, task="sst2", num_labels=2, strategy="bagging", teacher=None,
                   members=[{"path": f"member-{k}", "weight": 1.0, "recipe": "bibert", "error": None} for k in range(2)])
    reads = config_reads(monkeypatch)
    model = bebert_cli.load_model(root)
    assert len(model.members) == 2
    assert sorted(reads) == [root / "member-0" / "config.json", root / "member-1" / "config.json"]


def test_the_old_import_paths_still_work():
    from bebert_cli.checkpoint import checkpoint_kind, load_model, read_config_json
    from bebert_cli.format import checkpoint_kind as kind
    from bebert_cli.format import read_config_json as read
    from bebert_cli.loading import load_model as load

    assert (checkpoint_kind, load_model, read_config_json) == (kind, load, read)
