"""A binary student and its training: built from a teacher, distilled once or through BiT's stages, rounded
for saving. The model-level steps `workflows.binarize` (and the ensemble members) put in order."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from bebert_cli.errors import TrainingError
from bebert_cli.quant.recipes import Recipe, student_heads
from bebert_cli.tasks import GlueTask


@dataclass
class StudentRun:
    student: object
    plan: object
    train_result: object
    dev: dict  # split -> {"metrics", "samples"}


def _smaller_student(teacher, recipe: Recipe):
    """A randomly initialised student of the teacher's family with fewer layers and/or a smaller width."""
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.families import family

    cfg = copy.deepcopy(teacher.config)
    fam = family(cfg)
    if recipe.student_layers:
        setattr(cfg, fam.layers_key, recipe.student_layers)
    if recipe.student_width:
        setattr(cfg, fam.hidden_key, recipe.student_width)
        setattr(cfg, fam.ffn_key, 4 * recipe.student_width)
        setattr(cfg, fam.heads_key, student_heads(recipe.student_width))
        if fam.embedding_key and hasattr(cfg, fam.embedding_key):
            setattr(cfg, fam.embedding_key, recipe.student_width)
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
    from bebert_cli.evaluation import evaluate
    from bebert_cli.pipeline import main_score
    from bebert_cli.quant.distill import Distiller
    from bebert_cli.reproducibility import seed_all
    from bebert_cli.training import TrainConfig, train

    seed_all(recipe.seed)  # before a smaller student or hashed embeddings draw their initial weights
    if student is None:
        student, plan = make_student(teacher, recipe, tokenizer)
    teacher.to(accelerator.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    distiller = Distiller(student, teacher if recipe.distill else None, recipe.distill,
                          regression=task.is_regression, hard_label_weight=recipe.hard_label_weight,
                          temperature=recipe.temperature, hidden_layers=recipe.hidden_layers)

    def loss_fn(model, batch):
        with accelerator.autocast():
            return distiller(model, batch)

    def select_fn(model):
        metrics, _ = evaluate(model, task, data.select, data.collator, batch_size=eval_batch_size, device=accelerator.device)
        return main_score(task, metrics)

    cfg = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed,
                      save_every=save_every, warmup_ratio=recipe.warmup_ratio, group_by_length=recipe.group_by_length,
                      scale_lr=recipe.scale_lr)
    try:
        result = train(student, train_ds=train_ds if train_ds is not None else data.train, collator=data.collator, cfg=cfg,
                       loss_fn=loss_fn, accelerator=accelerator, work_dir=work_dir, resume=resume,
                       select_fn=select_fn if data.select is not None else None, output=out,
                       description=description or f"binarize {recipe.name}",
                       fingerprint={"recipe": recipe.to_dict(), **(fingerprint or {})},
                       scale_params=activation_scale_names(student))
    finally:
        distiller.close()
    student = accelerator.unwrap_model(student, keep_fp32_wrapper=False)
    return student, plan, result


def activation_scale_names(model) -> set[str]:
    """Parameters of the activation quantizers (elastic alpha/beta, LSQ steps): trained at recipe.scale_lr."""
    from bebert_cli.quant.quantizers import BinaryActivation, LsqActivation

    return {f"{mname}.{pname}" for mname, m in model.named_modules() if isinstance(m, (BinaryActivation, LsqActivation))
            for pname, _ in m.named_parameters(recurse=False)}


STAGE_FILE = "stage_student.safetensors"  # a finished stage's student, in its training form


def stage_dir(work_dir: Path, recipe: Recipe, index: int) -> Path:
    return Path(work_dir) / f"stage-{index + 1}-{recipe.stages[index]}"


def init_from_student(student, previous) -> int:
    """Copy `previous`'s latent weights, biases, norms and embeddings into `student` (same architecture,
    other activation quantizers). The quantizers' own parameters are not copied: a 2-bit step or a
    binary scale is not a 4-bit one, and left uninitialised they calibrate on the first batch."""
    from bebert_cli.format import is_quantizer_tensor

    src = previous.state_dict()
    dst = student.state_dict()
    copied = {k: src[k] for k, v in dst.items() if not is_quantizer_tensor(k) and k in src and src[k].shape == v.shape}
    student.load_state_dict(copied, strict=False)
    return len(copied)


