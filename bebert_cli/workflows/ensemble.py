"""`bebert ensemble` from start to finish: train members from a teacher round by round and publish the
ensemble (`train_ensemble`), or combine finished packed checkpoints with weights fitted on the held-out
slice (`combine`). One round of training, the resumable state and the member checks are `ensemble/train.py`'s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from bebert_cli.errors import ModelError, UsageError
from bebert_cli.quant.recipes import DEFAULT_MAX_SEQ_LENGTH, Recipe
from bebert_cli.workflows.context import RunContext, held_out_rows, sample_texts


def train_ensemble(ctx: RunContext, teacher_path: str, recipe: Recipe, *, members: int, strategy: str) -> dict:
    """Train `members` binary members from `teacher_path` and publish the ensemble directory `ctx.output`;
    returns the command's result (`ensemble_result`)."""
    from bebert_cli.ensemble.model import EnsembleModel, combination_for, write_manifest
    from bebert_cli.ensemble.train import PACKED_SUBDIR, STRATEGIES, MemberTrainer, _digest, load_state
    from bebert_cli.files import dir_size
    from bebert_cli.models import save_tokenizer_compact
    from bebert_cli.pipeline import eval_payload
    from bebert_cli.quant.packed import fastest_runtime, load_packed

    ctx.check_output()
    spec = ctx.teacher_spec(teacher_path, recipe.max_seq_length)
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be adaboost or bagging, not {strategy!r}")
    if members < 1:
        raise UsageError("--members must be at least 1")
    accelerator = ctx.start()
    tokenizer = ctx.load_tokenizer(teacher_path)
    teacher = ctx.load_classifier(teacher_path, spec, new_head=False)
    data, dev = ctx.load_data(spec, tokenizer, max_seq_length=recipe.max_seq_length,
                              max_train_samples=recipe.max_train_samples, seed=recipe.seed)
    n = len(data.train)
    fingerprint = {"teacher": str(teacher_path), "task": spec.name, "strategy": strategy, "recipe": recipe.to_dict(),
                   **({"data": spec.to_dict()} if getattr(spec, "source", "glue") != "glue" else {}),
                   "train_rows": n, "labels": _digest(np.asarray(data.train["labels"]))}

    with ctx.training_run() as work:
        state = load_state(work, fingerprint, n, resume=ctx.resume, members=members)
        if ctx.is_main:
            work.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        done = len(state["members"])
        ctx.out.log(f"Ensemble of {members} {recipe.name} ({recipe.bits_label}) members by {strategy} from "
                    f"{teacher_path} on {spec.name}: {n} training rows, {held_out_rows(data)} held out; distillation "
                    f"{'+'.join(recipe.distill) if recipe.distill else 'off'}"
                    + (f"; resuming after {done} finished member(s)" if done else ""))
        texts = sample_texts(dev, tokenizer)
        trainer = MemberTrainer(teacher, teacher_path, tokenizer, spec, recipe, strategy, members, data, dev, work,
                                accelerator, ctx.out, ctx.save_every, ctx.eval_batch_size, texts)
        for m in range(done, members):
            trainer.train(m, state)

        records = state["members"][:members]
        runtime = fastest_runtime(accelerator.device)
        models = [load_packed(work / r["path"] / PACKED_SUBDIR, runtime=runtime) for r in records]
        ensemble = EnsembleModel(models, [r["weight"] for r in records], combination=combination_for(spec.num_labels))
        ensemble.to(accelerator.device)
        with ctx.out.progress(ctx.is_main) as progress:
            results = ctx.evaluate(ensemble, spec, dev, data.collator, progress=progress)
            teacher_results = ctx.evaluate(teacher, spec, dev, data.collator, progress=progress)
        payload = eval_payload(spec, results, model=str(ctx.output), split="dev", max_seq_length=recipe.max_seq_length,
                               strategy=strategy, members=members, recipe=recipe.name, bits=recipe.bits_label)
        teacher_payload = eval_payload(spec, teacher_results, model=str(teacher_path), split="dev",
                                       max_seq_length=recipe.max_seq_length)
        members_size = sum(dir_size(work / r["path"] / PACKED_SUBDIR) for r in records)
        run_info = ensemble_run_info(ctx, teacher_path, spec, recipe, strategy, members, records, n, held_out_rows(data),
                                     members_size, teacher_payload)
        manifest_members = [{k: r[k] for k in ("path", "weight", "recipe", "error", "chance", "seed", "bits", "main_value",
                                               "train_rows", "unique_rows", "train_seconds")} for r in records]

        def write(tmp: Path):
            for r in records:
                shutil.copytree(work / r["path"] / PACKED_SUBDIR, tmp / r["path"])
            write_manifest(tmp, task=spec.name, num_labels=spec.num_labels, strategy=strategy,
                           members=manifest_members, teacher=str(teacher_path))
            save_tokenizer_compact(tokenizer, tmp, texts)
            ctx.write_records(tmp, payload, run_info)

        ctx.publish(write)
        del ensemble, models

    return ensemble_result(payload, run_info, manifest_members, output=ctx.output, teacher_evaluation=teacher_payload,
                           trained=True)


