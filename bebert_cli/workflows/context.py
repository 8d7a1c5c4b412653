"""The run context the training commands share: where they report, which data options, where they
publish, and how they run (accelerator, resume, evaluation batch size).

A workflow is handed one `RunContext` by its command; the accelerator is made by `start()` only once
the inputs were checked (a usage error costs no accelerator setup, and the "Training precision" line
comes where it always came).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bebert_cli.dataspec import DataOptions
from bebert_cli.progress import Sink


@dataclass
class RunContext:
    out: Sink  # logs, warnings and progress (`cli.output.Output` for a command)
    output: Path  # the directory the command publishes
    data: DataOptions = field(default_factory=DataOptions)
    overwrite: bool = False
    resume: bool = False
    save_every: int = 200
    eval_batch_size: int = 64
    mixed_precision: str = "auto"
    cpu: bool = False
    trust_remote_code: bool = False
    accelerator: object = field(default=None, init=False)

    def __post_init__(self):
        self.output = Path(self.output)

    @property
    def data_dir(self):
        return self.data.data_dir

    @property
    def revision(self) -> str | None:
        return self.data.revision

    @property
    def device(self):
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ------------------------------------------------------------------ before any expensive loading

    def check_output(self) -> None:
        """Refuse an existing output without --overwrite, before anything is loaded."""
        from bebert_cli.atomic import check_output

        check_output(self.output, self.overwrite)

    def teacher_spec(self, teacher: str, max_seq_length: int):
        """The data spec for learning from `teacher`: its head (and its recorded data) decide the labels."""
        from bebert_cli.dataspec import resolve
        from bebert_cli.models import load_config

        config = load_config(teacher, trust_remote_code=self.trust_remote_code, revision=self.revision)
        spec = resolve(self.data, config=config, checkpoint=teacher, need_train=True)
        for note in spec.notes:
            self.out.warn(note)
        self.out.log(spec.describe())
        return dataclasses.replace(spec, max_seq_length=max_seq_length)

    def start(self, mixed_precision: str | None = None):
        """Make the run's accelerator (logs the training precision it resolved); `mixed_precision` overrides
        the context's for a run that trains nothing."""
        from bebert_cli.pipeline import make_accelerator

        self.accelerator = make_accelerator(cpu=self.cpu, out=self.out,
                                            mixed_precision=mixed_precision or self.mixed_precision)
        return self.accelerator

    # ------------------------------------------------------------------ models and data

    def load_tokenizer(self, path: str):
        from bebert_cli.models import load_tokenizer

        return load_tokenizer(path, trust_remote_code=self.trust_remote_code, revision=self.revision)

    def load_classifier(self, path: str, spec, *, new_head: bool):
        from bebert_cli.models import load_classifier

        return load_classifier(path, spec, new_head=new_head, trust_remote_code=self.trust_remote_code,
                               revision=self.revision)

    def load_data(self, spec, tokenizer, *, max_seq_length: int, max_train_samples, seed: int):
        """(training data with its held-out selection slice, {dev split: tokenized dataset})."""
        from bebert_cli.pipeline import load_eval_split, load_train_data

        data = load_train_data(spec, tokenizer, data_dir=self.data_dir, max_seq_length=max_seq_length,
                               max_train_samples=max_train_samples, seed=seed)
        dev = load_eval_split(spec, "dev", tokenizer, data_dir=self.data_dir, max_seq_length=max_seq_length)
        return data, dev

    def evaluate(self, model, spec, splits: dict, collator, progress=None) -> dict:
        """{split: {"metrics", "samples"}} of `model` on the accelerator's device."""
        from bebert_cli.pipeline import evaluate_splits

        return evaluate_splits(model, spec, splits, collator, batch_size=self.eval_batch_size, progress=progress,
                               device=self.device)

    def select_fn(self, spec, data):
        """The held-out score training selects on, or None without a held-out slice."""
        if data.select is None:
            return None
        from bebert_cli.evaluation import evaluate
        from bebert_cli.pipeline import main_score

        def select(model):
            metrics, _ = evaluate(model, spec, data.select, data.collator, batch_size=self.eval_batch_size,
                                  device=self.device)
            return main_score(spec, metrics)

        return select

    # ------------------------------------------------------------------ the output's life

    def training_run(self):
        """The work directory for resumable state, under the output's lock (see `runner.training_run`)."""
        from bebert_cli.runner import training_run

        return training_run(self.output, overwrite=self.overwrite, resume=self.resume, accelerator=self.accelerator)

    def publish(self, write) -> None:
        """Write the output atomically through `write(tmp_dir)` and drop the run's state (inside `training_run`)."""
        from bebert_cli.runner import publish

        publish(self.output, write, overwrite=self.overwrite, accelerator=self.accelerator)

    def publish_locked(self, write) -> None:
        """Write the output atomically under its own lock: a command without a training run (no state to drop)."""
        from bebert_cli.atomic import atomic_output_dir, output_lock

        if self.is_main:
            with output_lock(self.output), atomic_output_dir(self.output, overwrite=self.overwrite) as tmp:
                write(tmp)
        self.accelerator.wait_for_everyone()

    def write_records(self, tmp: Path, payload: dict, run_info: dict) -> None:
        """The side files of every published checkpoint: eval_results.json, bebert_run.json, the model card."""
        from bebert_cli.pipeline import EVAL_FILE, RUN_FILE, write_json
        from bebert_cli.report.card import write_model_card

        write_json(tmp / EVAL_FILE, payload)
        write_json(tmp / RUN_FILE, run_info)
        write_model_card(tmp, name=self.output.name)


def sample_texts(dev: dict, tokenizer) -> list[str]:
    """Texts to check a compact tokenizer against: the dev inputs, decoded back from their ids."""
    ds = next(iter(dev.values()))
    n = min(500, len(ds))
    return [str(tokenizer.decode(list(ds[i]["input_ids"]), skip_special_tokens=True)) for i in range(n)]


def held_out_rows(data) -> int:
    return len(data.select) if data.select is not None else 0