def train_stages(teacher, tokenizer, task: GlueTask, recipe: Recipe, data, *, accelerator, work_dir: Path, out,
                 save_every: int, eval_batch_size: int, train_ds=None, fingerprint: dict | None = None):
    """Multi-step distillation (BiT): one student per stage of recipe.stages, each initialised from the
    previous stage's student, which then teaches it (the first is taught by `teacher`).

    Stage k trains in `work_dir/stage-k-w1aK/`; once finished its student is kept there in training form
    (safetensors) and the next stage starts. A resumed run reloads the finished stages and resumes the
    stage that was interrupted, from its own saved state. Returns (student, plan, result, stages log).
    """
    import dataclasses
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import save

    from bebert_cli.atomic import atomic_write_bytes
    from bebert_cli.quant.recipes import stage_recipe
    from bebert_cli.training import BEST_FILE, STATE_FILE

    kept = [f.name for f in dataclasses.fields(_StageResult)]
    chain_teacher, previous, log = teacher, None, []
    student = plan = result = None
    for k, stage in enumerate(recipe.stages):
        srec = stage_recipe(recipe, k)
        swork = stage_dir(work_dir, recipe, k)
        torch.manual_seed(srec.seed)
        student, plan = make_student(teacher, srec, tokenizer)  # the shape of the fp teacher, this stage's quantizers
        if previous is not None:
            init_from_student(student, previous)
        finished = swork / STAGE_FILE
        if finished.is_file():
            try:
                with safe_open(str(finished), framework="pt") as f:
                    state = {key: f.get_tensor(key) for key in f.keys()}
                    info = json.loads((f.metadata() or {})["stage"])
                student.load_state_dict(state, strict=True)
            except Exception as exc:
                raise TrainingError(f"cannot reload the finished stage {finished}: {exc}; start over with --overwrite") from None
            if info.get("recipe") != json.loads(json.dumps(srec.to_dict())):
                raise TrainingError(f"the finished stage in {swork} is from a run with different settings; "
                                    "rerun with the same options, or start over with --overwrite")
            out.log(f"stage {k + 1}/{len(recipe.stages)} ({stage}) already finished; reloaded from {finished}")
            result = _StageResult(**info["result"])
        else:
            student, plan, result = train_student(
                chain_teacher, tokenizer, task, srec, data, accelerator=accelerator, work_dir=swork,
                resume=(swork / STATE_FILE).exists(), out=out, save_every=save_every, eval_batch_size=eval_batch_size,
                train_ds=train_ds, student=student, plan=plan,
                description=f"stage {k + 1}/{len(recipe.stages)} {stage}",
                fingerprint={**(fingerprint or {}), "stages": list(recipe.stages), "stage": k})
            info = {"recipe": srec.to_dict(), "result": {f: getattr(result, f) for f in kept}}
            if accelerator.is_main_process:
                tensors = {key: v.detach().cpu().contiguous().clone() for key, v in student.state_dict().items()}
                atomic_write_bytes(finished, save(tensors, metadata={"stage": json.dumps(info)}))
                for leftover in (STATE_FILE, BEST_FILE):  # the finished student supersedes them
                    (swork / leftover).unlink(missing_ok=True)
            accelerator.wait_for_everyone()
        log.append({"stage": stage, "recipe": srec.name, "teacher": "teacher" if k == 0 else log[-1]["recipe"],
                    **info["result"]})
        # The finished student, as it is (training form, in memory), teaches the next stage.
        student.to(accelerator.device)
        chain_teacher, previous = student, student
    return student, plan, result, log


@dataclass
class _StageResult:
    """What the stages log keeps of a stage's TrainResult (also what a reloaded stage reports)."""
    steps: int
    best_score: float | None
    best_epoch: int | None
    samples_per_second: float
    train_seconds: float


def finalize_student(student, recipe: Recipe):
    """Round kept-full-precision tensors to their storage dtype: the evaluated model is the saved one."""
    from bebert_cli.quant.packed import round_full_precision_

    student.eval()
    round_full_precision_(student, recipe.fp_dtype)
    return student