def best_member(records: list, metric: str) -> dict:
    best = max(records, key=lambda r: r["main_value"])
    return {"path": best["path"], "main_metric": metric, "main_value": best["main_value"]}


def ensemble_run_info(ctx: RunContext, teacher_path: str, spec, recipe: Recipe, strategy: str, members: int,
                      records: list, train_rows: int, held_out: int, members_size: int, teacher_payload: dict) -> dict:
    """bebert_run.json of a trained ensemble: how it was made, member by member."""
    from bebert_cli.ensemble.model import combination_for
    from bebert_cli.report.lineage import lineage
    from bebert_cli.runner import environment_info

    accelerator, metric = ctx.accelerator, spec.main_metric
    member_train = [r["train_seconds"] for r in records]
    boost = sum(r["boost_seconds"] for r in records)
    return {
        "command": "ensemble", "teacher": str(teacher_path), "task": spec.name, "strategy": strategy,
        **({"data": spec.to_dict()} if hasattr(spec, "to_dict") else {}),
        "members": members, "combination": combination_for(spec.num_labels), "recipe": recipe.to_dict(),
        "distill": list(recipe.distill), "distillation": bool(recipe.distill), "max_seq_length": recipe.max_seq_length,
        "train_rows": train_rows, "held_out_rows": held_out, "member_seeds": [r["seed"] for r in records],
        "member_train_seconds": member_train, "member_round_seconds": [r.get("round_seconds") for r in records],
        "boosting_seconds": boost, "train_seconds": sum(member_train) + boost,
        "member_weights": [r["weight"] for r in records], "member_errors": [r["error"] for r in records],
        "member_main_values": [r["main_value"] for r in records],
        "best_member": best_member(records, metric),
        "members_size_bytes": members_size, "mixed_precision": accelerator.mixed_precision,
        "mixed_precision_reason": accelerator.bebert_precision_reason,
        "processes": accelerator.num_processes, "teacher_evaluation": teacher_payload, "environment": environment_info(),
        "lineage": lineage(teacher_path),
    }


def ensemble_result(payload: dict, run_info: dict, members: list, *, output: Path, teacher_evaluation: dict | None,
                    trained: bool) -> dict:
    """What `bebert ensemble --json` prints (trained or --from; docs/json.md): the dev payload, where it went and
    its size, its members, the teacher (--from: the members' one teacher, if they share it) and its scores (None
    for --from: nothing scored it) and, when trained, the training facts."""
    from bebert_cli.schema import size_payload, teacher_payload as teacher_entry

    result = {**payload, "output": str(output), **size_payload(output),
              **teacher_entry(run_info.get("teacher"), teacher_evaluation), "members": members,
              "best_member": run_info["best_member"]}
    if trained:
        result["train"] = {k: run_info[k] for k in ("train_seconds", "member_train_seconds", "boosting_seconds",
                                                     "distillation", "distill", "train_rows", "held_out_rows")}
    return result


# --------------------------------------------------------------------------------------------- --from


