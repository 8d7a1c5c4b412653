"""`workflows.context.RunContext`: what the training commands share (output checks, accelerator, publication)."""

import json

import pytest


class RecordingSink:
    """A `progress.Sink` that is not the CLI's: what a library caller of a workflow would pass."""

    def __init__(self):
        self.logs, self.warnings = [], []

    def log(self, message):
        self.logs.append(message)

    def warn(self, message):
        self.warnings.append(message)

    def progress(self, enabled=True):
        import contextlib

        from bebert_cli.progress import NullProgress

        return contextlib.nullcontext(NullProgress())


def context(tmp_path, **kwargs):
    from bebert_cli.workflows.context import RunContext

    return RunContext(RecordingSink(), tmp_path / "OUT", cpu=True, **kwargs)


def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    from bebert_cli.errors import UsageError

    (tmp_path / "OUT").mkdir()
    (tmp_path / "OUT" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="--overwrite"):
        context(tmp_path).check_output()
    context(tmp_path, overwrite=True).check_output()


def test_a_run_that_trains_nothing_overrides_the_precision(tmp_path):
    ctx = context(tmp_path, mixed_precision="bf16")
    accelerator = ctx.start(mixed_precision="no")
    assert ctx.accelerator is accelerator and accelerator.mixed_precision == "no"
    assert accelerator.bebert_precision_reason == "fp32 (--mixed-precision no)"


def test_publish_locked_writes_all_or_nothing(tmp_path):
    ctx = context(tmp_path)
    ctx.start(mixed_precision="no")

    def fail(tmp):
        (tmp / "half.json").write_text("{")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        ctx.publish_locked(fail)
    assert [p.name for p in tmp_path.iterdir() if p.name != ".OUT.lock"] == []  # no output, no half-written temp

    ctx.publish_locked(lambda tmp: (tmp / "a.json").write_text(json.dumps({"ok": True})))
    assert json.loads((tmp_path / "OUT" / "a.json").read_text()) == {"ok": True}


def test_sample_texts_decode_the_first_dev_rows(tokenizer):
    import datasets

    from bebert_cli.workflows.context import sample_texts

    texts = ["a fine film", "not good at all"] * 300
    ds = datasets.Dataset.from_dict({"input_ids": [tokenizer(t)["input_ids"] for t in texts]})
    got = sample_texts({"validation": ds}, tokenizer)
    assert len(got) == 500 and got[:2] == ["a fine film", "not good at all"]
