"""Training a binary student from a teacher: the work behind `bebert binarize` (and ensemble members)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from bebert_cli.quant.recipes import Recipe
from bebert_cli.tasks import GlueTask


@dataclass
class StudentRun:
    student: object
    plan: object
    train_result: object
    dev: dict  # split -> {"metrics", "samples"}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _smaller_student(teacher, recipe: Recipe):
    """A randomly initialised student of the teacher's family with fewer layers and/or a smaller width."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(teacher.config)
    if cfg.model_type == "distilbert":
        if recipe.student_layers:
            cfg.n_layers = recipe.student_layers
        if recipe.student_width:
            cfg.dim, cfg.hidden_dim = recipe.student_width, 4 * recipe.student_width
            cfg.n_heads = max(1, recipe.student_width // 64)
    else:
        if recipe.student_layers:
            cfg.num_hidden_layers = recipe.student_layers
        if recipe.student_width:
            cfg.hidden_size, cfg.intermediate_size = recipe.student_width, 4 * recipe.student_width
            cfg.num_attention_heads = max(1, recipe.student_width // 64)
            if hasattr(cfg, "embedding_size"):
                cfg.embedding_size = recipe.student_width
    return AutoModelForSequenceClassification.from_config(cfg)


def make_student(teacher, recipe: Recipe, tokenizer):
    from bebert_cli.quant.convert import quantize_

    if recipe.student_layers or recipe.student_width:
        student = _smaller_student(teacher, recipe)
    else:
        student = copy.deepcopy(teacher)
        # The teacher is frozen while it teaches; its copy must not inherit that.
        for p in student.parameters():
            p.requires_grad_(True)
    vocab = None
    if recipe.embeddings == "hash":
        from bebert_cli.quant.hash_embedding import tokens_from_vocab

        vocab = tokens_from_vocab(tokenizer.get_vocab())
    plan = quantize_(student, recipe, vocab=vocab)
    return student, plan


def train_student(teacher, tokenizer, task: GlueTask, recipe: Recipe, data, *, accelerator, work_dir: Path, resume: bool,
                  out, save_every: int, eval_batch_size: int, train_ds=None, description: str | None = None,
                  fingerprint: dict | None = None, student=None, plan=None):
    """Train (or resume) one student on `train_ds` (default: data.train); returns (student, plan, result)."""
    import torch

    from bebert_cli.evaluation import evaluate
    from bebert_cli.pipeline import main_score
    from bebert_cli.quant.distill import Distiller
    from bebert_cli.training import TrainConfig, train

    torch.manual_seed(recipe.seed)
    if student is None:
        student, plan = make_student(teacher, recipe, tokenizer)
    teacher.to(accelerator.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    distiller = Distiller(student, teacher if recipe.distill else None, recipe.distill,
                          regression=task.is_regression, hard_label_weight=recipe.hard_label_weight)

    def loss_fn(model, batch):
        with accelerator.autocast():
            return distiller(model, batch)

    def select_fn(model):
        metrics, _ = evaluate(model, task, data.select, data.collator, batch_size=eval_batch_size, device=accelerator.device)
        return main_score(task, metrics)

    cfg = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed, save_every=save_every)
    try:
        result = train(student, train_ds=train_ds if train_ds is not None else data.train, collator=data.collator, cfg=cfg,
                       loss_fn=loss_fn, accelerator=accelerator, work_dir=work_dir, resume=resume,
                       select_fn=select_fn if data.select is not None else None, output=out,
                       description=description or f"binarize {recipe.name}",
                       fingerprint={"recipe": recipe.to_dict(), **(fingerprint or {})})
    finally:
        distiller.close()
    student = accelerator.unwrap_model(student, keep_fp32_wrapper=False)
    return student, plan, result


def finalize_student(student, recipe: Recipe):
    """Round kept-full-precision tensors to their storage dtype: the evaluated model is the saved one."""
    from bebert_cli.quant.packed import round_full_precision_

    student.eval()
    round_full_precision_(student, recipe.fp_dtype)
    return student


def run_binarize(teacher_path: str, task: GlueTask, output: Path, recipe: Recipe, *, out, data_dir, overwrite: bool,
                 resume: bool, save_every: int, eval_batch_size: int, mixed_precision: str = "no", cpu: bool = False,
                 trust_remote_code: bool = False, revision: str | None = None) -> dict:
    from bebert_cli.models import load_classifier, load_tokenizer, save_tokenizer_compact
    from bebert_cli.pipeline import (
        EVAL_FILE, RUN_FILE, evaluate_splits, eval_payload, load_eval_split, load_train_data, make_accelerator, write_json,
    )
    from bebert_cli.quant.packed import save_packed
    from bebert_cli.report.card import write_model_card
    from bebert_cli.runner import environment_info, publish, training_run

    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision)
    tokenizer = load_tokenizer(teacher_path, trust_remote_code=trust_remote_code, revision=revision)
    teacher = load_classifier(teacher_path, task, new_head=False, trust_remote_code=trust_remote_code, revision=revision)
    data = load_train_data(task, tokenizer, data_dir=data_dir, max_seq_length=recipe.max_seq_length,
                           max_train_samples=recipe.max_train_samples, seed=recipe.seed)
    dev = load_eval_split(task, "dev", tokenizer, data_dir=data_dir, max_seq_length=recipe.max_seq_length)

    with training_run(output, overwrite=overwrite, resume=resume, accelerator=accelerator) as work:
        out.log(f"Binarizing {teacher_path} with recipe {recipe.name} ({recipe.bits_label}) on {task.name}: "
                f"{len(data.train)} training rows, {len(data.select) if data.select is not None else 0} held out")
        student, plan, result = train_student(
            teacher, tokenizer, task, recipe, data, accelerator=accelerator, work_dir=work, resume=resume, out=out,
            save_every=save_every, eval_batch_size=eval_batch_size,
            fingerprint={"teacher": str(teacher_path), "task": task.name,
                         **({"data": task.to_dict()} if getattr(task, "source", "glue") != "glue" else {})})
        finalize_student(student, recipe)
        with out.progress(accelerator.is_main_process) as progress:
            results = evaluate_splits(student, task, dev, data.collator, batch_size=eval_batch_size, progress=progress,
                                      device=accelerator.device)
            teacher_results = evaluate_splits(teacher, task, dev, data.collator, batch_size=eval_batch_size,
                                              progress=progress, device=accelerator.device)
        payload = eval_payload(task, results, model=str(output), split="dev", max_seq_length=recipe.max_seq_length,
                               recipe=recipe.name, bits=recipe.bits_label)
        teacher_payload = eval_payload(task, teacher_results, model=str(teacher_path), split="dev",
                                       max_seq_length=recipe.max_seq_length)
        run_info = {
            "command": "binarize", "teacher": str(teacher_path), "task": task.name, "recipe": recipe.to_dict(),
            **({"data": task.to_dict()} if hasattr(task, "to_dict") else {}),
            "max_seq_length": recipe.max_seq_length, "train_rows": len(data.train),
            "selection": {"held_out_rows": len(data.select) if data.select is not None else 0,
                          "best_score": result.best_score, "best_epoch": result.best_epoch},
            "steps": result.steps, "samples_per_second": result.samples_per_second, "train_seconds": result.train_seconds,
            "mixed_precision": mixed_precision, "processes": accelerator.num_processes,
            "teacher_eval": teacher_payload, "environment": environment_info(),
        }
        sample_texts = [str(t) for t in load_eval_texts(dev, tokenizer)]

        def write(tmp):
            save_packed(student, tmp, recipe, plan)
            save_tokenizer_compact(tokenizer, tmp, sample_texts)
            write_json(tmp / EVAL_FILE, payload)
            write_json(tmp / RUN_FILE, run_info)
            write_model_card(tmp, name=Path(output).name)

        publish(output, write, overwrite=overwrite, accelerator=accelerator)

    return {**payload, "output": str(output), "size_bytes": dir_size(output), "teacher": teacher_payload,
            "train": {k: run_info[k] for k in ("steps", "samples_per_second", "train_seconds", "selection", "train_rows")}}


def load_eval_texts(dev: dict, tokenizer) -> list[str]:
    """Texts to check a compact tokenizer against: the dev inputs, decoded back from their ids."""
    ds = next(iter(dev.values()))
    n = min(500, len(ds))
    return [tokenizer.decode(list(ds[i]["input_ids"]), skip_special_tokens=True) for i in range(n)]
