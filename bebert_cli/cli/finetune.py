"""`bebert finetune`: a full-precision teacher from any BERT-family checkpoint."""

from __future__ import annotations

import dataclasses
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
    out = Output(json_mode=json_out, quiet=quiet)
    data.check()
    data_dir = data.data_dir
    # usage errors (bad hash options) before any loading
    recipe = _embedding_recipe(embeddings, hash_ngrams, hash_seed, hash_projection, lr, epochs, batch_size,
                               max_seq_length, max_train_samples, seed)

    from bebert_cli.atomic import check_output
    from bebert_cli.dataspec import resolve
    from bebert_cli.models import load_classifier, load_config, load_tokenizer
    from bebert_cli.pipeline import (
        EVAL_FILE, RUN_FILE, evaluate_splits, eval_payload, load_eval_split, load_train_data, main_score,
        make_accelerator, write_json,
    )
    from bebert_cli.report.card import write_model_card
    from bebert_cli.report.lineage import lineage
    from bebert_cli.reproducibility import seed_all
    from bebert_cli.runner import environment_info, publish, training_run
    from bebert_cli.training import TrainConfig, train
    from bebert_cli.evaluation import evaluate

    check_output(output, overwrite)  # fail before any expensive loading
    # A new head: the data decides the labels and their order (saved as the model's id2label).
    task_ = dataclasses.replace(resolve(data, config=load_config(model, trust_remote_code=trust_remote_code,
                                                              revision=data.revision),
                                        new_head=True, need_train=True), max_seq_length=max_seq_length)
    for note in task_.notes:
        out.log(note)
    out.log(task_.describe())
    accelerator = make_accelerator(cpu=cpu)
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code, revision=data.revision)
    seed_all(seed)  # before the new head (and any hashed embeddings) is initialised
    net = load_classifier(model, task_, new_head=True, trust_remote_code=trust_remote_code, revision=data.revision)
    plan = None
    if recipe is not None:  # an fp encoder with binary or hashed input embeddings (EELBERT)
        from bebert_cli.quant.student import make_student

        net, plan = make_student(net, recipe, tokenizer)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, save_every=save_every,
                      group_by_length=group_by_length)
    data = load_train_data(task_, tokenizer, data_dir=data_dir, max_seq_length=max_seq_length,
                           max_train_samples=max_train_samples, seed=seed)
    dev = load_eval_split(task_, "dev", tokenizer, data_dir=data_dir, max_seq_length=max_seq_length)

    def loss_fn(m, batch):
        return m(**batch).loss, {}

    def select_fn(m):
        metrics, _ = evaluate(m, task_, data.select, data.collator, batch_size=eval_batch_size, device=accelerator.device)
        return main_score(task_, metrics)

    with training_run(output, overwrite=overwrite, resume=resume, accelerator=accelerator) as work:
        out.log(f"Fine-tuning {model} on {task_.name}: {len(data.train)} training rows, "
                f"{len(data.select) if data.select is not None else 0} held out for model selection")
        result = train(net, train_ds=data.train, collator=data.collator, cfg=cfg, loss_fn=loss_fn,
                       accelerator=accelerator, work_dir=work, resume=resume,
                       select_fn=select_fn if data.select is not None else None, output=out,
                       description=f"finetune {task_.name}",
                       fingerprint={"command": "finetune", "model": model, "task": task_.name,
                                    "max_seq_length": max_seq_length, "max_train_samples": max_train_samples,
                                    **({} if task_.source == "glue" else {"data": task_.to_dict()})})
        if recipe is not None:
            from bebert_cli.quant.student import finalize_student

            finalize_student(net, recipe)
        with out.progress(accelerator.is_main_process) as progress:
            results = evaluate_splits(net, task_, dev, data.collator, batch_size=eval_batch_size,
                                      progress=progress, device=accelerator.device)
        payload = eval_payload(task_, results, model=str(output), split="dev", max_seq_length=max_seq_length)
        run_info = {
            "command": "finetune", "base_model": model, "task": task_.name, "data": task_.to_dict(),
            "max_seq_length": max_seq_length,
            "max_train_samples": max_train_samples, "train": cfg.__dict__, "train_rows": len(data.train),
            "selection": {"held_out_rows": len(data.select) if data.select is not None else 0,
                          "best_score": result.best_score, "best_epoch": result.best_epoch},
            "steps": result.steps, "samples_per_second": result.samples_per_second,
            "train_seconds": result.train_seconds, "environment": environment_info(),
            "lineage": lineage(model),  # license and Hub base model, for the card
        }

        def write(tmp):
            if plan is None:
                net.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            else:  # not expressible as a plain HF checkpoint: bebert's self-describing format
                from bebert_cli.quant.packed import save_packed

                save_packed(net, tmp, recipe, plan)
                tokenizer.save_pretrained(tmp)
            write_json(tmp / EVAL_FILE, payload)
            write_json(tmp / RUN_FILE, run_info)
            write_model_card(tmp, name=output.name)

        publish(output, write, overwrite=overwrite, accelerator=accelerator)

    rows = [[name, metric, value, r["samples"]] for name, r in results.items() for metric, value in r["metrics"].items()]
    out.table(f"{task_.name} dev · {output}", ["split", "metric", "value", "samples"], rows)
    out.log(f"Saved {output} ({result.steps} steps, {result.samples_per_second:.1f} samples/s)")
    out.result({**payload, "output": str(output), "train": run_info})


def _embedding_recipe(embeddings, hash_ngrams, hash_seed, hash_projection, lr, epochs, batch_size, max_seq_length,
                      max_train_samples, seed):
    """None for a plain fine-tune; else a full-precision recipe that only swaps the word embeddings."""
    from bebert_cli.quant.recipes import Recipe, check_hash_options, parse_ngrams

    ngrams = parse_ngrams(hash_ngrams)
    check_hash_options(ngrams, hash_seed)  # even when unused: a bad value is a usage error, not ignored
    if embeddings == "table":
        return None
    return Recipe(f"finetune-{embeddings}", weight_bits=32, activation_bits=32, embeddings=embeddings, distill=(),
                  epochs=epochs, lr=lr, batch_size=batch_size, max_seq_length=max_seq_length,
                  max_train_samples=max_train_samples, seed=seed, hash_ngrams=ngrams, hash_seed=hash_seed,
                  hash_projection=hash_projection, fp_dtype="float32").validate()


def register(app: typer.Typer) -> None:
    app.command("finetune", epilog=opt.examples(
        "bebert finetune sentence-transformers/all-MiniLM-L6-v2 --task sst2 -o teacher/",
        "bebert finetune MODEL_DIR --task sst2 -o teacher/ --max-train-samples 8000 --epochs 1   # the demo's budget",
        "bebert finetune MODEL_DIR -o tickets-fp/ --train-file train.csv --validation-file dev.csv --label-column queue",
        "bebert finetune MODEL_DIR --task mrpc -o teacher/ --resume                              # continue a stopped run",
    ))(finetune_command)
