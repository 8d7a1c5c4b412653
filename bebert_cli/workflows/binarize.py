"""`bebert binarize` from start to finish: teacher and data, the student's training (one run or BiT's
stages), the final dev evaluation, and the packed checkpoint it publishes.

The model-level steps (building the student, one distillation run, the stage chain) live in
`quant/student.py`; this module only puts them in order.
"""

from __future__ import annotations

from pathlib import Path

from bebert_cli.quant.recipes import Recipe
from bebert_cli.workflows.context import RunContext, held_out_rows, sample_texts


def binarize(ctx: RunContext, teacher_path: str, recipe: Recipe) -> dict:
    """Distill `teacher_path` into a binary student by `recipe` and publish it packed at `ctx.output`;
    returns the command's result (`binarize_result`)."""
    from bebert_cli.files import dir_size
    from bebert_cli.models import save_tokenizer_compact
    from bebert_cli.pipeline import eval_payload
    from bebert_cli.quant.packed import save_packed
    from bebert_cli.quant.student import finalize_student, train_stages, train_student

    ctx.check_output()
    spec = ctx.teacher_spec(teacher_path, recipe.max_seq_length)
    accelerator = ctx.start()
    tokenizer = ctx.load_tokenizer(teacher_path)
    teacher = ctx.load_classifier(teacher_path, spec, new_head=False)
    data, dev = ctx.load_data(spec, tokenizer, max_seq_length=recipe.max_seq_length,
                              max_train_samples=recipe.max_train_samples, seed=recipe.seed)

    with ctx.training_run() as work:
        ctx.out.log(f"Binarizing {teacher_path} with recipe {recipe.name} ({recipe.bits_label}) on {spec.name}: "
                    f"{len(data.train)} training rows, {held_out_rows(data)} held out")
        train_ds = _training_rows(ctx, teacher, tokenizer, data, recipe)
        fingerprint = {"teacher": str(teacher_path), "task": spec.name,
                       **({"data": spec.to_dict()} if getattr(spec, "source", "glue") != "glue" else {})}
        stages = []
        common = dict(accelerator=accelerator, work_dir=work, out=ctx.out, save_every=ctx.save_every,
                      eval_batch_size=ctx.eval_batch_size, train_ds=train_ds, fingerprint=fingerprint)
        if recipe.stages:
            student, plan, result, stages = train_stages(teacher, tokenizer, spec, recipe, data, **common)
        else:
            student, plan, result = train_student(teacher, tokenizer, spec, recipe, data, resume=ctx.resume, **common)
        finalize_student(student, recipe)
        with ctx.out.progress(ctx.is_main) as progress:
            results = ctx.evaluate(student, spec, dev, data.collator, progress=progress)
            teacher_results = ctx.evaluate(teacher, spec, dev, data.collator, progress=progress)
        payload = eval_payload(spec, results, model=str(ctx.output), split="dev", max_seq_length=recipe.max_seq_length,
                               recipe=recipe.name, bits=recipe.bits_label)
        teacher_payload = eval_payload(spec, teacher_results, model=str(teacher_path), split="dev",
                                       max_seq_length=recipe.max_seq_length)
        run_info = binarize_run_info(ctx, teacher_path, spec, recipe, data, train_ds, result, stages, teacher_payload)
        texts = sample_texts(dev, tokenizer)

        def write(tmp: Path):
            save_packed(student, tmp, recipe, plan)
            save_tokenizer_compact(tokenizer, tmp, texts)
            ctx.write_records(tmp, payload, run_info)

        ctx.publish(write)

    return binarize_result(payload, teacher_payload, run_info, output=ctx.output, size_bytes=dir_size(ctx.output))


def _training_rows(ctx: RunContext, teacher, tokenizer, data, recipe: Recipe):
    """The training set, with the recipe's augmented copies (TinyBERT-style, soft labels only) when asked."""
    if not recipe.augment:
        return data.train
    from bebert_cli.augment import augment_dataset

    train_ds = augment_dataset(data.train, teacher.get_input_embeddings().weight, tokenizer, copies=recipe.augment,
                               top_k=recipe.augment_top_k, prob=recipe.augment_prob, seed=recipe.seed)
    copies = "1 augmented copy" if recipe.augment == 1 else f"{recipe.augment} augmented copies"
    ctx.out.log(f"Augmented: {len(train_ds)} training rows (each row and {copies}; soft labels only)")
    return train_ds


def binarize_run_info(ctx: RunContext, teacher_path: str, spec, recipe: Recipe, data, train_ds, result, stages: list,
                      teacher_payload: dict) -> dict:
    """bebert_run.json of a binary checkpoint: how it was made."""
    from bebert_cli.report.lineage import lineage
    from bebert_cli.runner import environment_info

    accelerator = ctx.accelerator
    return {
        "command": "binarize", "teacher": str(teacher_path), "task": spec.name, "recipe": recipe.to_dict(),
        **({"data": spec.to_dict()} if hasattr(spec, "to_dict") else {}),
        "max_seq_length": recipe.max_seq_length, "train_rows": len(train_ds), "stages": stages,
        "selection": {"held_out_rows": held_out_rows(data),
                      "best_score": result.best_score, "best_epoch": result.best_epoch},
        "steps": result.steps, "samples_per_second": result.samples_per_second,
        "train_seconds": sum(st["train_seconds"] for st in stages) if stages else result.train_seconds,
        "mixed_precision": accelerator.mixed_precision, "mixed_precision_reason": accelerator.bebert_precision_reason,
        "processes": accelerator.num_processes, "teacher_eval": teacher_payload, "environment": environment_info(),
        "lineage": lineage(teacher_path),
    }


def binarize_result(payload: dict, teacher_payload: dict, run_info: dict, *, output: Path, size_bytes: int) -> dict:
    """What `bebert binarize --json` prints: the dev payload, where it went, the teacher's scores, training facts."""
    return {**payload, "output": str(output), "size_bytes": size_bytes, "teacher": teacher_payload,
            "train": {k: run_info[k] for k in ("steps", "samples_per_second", "train_seconds", "selection", "train_rows")}}
