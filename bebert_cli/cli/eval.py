"""`bebert eval`: score any checkpoint (full precision, packed binary, ensemble) on a GLUE split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bebert_cli.cli import choices
from bebert_cli.cli import options as opt


@opt.data_options
def eval_command(
    path: Annotated[str, typer.Argument(help="Checkpoint directory (or hub id) to evaluate.")],
    split: Annotated[str, typer.Option(  # not a closed set: MNLI adds matched / mismatched (tasks.resolve_split)
        "--split", autocompletion=lambda: ["dev", "train", "matched", "mismatched"],
        help="dev (or validation: every dev split, MNLI's two), train, or for MNLI matched / mismatched.")] = "dev",
    batch_size: opt.EvalBatchSize = 64,
    max_samples: opt.MaxSamples = None,
    max_seq_length: opt.CheckpointMaxSeqLength = None,
    fail_under: Annotated[
        Optional[float], typer.Option("--fail-under", help="Exit 3 if the main metric is below this (fraction, e.g. 0.85).")
    ] = None,
    runtime: Annotated[choices.Runtime, typer.Option(
        "--runtime", case_sensitive=False,
        help="Binary models: packed (the bit kernels) or simulated (fake-quantized torch); the same logits bit for bit.")
    ] = choices.Runtime.simulated,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    cpu: opt.Cpu = False,
    data=None,
):
    """Evaluate a checkpoint on its own data (recorded in it), a GLUE task, or your files / dataset."""
    from bebert_cli.cli.output import Output
    from bebert_cli.errors import QualityGateFailed, UsageError
    out = Output(json_mode=json_out, quiet=quiet)
    data.check()
    if fail_under is not None and fail_under > 1.0:
        raise UsageError("--fail-under is a fraction (0.85), not a percentage")

    from bebert_cli.data import make_collator
    from bebert_cli.dataspec import resolve
    from bebert_cli.loading import load_model, tokenizer_path
    from bebert_cli.models import check_task_matches, load_tokenizer
    from bebert_cli.pipeline import evaluate_splits, eval_payload, load_eval_split, make_accelerator, read_run_info
    from bebert_cli.quant.runtime import runtime_of

    model = load_model(path, runtime=runtime, trust_remote_code=trust_remote_code, revision=data.revision)
    on_train = split.lower() == "train"
    task_ = resolve(data, config=model.config, checkpoint=path, need_train=on_train, need_validation=not on_train)
    check_task_matches(model.config, task_, str(path))
    for note in task_.notes:
        out.warn(note)
    out.log(task_.describe())
    tokenizer = load_tokenizer(tokenizer_path(path), trust_remote_code=trust_remote_code, revision=data.revision)
    seq_len = max_seq_length or task_.max_seq_length or read_run_info(Path(path)).get("max_seq_length") or 128
    splits = load_eval_split(task_, split, tokenizer, data_dir=data.data_dir, max_seq_length=seq_len, max_samples=max_samples)
    used = runtime_of(model)
    if runtime == "packed" and used != "packed":
        out.warn(f"--runtime packed: {path} has no binary layers to run on the bit kernels; "
                 f"evaluated {'in full precision' if used == 'fp' else 'simulated'}")
    accelerator = make_accelerator(cpu=cpu or used == "packed")
    if used != "packed":  # the packed runtime runs on the CPU it was prepared on; a move would drop the
        model.to(accelerator.device)  # prepared kernel weights (PackedLinear._apply), rebuilt per layer later
    with out.progress() as progress:
        results = evaluate_splits(model, task_, splits, make_collator(tokenizer), batch_size=batch_size,
                                  progress=progress, device=accelerator.device)
    payload = eval_payload(task_, results, model=str(path), split=split, max_seq_length=seq_len, runtime=used)
    if used == "packed":  # which kernels computed the numbers (they are identical on every backend)
        from bebert_cli.environment import kernel_info

        payload["kernel_backend"] = kernel_info()["backend"]
        out.log(f"Packed runtime on kernel backend {payload['kernel_backend']}")
    passed = fail_under is None or payload["main_value"] >= fail_under
    payload["fail_under"] = fail_under
    payload["passed"] = passed

    rows = [[name, metric, value, r["samples"]] for name, r in results.items() for metric, value in r["metrics"].items()]
    out.table(f"{task_.name} · {path}", ["split", "metric", "value", "samples"], rows)
    out.result(payload, "eval")
    if not passed:
        raise QualityGateFailed(
            f"{task_.main_metric} {payload['main_value']:.4f} is below --fail-under {fail_under}"
        )


def register(app: typer.Typer) -> None:
    app.command("eval", epilog=opt.examples(
        "bebert eval student/                                   # the data the checkpoint records",
        "bebert eval student/ --runtime packed --fail-under 0.80   # the bit kernels; exit 3 below 80%",
        "bebert eval teacher/ --task sst2 --json",
        "bebert eval student/ --validation-file march.csv       # new rows with the same columns",
    ))(eval_command)
