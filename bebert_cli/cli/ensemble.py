"""`bebert ensemble`: a BEBERT ensemble of binary members (AdaBoost or bagging), or of finished checkpoints.

    bebert ensemble TEACHER -o ENS --task sst2 [--members 2] [--strategy adaboost|bagging]
                    [--recipe bibert|bit|w1a4|w1a8] [--distill none|logits,hidden,...] [recipe overrides]
    bebert ensemble --from OUT1 OUT2 ... -o ENS --task sst2
"""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from bebert_cli.cli import choices
from bebert_cli.cli import options as opt
from bebert_cli.quant.recipes import DEFAULT_RECIPE

Int = Optional[int]
_TRAINING_ONLY = ("members", "strategy", "recipe", "weight_bits", "activation_bits", "embedding_bits", "embeddings",
                  "hash_ngrams", "hash_seed", "hash_projection", "activation_mode", "attention", "distill", "epochs", "lr",
                  "batch_size", "fp_dtype", "resume", "group_by_length")


@opt.data_options
@opt.quant_options
def ensemble_command(
    sources: Annotated[Optional[List[str]], typer.Argument(
        metavar="TEACHER | CHECKPOINT...",
        help="The fine-tuned teacher to train members from; with --from, the packed checkpoints to combine.",
        show_default=False)] = None,
    output: opt.OutputDir = ...,
    from_: Annotated[bool, typer.Option("--from", help="Combine already binarized checkpoints (the arguments) instead of "
                                                       "training; member weights are fitted on a held-out slice of train.")] = False,
    members: Annotated[Int, typer.Option("--members", min=1, show_default="2", help="Number of members to train.")] = None,
    strategy: Annotated[Optional[choices.Strategy], typer.Option(
        "--strategy", case_sensitive=False, show_default="adaboost",
        help="adaboost (each member trains on a resample weighted to the previous members' mistakes) or bagging "
             "(bootstrap resamples).")] = None,
    recipe: Annotated[Optional[choices.RecipeName], typer.Option(
        "--recipe", case_sensitive=False, show_default=DEFAULT_RECIPE, help="The members' recipe (as in binarize).")] = None,
    distill: Annotated[Optional[str], typer.Option(
        "--distill", show_default="none (BEBERT: members learn from hard labels, no teacher)",
        autocompletion=choices.comma_list_completer(("logits", "hidden", "dmd", "none")),
        help="Distillation for the members: none or a comma list of logits, hidden, dmd.")] = None,
    quant=None,  # @quant_options: --weight-bits ... --attention
    epochs: opt.RecipeEpochs = None,
    lr: opt.RecipeLr = None,
    batch_size: opt.RecipeBatchSize = None,
    max_seq_length: opt.RecipeMaxSeqLength = None,
    max_train_samples: opt.MaxTrainSamples = None,
    seed: Annotated[Int, typer.Option("--seed", show_default=opt.recipe_default("seed"),
                                      help="Base seed; member k trains with seed + k (and its resample).")] = None,
    fp_dtype: opt.FpDtype = None,
    group_by_length: opt.GroupByLength = None,
    mixed_precision: opt.MixedPrecision = choices.MixedPrecisionMode.auto,
    eval_batch_size: opt.EvalBatchSizeOpt = 64,
    save_every: opt.SaveEvery = 200,
    overwrite: opt.Overwrite = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run: finished members are kept, "
                                                          "the next one resumes from its saved state.")] = False,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    cpu: opt.Cpu = False,
    data=None,
):
    """Train a BEBERT ensemble of binary members (AdaBoost or bagging), or combine finished checkpoints (--from)."""
    params = {**locals(), **quant}
    from bebert_cli.cli.output import Output
    from bebert_cli.errors import UsageError
    from bebert_cli.workflows import ensemble as workflow
    from bebert_cli.workflows.context import RunContext

    out = Output(json_mode=json_out, quiet=quiet)
    data.check()
    sources = list(sources or [])
    ctx = RunContext(out, output, data, overwrite=overwrite, resume=resume, save_every=save_every,
                     eval_batch_size=eval_batch_size, mixed_precision=mixed_precision, cpu=cpu,
                     trust_remote_code=trust_remote_code)

    if from_:
        given = [name for name in _TRAINING_ONLY if params[name] not in (None, False)]
        if given:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            raise UsageError(f"{flags}: training option(s) do not apply to --from (it combines finished checkpoints)")
        if len(sources) < 2:
            raise UsageError("--from needs at least two packed checkpoints: bebert ensemble --from OUT1 OUT2 -o ENS --task T")
        result = workflow.combine(ctx, sources, max_seq_length=max_seq_length, max_train_samples=max_train_samples,
                                  seed=seed)
    else:
        if len(sources) != 1:
            raise UsageError("give exactly one TEACHER to train members from, or --from OUT1 OUT2 ... to combine checkpoints")
        strategy_ = (strategy or "adaboost").lower()
        from bebert_cli.quant.recipes import resolve_recipe

        rec = resolve_recipe(
            recipe or DEFAULT_RECIPE, **quant,
            distill=distill if distill is not None else "none",  # BEBERT: members train without distillation
            epochs=epochs, lr=lr, batch_size=batch_size, max_seq_length=max_seq_length,
            max_train_samples=max_train_samples, seed=seed, fp_dtype=fp_dtype, group_by_length=group_by_length,
        )
        result = workflow.train_ensemble(ctx, sources[0], rec, members=members or 2, strategy=strategy_)

    metric = result["main_metric"]
    rows = [[m["path"], m.get("recipe", ""), m["weight"], "" if m.get("error") is None else m["error"],
             m["main_value"]] for m in result["members"]]
    rows.append(["ensemble", "", "", "", result["main_value"]])
    teacher = result.get("teacher_evaluation") or {}
    if teacher.get("main_value") is not None:
        rows.append(["teacher", "", "", "", teacher["main_value"]])
    out.table(f"{result['task']} dev · {output}", ["model", "recipe", "weight", "error", metric], rows)
    if result.get("bytes") is not None:
        out.log(f"Saved {output}: {len(result['members'])} members, {result['bytes']['disk'] / 1e6:.2f} MB on disk")
    out.result(result, "ensemble")


def register(app: typer.Typer) -> None:
    app.command("ensemble", epilog=opt.examples(
        "bebert ensemble teacher/ -o ens/ --members 2                # BEBERT: AdaBoost, no distillation",
        "bebert ensemble teacher/ -o ens/ --strategy bagging --recipe bibert --distill logits,hidden",
        "bebert ensemble --from student-a/ student-b/ -o ens/        # combine finished binary checkpoints",
    ))(ensemble_command)
