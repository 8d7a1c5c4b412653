"""`workflows.binarize.binarize` called as a library, with a sink that is not the CLI's: the result it returns is
the one `bebert binarize --json` prints, built from what it wrote."""

import json

from tests.workflows.test_context import RecordingSink


def test_binarize_as_a_library_returns_the_command_result(tiny_bert, small_glue, tmp_path):
    from bebert_cli.dataspec import DataOptions
    from bebert_cli.files import dir_size
    from bebert_cli.quant.recipes import resolve_recipe
    from bebert_cli.workflows.binarize import binarize
    from bebert_cli.workflows.context import RunContext

    sink = RecordingSink()
    out = tmp_path / "BIN"
    ctx = RunContext(sink, out, DataOptions(task="sst2", data_dir=small_glue), cpu=True, mixed_precision="no")
    recipe = resolve_recipe("w1a4", max_train_samples=64, epochs=1, batch_size=16, max_seq_length=32)
    result = binarize(ctx, str(tiny_bert), recipe)

    saved = json.loads((out / "eval_results.json").read_text())
    run = json.loads((out / "bebert_run.json").read_text())
    assert {k: result[k] for k in saved} == saved  # the dev payload, as written
    assert result["output"] == str(out) and result["size_bytes"] == dir_size(out)
    assert result["teacher"] == run["teacher_eval"]
    assert result["train"] == {k: run[k] for k in ("steps", "samples_per_second", "train_seconds", "selection",
                                                   "train_rows")}
    assert any(line.startswith(f"Binarizing {tiny_bert} with recipe w1a4") for line in sink.logs)
    assert not (tmp_path / ".BIN.bebert-run").exists()  # the run's state is dropped once published
