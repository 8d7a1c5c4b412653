"""bebert_cli/files.py: one directory size and one JSON side-file writer."""

import json
import os

from bebert_cli.files import dir_size, write_json


def test_dir_size_counts_regular_files_only(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 5)
    (tmp_path / "README.md").write_bytes(b"x" * 7)
    (tmp_path / ".hidden").write_bytes(b"x" * 100)
    os.symlink(tmp_path / "a", tmp_path / "link")
    assert dir_size(tmp_path) == 22
    assert dir_size(tmp_path, exclude_top=("README.md",)) == 15
    (tmp_path / "sub" / "README.md").write_bytes(b"x")  # only the top-level card is left out
    assert dir_size(tmp_path, exclude_top=("README.md",)) == 16


def test_write_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": tmp_path})
    text = (tmp_path / "a.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text)["a"] == str(tmp_path)
