"""`bebert finetune` from start to finish: a full-precision teacher with a new head, trained on the data
its options name, evaluated on dev and published (a plain Hugging Face checkpoint, or bebert's format
when its word embeddings are binary or hashed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bebert_cli.quant.recipes import DEFAULT_MAX_SEQ_LENGTH
from bebert_cli.training import TrainConfig
from bebert_cli.workflows.context import RunContext, held_out_rows


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """The options of `bebert finetune` that shape the training run."""
    train: TrainConfig  # epochs, lr, batch size, seed, length grouping (save_every: the run context's)
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    max_train_samples: int | None = None
    embeddings: str = "table"  # table (plain HF) | binary | hash (EELBERT)
    hash_ngrams: str = "3"
    hash_seed: int = 0
    hash_projection: bool = False
    group_by_length: bool = True


def finetune(ctx: RunContext, model: str, settings: FinetuneSettings) -> dict:
    """Fine-tune `model` into a classifier for the context's data and publish it at `ctx.output`;
    returns the command's result (`finetune_result`)."""
    from bebert_cli.dataspec import resolve
    from bebert_cli.models import load_config
    from bebert_cli.pipeline import eval_payload
    from bebert_cli.reproducibility import seed_all
    from bebert_cli.training import train

    s = settings
    recipe = embedding_recipe(s)  # usage errors (bad hash options) before any loading
    ctx.check_output()
    # A new head: the data decides the labels and their order (saved as the model's id2label).
    config = load_config(model, trust_remote_code=ctx.trust_remote_code, revision=ctx.revision)
    spec = dataclasses.replace(resolve(ctx.data, config=config, new_head=True, need_train=True),
                               max_seq_length=s.max_seq_length)
    for note in spec.notes:
        ctx.out.log(note)
    ctx.out.log(spec.describe())
    accelerator = ctx.start()
    tokenizer = ctx.load_tokenizer(model)
    seed_all(s.train.seed)  # before the new head (and any hashed embeddings) is initialised
    net = ctx.load_classifier(model, spec, new_head=True)
    plan = None
    if recipe is not None:  # an fp encoder with binary or hashed input embeddings (EELBERT)
        from bebert_cli.quant.student import make_student

        net, plan = make_student(net, recipe, tokenizer)
    cfg = dataclasses.replace(s.train, save_every=ctx.save_every)
    data, dev = ctx.load_data(spec, tokenizer, max_seq_length=s.max_seq_length, max_train_samples=s.max_train_samples,
                              seed=cfg.seed)

    def loss_fn(m, batch):
        return m(**batch).loss, {}

    with ctx.training_run() as work:
        ctx.out.log(f"Fine-tuning {model} on {spec.name}: {len(data.train)} training rows, "
                    f"{held_out_rows(data)} held out for model selection")
        result = train(net, train_ds=data.train, collator=data.collator, cfg=cfg, loss_fn=loss_fn,
                       accelerator=accelerator, work_dir=work, resume=ctx.resume, select_fn=ctx.select_fn(spec, data),
                       output=ctx.out, description=f"finetune {spec.name}",
                       fingerprint={"command": "finetune", "model": model, "task": spec.name,
                                    "max_seq_length": s.max_seq_length, "max_train_samples": s.max_train_samples,
                                    **({} if spec.source == "glue" else {"data": spec.to_dict()})})
        if recipe is not None:
            from bebert_cli.quant.student import finalize_student

            finalize_student(net, recipe)
        with ctx.out.progress(ctx.is_main) as progress:
            results = ctx.evaluate(net, spec, dev, data.collator, progress=progress)
        payload = eval_payload(spec, results, model=str(ctx.output), split="dev", max_seq_length=s.max_seq_length)
        run_info = finetune_run_info(model, spec, s, cfg, data, result)

        def write(tmp: Path):
            if plan is None:
                net.save_pretrained(tmp)
            else:  # not expressible as a plain HF checkpoint: bebert's self-describing format
                from bebert_cli.quant.packed import save_packed

                save_packed(net, tmp, recipe, plan)
            tokenizer.save_pretrained(tmp)
            ctx.write_records(tmp, payload, run_info)

        ctx.publish(write)

    return finetune_result(payload, run_info, output=ctx.output)


def embedding_recipe(s: FinetuneSettings):
    """None for a plain fine-tune; else a full-precision recipe that only swaps the word embeddings."""
    from bebert_cli.quant.recipes import Recipe, check_hash_options, parse_ngrams

    ngrams = parse_ngrams(s.hash_ngrams)
    check_hash_options(ngrams, s.hash_seed)  # even when unused: a bad value is a usage error, not ignored
    if s.embeddings == "table":
        return None
    return Recipe(f"finetune-{s.embeddings}", weight_bits=32, activation_bits=32, embeddings=s.embeddings, distill=(),
                  epochs=s.train.epochs, lr=s.train.lr, batch_size=s.train.batch_size, max_seq_length=s.max_seq_length,
                  max_train_samples=s.max_train_samples, seed=s.train.seed, hash_ngrams=ngrams, hash_seed=s.hash_seed,
                  hash_projection=s.hash_projection, fp_dtype="float32").validate()


def finetune_run_info(model: str, spec, s: FinetuneSettings, cfg, data, result) -> dict:
    """bebert_run.json of a fine-tuned teacher: how it was made."""
    from bebert_cli.report.lineage import lineage
    from bebert_cli.runner import environment_info

    return {
        "command": "finetune", "base_model": model, "task": spec.name, "data": spec.to_dict(),
        "max_seq_length": s.max_seq_length,
        "max_train_samples": s.max_train_samples, "train": cfg.__dict__, "train_rows": len(data.train),
        "selection": {"held_out_rows": held_out_rows(data),
                      "best_score": result.best_score, "best_epoch": result.best_epoch},
        "steps": result.steps, "samples_per_second": result.samples_per_second,
        "train_seconds": result.train_seconds, "environment": environment_info(),
        "lineage": lineage(model),  # license and Hub base model, for the card
    }


def finetune_result(payload: dict, run_info: dict, *, output: Path) -> dict:
    """What `bebert finetune --json` prints (docs/json.md): the dev payload, where it went and its size, the
    base model, and how it was trained (the same facts as binarize's `train`)."""
    from bebert_cli.schema import size_payload

    return {**payload, "output": str(output), **size_payload(output), "base_model": run_info["base_model"],
            "train": {k: run_info[k] for k in ("steps", "samples_per_second", "train_seconds", "selection", "train_rows")}}