def combine(ctx: RunContext, paths: list, *, max_seq_length: int | None = None, max_train_samples: int | None = None,
            seed: int | None = None) -> dict:
    """Combine finished packed checkpoints into an ensemble at `ctx.output`, member weights fitted on the
    held-out slice of the training set; returns the command's result (`ensemble_result`)."""
    import os

    from bebert_cli.ensemble.boosting import heldout_weight
    from bebert_cli.ensemble.model import EnsembleModel, combination_for, write_manifest
    from bebert_cli.ensemble.train import copy_member, inspect_member, member_name, tokenizer_source
    from bebert_cli.evaluation import predict_logits
    from bebert_cli.models import load_tokenizer, save_tokenizer_compact
    from bebert_cli.pipeline import eval_payload
    from bebert_cli.quant.packed import fastest_runtime, load_packed

    if len(paths) < 2:
        raise UsageError("--from needs at least two packed checkpoints to combine")
    spec = ctx.teacher_spec(paths[0], max_seq_length or DEFAULT_MAX_SEQ_LENGTH)
    infos = [inspect_member(p, spec) for p in paths]
    real = [os.path.realpath(i.path) for i in infos]
    if len(set(real)) != len(real):
        raise UsageError("--from names the same checkpoint twice")
    first = infos[0]
    for info in infos[1:]:
        if (info.model_type, info.vocab_size) != (first.model_type, first.vocab_size):
            raise ModelError(f"{info.path} ({info.model_type}, vocabulary {info.vocab_size}) and {first.path} "
                             f"({first.model_type}, vocabulary {first.vocab_size}) cannot share one tokenizer")
    if len({(i.data_seed, i.recipe.max_train_samples) for i in infos}) > 1 and (seed is None or max_train_samples is None):
        ctx.out.warn("the checkpoints were trained on different data splits (seed / max train samples); the held-out "
                     f"slice of {first.path} is used to fit the weights and may overlap the others' training rows")
    ctx.check_output()
    seed = first.data_seed if seed is None else seed
    max_train_samples = first.recipe.max_train_samples if max_train_samples is None else max_train_samples
    seq = max_seq_length or max(i.max_seq_length for i in infos)
    tok_dir = tokenizer_source(first.path)
    tokenizer = load_tokenizer(str(tok_dir), trust_remote_code=ctx.trust_remote_code)
    accelerator = ctx.start(mixed_precision="no")  # nothing trains
    data, dev = ctx.load_data(spec, tokenizer, max_seq_length=seq, max_train_samples=max_train_samples, seed=seed)
    if data.select is None:
        raise UsageError("too few training rows to hold out a slice for fitting member weights (need at least 20); "
                         "raise --max-train-samples")
    labels = np.asarray(data.select["labels"])
    ctx.out.log(f"Combining {len(infos)} checkpoints for {spec.name}; member weights fitted on {len(labels)} held-out "
                f"training rows (seed {seed}, max train samples {max_train_samples})")

    models, records = [], []
    runtime = fastest_runtime(accelerator.device)
    with ctx.out.progress(ctx.is_main) as progress:
        for k, info in enumerate(infos):
            model = load_packed(info.path, runtime=runtime).to(accelerator.device)
            logits = predict_logits(model, data.select, data.collator, batch_size=ctx.eval_batch_size,
                                    device=accelerator.device)
            step = heldout_weight(logits, labels, regression=spec.is_regression, num_classes=spec.num_labels)
            if step.chance:
                ctx.out.warn(f"{info.path} is no better than chance on the held-out slice (error {step.error:.4f}); "
                             f"kept with weight {step.weight:g}")
            member_results = ctx.evaluate(model, spec, dev, data.collator, progress=progress)
            main_value = next(iter(member_results.values()))["metrics"][spec.main_metric]
            models.append(model)
            records.append({"path": member_name(k), "weight": step.weight, "recipe": info.recipe.name,
                            "error": step.error, "chance": step.chance, "source": str(info.path),
                            "bits": info.recipe.bits_label, "main_value": main_value})
        ensemble = EnsembleModel(models, [r["weight"] for r in records], combination=combination_for(spec.num_labels))
        results = ctx.evaluate(ensemble, spec, dev, data.collator, progress=progress)
    payload = eval_payload(spec, results, model=str(ctx.output), split="dev", max_seq_length=seq, strategy="from",
                           members=len(records))
    teachers = {i.teacher for i in infos}
    teacher = teachers.pop() if len(teachers) == 1 else None
    run_info = combine_run_info(spec, infos, records, seq, len(labels), seed, max_train_samples, teacher)
    texts = sample_texts(dev, tokenizer)

    def write(tmp: Path):
        for info, r in zip(infos, records):
            copy_member(info, tmp / r["path"], tokenizer=tokenizer, tokenizer_dir=tok_dir, sample_texts=texts)
        write_manifest(tmp, task=spec.name, num_labels=spec.num_labels, strategy="from", members=records,
                       teacher=teacher)
        save_tokenizer_compact(tokenizer, tmp, texts)
        ctx.write_records(tmp, payload, run_info)

    ctx.publish_locked(write)
    return ensemble_result(payload, run_info, records, output=ctx.output, teacher_evaluation=None, trained=False)


def combine_run_info(spec, infos: list, records: list, seq: int, held_out: int, seed: int, max_train_samples,
                     teacher: str | None) -> dict:
    """bebert_run.json of a --from ensemble: its sources and how their weights were fitted."""
    from bebert_cli.ensemble.model import combination_for
    from bebert_cli.report.lineage import lineage
    from bebert_cli.runner import environment_info

    metric = spec.main_metric
    return {
        "command": "ensemble", "strategy": "from", "task": spec.name, "sources": [str(i.path) for i in infos],
        **({"data": spec.to_dict()} if hasattr(spec, "to_dict") else {}),
        "members": len(records), "combination": combination_for(spec.num_labels), "max_seq_length": seq,
        "weights_fitted_on": {"held_out_rows": held_out, "seed": seed, "max_train_samples": max_train_samples},
        "member_weights": [r["weight"] for r in records], "member_errors": [r["error"] for r in records],
        "member_main_values": [r["main_value"] for r in records],
        "best_member": best_member(records, metric),
        "distillation": None, "train_seconds": 0.0, "teacher": teacher, "environment": environment_info(),
        "lineage": lineage(teacher if teacher else infos[0].path),
    }
