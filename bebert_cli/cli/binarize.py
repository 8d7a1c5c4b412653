"""`bebert binarize`: distill a fine-tuned teacher into a binary student and save it packed."""

from __future__ import annotations

from typing import Annotated

import typer

from bebert_cli.cli import choices
from bebert_cli.cli import options as opt
from bebert_cli.quant.recipes import DEFAULT_RECIPE


@opt.data_options
@opt.quant_options
def binarize_command(
    teacher: Annotated[str, typer.Argument(help="Fine-tuned full-precision checkpoint (the teacher).")],
    output: opt.OutputDir,
    recipe: opt.RecipeChoice = choices.RecipeName(DEFAULT_RECIPE),
    quant=None,  # @quant_options: --weight-bits ... --attention
    distill: opt.Distill = None,
    epochs: opt.RecipeEpochs = None,
    lr: opt.RecipeLr = None,
    batch_size: opt.RecipeBatchSize = None,
    max_seq_length: opt.RecipeMaxSeqLength = None,
    max_train_samples: opt.MaxTrainSamples = None,
    seed: opt.RecipeSeed = None,
    fp_dtype: opt.FpDtype = None,
    student_layers: opt.StudentLayers = None,
    student_width: opt.StudentWidth = None,
    group_by_length: opt.GroupByLength = None,
    warmup_ratio: opt.WarmupRatio = None,
    temperature: opt.Temperature = None,
    scale_lr: opt.ScaleLr = None,
    hidden_layers: opt.HiddenLayers = None,
    stages: opt.Stages = None,
    augment: opt.Augment = None,
    augment_top_k: opt.AugmentTopK = None,
    augment_prob: opt.AugmentProb = None,
    mixed_precision: opt.MixedPrecision = choices.MixedPrecisionMode.auto,
    eval_batch_size: opt.EvalBatchSizeOpt = 64,
    save_every: opt.SaveEvery = 200,
    overwrite: opt.Overwrite = False,
    resume: opt.Resume = False,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    cpu: opt.Cpu = False,
    data=None,
):
    """Binarize a fine-tuned checkpoint by distillation and write a packed checkpoint."""
    from bebert_cli.cli.output import Output
    from bebert_cli.quant.recipes import resolve_recipe
    out = Output(json_mode=json_out, quiet=quiet)
    data.check()
    rec = resolve_recipe(
        recipe, **quant, distill=distill, epochs=epochs, lr=lr,
        batch_size=batch_size, max_seq_length=max_seq_length, max_train_samples=max_train_samples, seed=seed,
        fp_dtype=fp_dtype, student_layers=student_layers, student_width=student_width,
        group_by_length=group_by_length, warmup_ratio=warmup_ratio, temperature=temperature, scale_lr=scale_lr,
        hidden_layers=hidden_layers, stages=stages, augment=augment, augment_top_k=augment_top_k,
        augment_prob=augment_prob,
    )

    from bebert_cli.workflows.binarize import binarize
    from bebert_cli.workflows.context import RunContext

    ctx = RunContext(out, output, data, overwrite=overwrite, resume=resume, save_every=save_every,
                     eval_batch_size=eval_batch_size, mixed_precision=mixed_precision, cpu=cpu,
                     trust_remote_code=trust_remote_code)
    result = binarize(ctx, teacher, rec)
    rows = []
    for name, r in result["splits"].items():
        for metric, value in r["metrics"].items():
            t = (result.get("teacher_evaluation") or {}).get("splits", {}).get(name, {}).get("metrics", {}).get(metric)
            rows.append([name, metric, value, "" if t is None else t, r["samples"]])
    out.table(f"{result['task']} dev · {rec.name} ({rec.bits_label}) · {output}", ["split", "metric", "student", "teacher", "samples"], rows)
    out.log(f"Saved {output}: {result['bytes']['disk'] / 1e6:.2f} MB on disk")
    out.result(result, "binarize")


def register(app: typer.Typer) -> None:
    app.command("binarize", epilog=opt.examples(
        "bebert binarize teacher/ -o student/                   # the default recipe, on the teacher's own data",
        "bebert binarize teacher/ -o bibert/ --recipe bibert --epochs 10   # fully binary 1-1-1: needs long training",
        "bebert binarize teacher/ -o hashed/ --embeddings hash  # EELBERT: no embedding table stored",
        "bebert binarize teacher/ -o student/ --resume          # continue an interrupted run",
        "torchrun --nproc_per_node 2 -m bebert_cli binarize teacher/ -o student/   # data-parallel",
    ))(binarize_command)
