"""`bebert predict`: JSONL from arguments, files and stdin, for full-precision, packed and ensemble checkpoints."""

from __future__ import annotations

import io
import json

import pytest
import torch

from tests.cli.test_own_data import _cli
from tests.conftest import error_line, run_cli
from tests.integrations.test_transformers_quantizer import _write_packed

TEXTS = ["a fine film", "a dull , lifeless mess", "it is what it is"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tokenizer):
    path = _write_packed(tmp_path_factory.mktemp("pred") / "bibert", "bibert", {}, tokenizer, full_vocab=True)
    tokenizer.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "neg", "1": "pos"}, {"neg": 0, "pos": 1}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, tokenizer):
    from bebert_cli.ensemble.model import write_manifest

    root = tmp_path_factory.mktemp("pred") / "ens"
    root.mkdir()
    for k, preset in enumerate(("bibert", "w1a4")):
        _write_packed(root / f"member-{k}", preset, {}, tokenizer, full_vocab=True)
    tokenizer.save_pretrained(root)
    write_manifest(root, task="sst2", num_labels=2, strategy="adaboost", teacher=None,
                   members=[{"path": "member-0", "weight": 0.7, "recipe": "bibert", "error": 0.3},
                            {"path": "member-1", "weight": 0.4, "recipe": "w1a4", "error": 0.4}])
    return root


def _expected(path, texts, runtime="simulated"):
    import bebert_cli

    from bebert_cli.models import load_tokenizer

    tok = load_tokenizer(str(path))
    with torch.no_grad():
        logits = bebert_cli.load_model(path, runtime=runtime)(**tok(texts, padding=True, return_tensors="pt")).logits
    return torch.softmax(logits, dim=-1)


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_arguments_in_a_fresh_process_on_the_packed_runtime(packed):
    proc = run_cli("predict", packed, *TEXTS, check=0)
    rows = _records(proc.stdout)
    assert [r["text"] for r in rows] == TEXTS
    probs = _expected(packed, TEXTS)
    for r, p in zip(rows, probs):
        assert set(r) == {"schema", "schema_version", "text", "label", "score", "scores"} and r["schema"] == "bebert.prediction"
        assert set(r["scores"]) == {"neg", "pos"}
        assert r["label"] == ("neg", "pos")[int(p.argmax())] and r["score"] == pytest.approx(float(p.max()), abs=1e-6)
        assert r["scores"]["pos"] == pytest.approx(float(p[1]), abs=1e-6)
    from bebert_cli.quant.packed import fastest_runtime

    assert f"{fastest_runtime(torch.device('cpu'))} runtime" in " ".join(proc.stderr.split())  # the fastest by default


@pytest.mark.parametrize("batch", ["1", "2", "32"])
def test_batching_does_not_change_the_answers(packed, capsys, batch):
    code, out, _ = _cli(capsys, "predict", packed, *TEXTS, "--batch-size", batch, "--runtime", "simulated")
    assert code == 0
    probs = _expected(packed, TEXTS)
    assert [r["scores"]["pos"] for r in _records(out)] == pytest.approx([float(p[1]) for p in probs], abs=1e-5)


def test_stdin_text_file_rows_and_output_file(packed, ensemble, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine film\n\nawful\n"))
    code, out, _ = _cli(capsys, "predict", ensemble)
    assert code == 0 and [r["text"] for r in _records(out)] == ["a fine film", "awful"]
    probs = _expected(ensemble, ["a fine film", "awful"])
    assert [r["scores"]["LABEL_1"] for r in _records(out)] == pytest.approx([float(p[1]) for p in probs], abs=1e-5)

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"id": i, "review": t}) + "\n" for i, t in enumerate(TEXTS)))
    target = tmp_path / "preds.jsonl"
    code, out, _ = _cli(capsys, "predict", packed, "--input", tmp_path / "texts.txt", "--output", target)
    assert code == 0 and out == "" and [r["text"] for r in _records(target.read_text())] == TEXTS
    code, out, _ = _cli(capsys, "predict", packed, "--input", tmp_path / "rows.jsonl", "--text-column", "review")
    assert code == 0 and [r["text"] for r in _records(out)] == TEXTS
    code, _, err = _cli(capsys, "predict", packed, "--input", tmp_path / "texts.txt", "--output", target)
    assert code == 2 and "--overwrite" in error_line(err)


def test_bad_input(packed, tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("review,id\ngood,1\n,2\n")
    target = tmp_path / "out.jsonl"
    code, _, err = _cli(capsys, "predict", packed, "--input", tmp_path / "rows.csv", "--text-column", "review", "-o", target)
    assert code == 1 and "row 2" in error_line(err) and "empty text" in error_line(err) and not target.exists()
    code, _, err = _cli(capsys, "predict", packed, "--input", tmp_path / "rows.csv")
    assert code == 1 and "no text column found; its columns are ['review', 'id']" in error_line(err)
    code, _, err = _cli(capsys, "predict", packed, "x", "--input", tmp_path / "rows.csv")
    assert code == 2 and "not both" in error_line(err)
    code, _, err = _cli(capsys, "predict", packed, "   ")
    assert code == 1 and "empty text" in error_line(err)
    (tmp_path / "blank.txt").write_text("\n\n")
    code, _, err = _cli(capsys, "predict", packed, "--input", tmp_path / "blank.txt", "-o", target)
    assert code == 1 and "no texts to classify" in error_line(err) and not target.exists()
