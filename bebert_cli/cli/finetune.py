"""`bebert finetune`: a full-precision teacher from any BERT-family checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from bebert_cli.cli import choices
from bebert_cli.cli import options as opt
from bebert_cli.quant.recipes import DEFAULT_MAX_SEQ_LENGTH


@opt.data_options
def finetune_command(
    model: Annotated[str, typer.Argument(help="Local BERT-family directory or hub id (hub ids need a network).")],
    output: opt.OutputDir,
    epochs: opt.Epochs = 3.0,
    lr: opt.Lr = 5e-5,
    batch_size: opt.BatchSize = 32,
    max_seq_length: opt.MaxSeqLength = DEFAULT_MAX_SEQ_LENGTH,
    seed: opt.Seed = 42,
    max_train_samples: opt.MaxTrainSamples = None,
    eval_batch_size: opt.EvalBatchSizeOpt = 64,
    embeddings: Annotated[choices.Embeddings, typer.Option(
        "--embeddings", case_sensitive=False,
        help="Word embeddings: table (a plain HF checkpoint), binary (1-bit rows) or hash (EELBERT: computed, "
             "nothing stored); binary and hash save bebert's packed format.")] = choices.Embeddings.table,
    hash_ngrams: Annotated[str, typer.Option(
        "--hash-ngrams", help="Character n-gram sizes for --embeddings hash, e.g. 3 or 2,3,4.")] = "3",
    hash_seed: Annotated[int, typer.Option("--hash-seed", help="Seed of the hash family (0 to 2**64 - 1).")] = 0,
    hash_projection: Annotated[bool, typer.Option(
        "--hash-projection/--no-hash-projection", help="A trainable full-precision projection after the hash.")] = False,
    group_by_length: Annotated[bool, typer.Option(
        "--group-by-length/--no-group-by-length",
        help="Batches of similar lengths (sorted within mega-batches of 50 batches, batch order shuffled): "
             "far less padding.")] = True,
    save_every: opt.SaveEvery = 200,
    overwrite: opt.Overwrite = False,
    resume: opt.Resume = False,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    cpu: opt.Cpu = False,
    data=None,
):
    """Fine-tune a full-precision classifier (the teacher later commands compress)."""
    from bebert_cli.cli.output import Output
    from bebert_cli.training import TrainConfig
    from bebert_cli.workflows.context import RunContext
    from bebert_cli.workflows.finetune import FinetuneSettings, finetune

    out = Output(json_mode=json_out, quiet=quiet)
    data.check()
    train = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, group_by_length=group_by_length)
    settings = FinetuneSettings(train, max_seq_length=max_seq_length, max_train_samples=max_train_samples,
                                embeddings=embeddings, hash_ngrams=hash_ngrams, hash_seed=hash_seed,
                                hash_projection=hash_projection)
    ctx = RunContext(out, output, data, overwrite=overwrite, resume=resume, save_every=save_every,
                     eval_batch_size=eval_batch_size, mixed_precision="no", cpu=cpu,
                     trust_remote_code=trust_remote_code)
    result = finetune(ctx, model, settings)
    rows = [[name, metric, value, r["samples"]] for name, r in result["splits"].items()
            for metric, value in r["metrics"].items()]
    out.table(f"{result['task']} dev · {output}", ["split", "metric", "value", "samples"], rows)
    out.log(f"Saved {output} ({result['train']['steps']} steps, {result['train']['samples_per_second']:.1f} samples/s)")
    out.result(result, "finetune")


def register(app: typer.Typer) -> None:
    app.command("finetune", epilog=opt.examples(
        "bebert finetune sentence-transformers/all-MiniLM-L6-v2 --task sst2 -o teacher/",
        "bebert finetune MODEL_DIR --task sst2 -o teacher/ --max-train-samples 8000 --epochs 1   # the demo's budget",
        "bebert finetune MODEL_DIR -o tickets-fp/ --train-file train.csv --validation-file dev.csv --label-column queue",
        "bebert finetune MODEL_DIR --task mrpc -o teacher/ --resume                              # continue a stopped run",
    ))(finetune_command)
