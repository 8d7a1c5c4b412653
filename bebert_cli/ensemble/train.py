"""`bebert ensemble`: train BEBERT ensemble members (AdaBoost or bagging), or combine finished ones.

Training (`run_ensemble`), in the run's work directory beside the output (`.ENS.bebert-run/`):

    ensemble_state.json      written atomically after every finished member: the sample weights
                             for the next round and the finished members (weight, error, times)
    member-K/                the resumable training state of member K while it trains
    member-K/packed/         member K once finished (a packed checkpoint), kept until publication

Round m (0-based) draws its training rows from the full training set (the held-out selection
slice is never trained on): AdaBoost resamples len(train) rows by the current sample weights,
bagging draws a uniform bootstrap, both with seed `recipe.seed + m`; the member trains with
`train_student` (distillation off unless --distill, seed `recipe.seed + m`), then AdaBoost scores
it on the FULL training set and updates its weight and the sample weights (see `boosting`).
`--resume` skips the members the state lists as finished and continues the next one, itself
resumed from its own saved state if it was interrupted mid-training.

`--from` (`run_from`): packed checkpoints of one task are copied in as members; each member's
weight is fitted on the held-out slice of the training set (`boosting.heldout_weight`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bebert_cli.atomic import atomic_write_bytes
from bebert_cli.errors import CheckpointError, ModelError, TrainingError, UsageError
from bebert_cli.quant.recipes import Recipe
from bebert_cli.tasks import GlueTask

STATE_FILE = "ensemble_state.json"
STATE_VERSION = 1
PACKED_SUBDIR = "packed"
MEMBER_FILES = ("config.json", "model.safetensors", "recipe.json", "eval_results.json", "bebert_run.json")
TOKENIZER_FILES = ("tokenizer_config.json", "vocab.txt", "tokenizer.json")
STRATEGIES = ("adaboost", "bagging")


def member_name(k: int) -> str:
    return f"member-{k}"


def _json_bytes(payload) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def _digest(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(values, dtype=np.float64)).tobytes()).hexdigest()[:16]


def member_seed(recipe: Recipe, k: int) -> int:
    return recipe.seed + k


def round_indices(strategy: str, sample_weights, n: int, seed: int) -> list[int]:
    from bebert_cli.ensemble.boosting import bootstrap_indices, resample_indices

    if strategy == "adaboost":
        return resample_indices(sample_weights, n, seed)
    return bootstrap_indices(n, seed)


def _read_state(path: Path, fingerprint: dict, n: int) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        ok = (isinstance(state, dict) and state.get("version") == STATE_VERSION and isinstance(state.get("members"), list)
              and isinstance(state.get("sample_weights"), list) and len(state["sample_weights"]) == n)
    except (ValueError, OSError) as exc:
        raise TrainingError(f"cannot read the ensemble state {path}: {exc}; start over with --overwrite") from None
    if not ok:
        raise TrainingError(f"the ensemble state {path} is malformed; start over with --overwrite")
    if state.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        raise TrainingError(f"the saved ensemble state in {path.parent} is from a run with different settings; "
                            "rerun with the same options, or start over with --overwrite")
    return state


def _sync_floats(accelerator, values: np.ndarray) -> np.ndarray:
    """Every process takes the main process's numbers (sample weights must agree bit for bit)."""
    if accelerator.num_processes == 1:
        return values
    import torch
    from accelerate.utils import broadcast

    t = torch.as_tensor(np.asarray(values, dtype=np.float64)).to(accelerator.device)
    return broadcast(t, from_process=0).cpu().numpy()


def run_ensemble(teacher_path: str, task: GlueTask, output: Path, recipe: Recipe, *, members: int, strategy: str, out,
                 data_dir, overwrite: bool, resume: bool, save_every: int, eval_batch_size: int,
                 mixed_precision: str = "auto", cpu: bool = False, trust_remote_code: bool = False,
                 revision: str | None = None) -> dict:
    """Train `members` binary members from `teacher_path` and publish the ensemble directory `output`."""
    from bebert_cli.atomic import atomic_output_dir
    from bebert_cli.ensemble.boosting import r2_step, samme_step
    from bebert_cli.ensemble.model import EnsembleModel, combination_for, write_manifest
    from bebert_cli.evaluation import predict_logits
    from bebert_cli.models import load_classifier, load_tokenizer, save_tokenizer_compact
    from bebert_cli.pipeline import (
        EVAL_FILE, RUN_FILE, evaluate_splits, eval_payload, load_eval_split, load_train_data, make_accelerator, write_json,
    )
    from bebert_cli.quant.packed import fast_inference_twin, fastest_runtime, load_packed, save_packed
    from bebert_cli.files import dir_size
    from bebert_cli.schema import size_payload
    from bebert_cli.schema import teacher_payload as teacher_entry
    from bebert_cli.quant.student import finalize_student, load_eval_texts, make_student, train_student
    from bebert_cli.report.card import write_model_card
    from bebert_cli.report.lineage import lineage
    from bebert_cli.reproducibility import seed_all
    from bebert_cli.runner import environment_info, publish, training_run
    from bebert_cli.training import BEST_FILE, STATE_FILE as TRAIN_STATE_FILE, TrainingInterrupted

    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be adaboost or bagging, not {strategy!r}")
    if members < 1:
        raise UsageError("--members must be at least 1")
    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision, out=out)
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(teacher_path, trust_remote_code=trust_remote_code, revision=revision)
    teacher = load_classifier(teacher_path, task, new_head=False, trust_remote_code=trust_remote_code, revision=revision)
    data = load_train_data(task, tokenizer, data_dir=data_dir, max_seq_length=recipe.max_seq_length,
                           max_train_samples=recipe.max_train_samples, seed=recipe.seed)
    dev = load_eval_split(task, "dev", tokenizer, data_dir=data_dir, max_seq_length=recipe.max_seq_length)
    n = len(data.train)
    labels = np.asarray(data.train["labels"])
    held_out = len(data.select) if data.select is not None else 0
    fingerprint = {"teacher": str(teacher_path), "task": task.name, "strategy": strategy, "recipe": recipe.to_dict(),
                   **({"data": task.to_dict()} if getattr(task, "source", "glue") != "glue" else {}),
                   "train_rows": n, "labels": _digest(labels)}
    distilling = bool(recipe.distill)

    with training_run(output, overwrite=overwrite, resume=resume, accelerator=accelerator) as work:
        state_path = work / STATE_FILE
        state = _read_state(state_path, fingerprint, n) if resume else None
        if state is not None and len(state["members"]) > members:
            raise UsageError(f"the interrupted run already finished {len(state['members'])} members; "
                             f"pass --members {len(state['members'])} or more, or start over with --overwrite")
        if state is None:
            state = {"version": STATE_VERSION, "fingerprint": fingerprint, "sample_weights": [1.0 / n] * n, "members": []}
        for rec in state["members"]:
            if not (work / rec["path"] / PACKED_SUBDIR / "model.safetensors").is_file():
                raise TrainingError(f"the ensemble state lists {rec['path']} as finished but {work / rec['path']} "
                                    "lost its packed checkpoint; start over with --overwrite")
        if main:
            work.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        done = len(state["members"])
        out.log(f"Ensemble of {members} {recipe.name} ({recipe.bits_label}) members by {strategy} from {teacher_path} on "
                f"{task.name}: {n} training rows, {held_out} held out; distillation "
                f"{'+'.join(recipe.distill) if distilling else 'off'}"
                + (f"; resuming after {done} finished member(s)" if done else ""))
        sample_texts = [str(t) for t in load_eval_texts(dev, tokenizer)]

        for m in range(done, members):
            round_start = time.perf_counter()
            name, seed = member_name(m), member_seed(recipe, m)
            mrecipe = replace(recipe, seed=seed)
            weights = np.asarray(state["sample_weights"], dtype=np.float64)
            indices = round_indices(strategy, weights, n, seed)
            mwork = work / name
            # train_student freezes the teacher's parameters, and make_student deep-copies the teacher: every
            # member after the first would inherit frozen LayerNorms, position embeddings and head. Build the
            # student here (same seed as train_student would) and make all of it trainable again.
            seed_all(seed)
            student, plan = make_student(teacher, mrecipe, tokenizer)
            for p in student.parameters():
                p.requires_grad_(True)
            try:
                student, plan, result = train_student(
                    teacher, tokenizer, task, mrecipe, data, accelerator=accelerator, work_dir=mwork, student=student,
                    plan=plan,
                    resume=(mwork / TRAIN_STATE_FILE).exists(), out=out, save_every=save_every,
                    eval_batch_size=eval_batch_size, train_ds=data.train.select(indices),
                    description=f"member {m + 1}/{members} ({strategy})",
                    fingerprint={"teacher": str(teacher_path), "task": task.name, "ensemble": strategy, "member": m,
                                 "rows": _digest(indices)})
            except TrainingInterrupted as exc:
                raise TrainingInterrupted(f"{exc} ({m} of {members} ensemble members finished and kept)") from None
            except KeyboardInterrupt:
                raise TrainingInterrupted(f"interrupted; {m} of {members} ensemble members finished and kept in {work}; "
                                          "rerun the same command with --resume to continue") from None
            try:
                finalize_student(student, mrecipe)
                boost_start = time.perf_counter()
                # Same predictions bit for bit, computed by the bit kernels where there are some.
                fast = fast_inference_twin(student, mrecipe, plan, accelerator.device, tokenizer)
                weight, error, chance, new_weights = 1.0, None, False, weights
                if strategy == "adaboost":
                    logits = predict_logits(fast, data.train, data.collator, batch_size=eval_batch_size,
                                            device=accelerator.device)
                    if task.is_regression:
                        step = r2_step(weights, logits.reshape(-1) - labels.astype(np.float64))
                    else:
                        step = samme_step(weights, logits.argmax(axis=-1) != labels, task.num_labels)
                    synced = _sync_floats(accelerator, np.concatenate([[step.weight, step.error], step.sample_weights]))
                    weight, error, chance, new_weights = float(synced[0]), float(synced[1]), step.chance, synced[2:]
                    if chance:
                        out.warn(f"{name} is no better than chance on the weighted training set (error {error:.4f}); "
                                 f"kept with weight {weight:g}, sample weights unchanged")
                boost_seconds = time.perf_counter() - boost_start
                member_results = evaluate_splits(fast, task, dev, data.collator, batch_size=eval_batch_size,
                                                 device=accelerator.device)
                member_payload = eval_payload(task, member_results, model=name, split="dev",
                                              max_seq_length=recipe.max_seq_length, recipe=recipe.name,
                                              bits=recipe.bits_label)
                record = {
                    "path": name, "weight": weight, "recipe": recipe.name, "error": error, "chance": chance,
                    "seed": seed, "bits": recipe.bits_label, "main_value": member_payload["main_value"],
                    "train_rows": len(indices), "unique_rows": len(set(indices)), "steps": result.steps,
                    "best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
                    "boost_seconds": boost_seconds,
                }
                if main:
                    member_run = {"command": "ensemble-member", "teacher": str(teacher_path), "task": task.name,
                                  **({"data": task.to_dict()} if hasattr(task, "to_dict") else {}),
                                  "strategy": strategy, "member": m, "recipe": mrecipe.to_dict(),
                                  "data_seed": recipe.seed,  # the train / held-out split (the member trains with seed + m)
                                  "max_seq_length": recipe.max_seq_length, "train_rows": len(indices),
                                  "steps": result.steps, "train_seconds": result.train_seconds,
                                  "weight": weight, "error": error}
                    with atomic_output_dir(mwork / PACKED_SUBDIR, overwrite=True) as tmp:
                        save_packed(student, tmp, mrecipe, plan)
                        write_json(tmp / EVAL_FILE, member_payload)
                        write_json(tmp / RUN_FILE, member_run)
                        if mrecipe.embeddings == "hash":  # its skeleton is built from the vocabulary
                            save_tokenizer_compact(tokenizer, tmp, sample_texts)
                    record["round_seconds"] = time.perf_counter() - round_start
                    state["members"].append(record)
                    state["sample_weights"] = [float(x) for x in new_weights]
                    atomic_write_bytes(state_path, _json_bytes(state))
                    for leftover in (TRAIN_STATE_FILE, BEST_FILE):
                        (mwork / leftover).unlink(missing_ok=True)
                else:
                    record["round_seconds"] = time.perf_counter() - round_start
                    state["members"].append(record)
                    state["sample_weights"] = [float(x) for x in new_weights]
                accelerator.wait_for_everyone()
            except KeyboardInterrupt:
                raise TrainingInterrupted(f"interrupted; {m} of {members} ensemble members finished and kept in {work}; "
                                          "rerun the same command with --resume to continue") from None
            out.log(f"{name}: weight {weight:.4f}" + (f", weighted error {error:.4f}" if error is not None else "")
                    + f", dev {task.main_metric} {member_payload['main_value']:.4f}")
            del student, plan, fast
            gc.collect()

        records = state["members"][:members]
        runtime = fastest_runtime(accelerator.device)
        models = [load_packed(work / r["path"] / PACKED_SUBDIR, runtime=runtime) for r in records]
        ensemble = EnsembleModel(models, [r["weight"] for r in records], combination=combination_for(task.num_labels))
        ensemble.to(accelerator.device)
        with out.progress(main) as progress:
            results = evaluate_splits(ensemble, task, dev, data.collator, batch_size=eval_batch_size, progress=progress,
                                      device=accelerator.device)
            teacher_results = evaluate_splits(teacher, task, dev, data.collator, batch_size=eval_batch_size,
                                              progress=progress, device=accelerator.device)
        payload = eval_payload(task, results, model=str(output), split="dev", max_seq_length=recipe.max_seq_length,
                               strategy=strategy, members=members, recipe=recipe.name, bits=recipe.bits_label)
        teacher_payload = eval_payload(task, teacher_results, model=str(teacher_path), split="dev",
                                       max_seq_length=recipe.max_seq_length)
        best = max(records, key=lambda r: r["main_value"])
        member_train = [r["train_seconds"] for r in records]
        boost = sum(r["boost_seconds"] for r in records)
        members_size = sum(dir_size(work / r["path"] / PACKED_SUBDIR) for r in records)
        run_info = {
            "command": "ensemble", "teacher": str(teacher_path), "task": task.name, "strategy": strategy,
            **({"data": task.to_dict()} if hasattr(task, "to_dict") else {}),
            "members": members, "combination": combination_for(task.num_labels), "recipe": recipe.to_dict(),
            "distill": list(recipe.distill), "distillation": distilling, "max_seq_length": recipe.max_seq_length,
            "train_rows": n, "held_out_rows": held_out, "member_seeds": [r["seed"] for r in records],
            "member_train_seconds": member_train, "member_round_seconds": [r.get("round_seconds") for r in records],
            "boosting_seconds": boost, "train_seconds": sum(member_train) + boost,
            "member_weights": [r["weight"] for r in records], "member_errors": [r["error"] for r in records],
            "member_main_values": [r["main_value"] for r in records],
            "best_member": {"path": best["path"], "main_metric": task.main_metric, "main_value": best["main_value"]},
            "members_size_bytes": members_size, "mixed_precision": accelerator.mixed_precision, "mixed_precision_reason": accelerator.bebert_precision_reason,
            "processes": accelerator.num_processes, "teacher_evaluation": teacher_payload, "environment": environment_info(),
            "lineage": lineage(teacher_path),
        }
        manifest_members = [{k: r[k] for k in ("path", "weight", "recipe", "error", "chance", "seed", "bits", "main_value",
                                               "train_rows", "unique_rows", "train_seconds")} for r in records]

        def write(tmp):
            for r in records:
                shutil.copytree(work / r["path"] / PACKED_SUBDIR, tmp / r["path"])
            write_manifest(tmp, task=task.name, num_labels=task.num_labels, strategy=strategy,
                           members=manifest_members, teacher=str(teacher_path))
            save_tokenizer_compact(tokenizer, tmp, sample_texts)
            write_json(tmp / EVAL_FILE, payload)
            write_json(tmp / RUN_FILE, run_info)
            write_model_card(tmp, name=Path(output).name)

        publish(output, write, overwrite=overwrite, accelerator=accelerator)
        del ensemble, models

    return {**payload, "output": str(output), **size_payload(output), **teacher_entry(teacher_path, teacher_payload),
            "members": manifest_members, "best_member": run_info["best_member"],
            "train": {k: run_info[k] for k in ("train_seconds", "member_train_seconds", "boosting_seconds",
                                               "distillation", "distill", "train_rows", "held_out_rows")}}


# --------------------------------------------------------------------------------------------- --from


@dataclass
class MemberInfo:
    path: Path
    recipe: Recipe
    num_labels: int
    model_type: str
    vocab_size: int | None
    max_seq_length: int
    teacher: str | None
    data_seed: int  # the seed that split its training data into train / held out


def inspect_member(path, task: GlueTask) -> MemberInfo:
    """Check that `path` is a packed checkpoint made for `task` (reads only its small JSON files)."""
    from bebert_cli.format import checkpoint_kind, read_config_json
    from bebert_cli.ensemble.model import _recorded_task, member_num_labels
    from bebert_cli.pipeline import read_run_info

    p = Path(path)
    kind = checkpoint_kind(p)
    if kind != "packed":
        what = "an ensemble" if kind == "ensemble" else "a full-precision checkpoint"
        raise ModelError(f"{p} is {what}; --from combines packed binary checkpoints (made by bebert binarize)")
    cfg = read_config_json(p)
    n = member_num_labels(cfg)
    if n != task.num_labels:
        raise ModelError(f"{p} has {n} output label(s) but task {task.name} needs {task.num_labels}")
    recorded = _recorded_task(p)
    if recorded is None:
        raise ModelError(f"{p} does not record the task it was trained for (no eval_results.json or bebert_run.json); "
                         f"cannot check that it is a {task.name} model")
    if recorded != task.name:
        raise ModelError(f"{p} was trained for task {recorded}, not {task.name}")
    try:
        recipe = Recipe.from_dict(cfg["quantization_config"].get("recipe"))
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{p}: invalid recipe in quantization_config: {exc}") from None
    run = read_run_info(p)
    seq = run.get("max_seq_length")
    data_seed = run.get("data_seed", recipe.seed)
    return MemberInfo(p, recipe, n, cfg.get("model_type"), cfg.get("vocab_size"),
                      seq if _is_int(seq) else recipe.max_seq_length,
                      run.get("teacher") if isinstance(run.get("teacher"), str) else None,
                      data_seed if _is_int(data_seed) else recipe.seed)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def tokenizer_source(path: Path) -> Path:
    """A member's tokenizer: its own, or (a member of an ensemble) the ensemble's copy at the root."""
    from bebert_cli.ensemble.model import MANIFEST_FILE

    p = Path(path)
    for candidate in (p, p.parent):
        if any((candidate / f).is_file() for f in TOKENIZER_FILES) and (candidate == p or (p.parent / MANIFEST_FILE).is_file()):
            return candidate
    raise ModelError(f"{p} has no tokenizer files (vocab.txt / tokenizer.json)")


def run_from(paths: list, task: GlueTask, output: Path, *, out, data_dir, overwrite: bool, max_seq_length: int | None = None,
             max_train_samples: int | None = None, seed: int | None = None, eval_batch_size: int = 64, cpu: bool = False,
             trust_remote_code: bool = False) -> dict:
    """Combine finished packed checkpoints into an ensemble, weights fitted on the held-out slice."""
    import os

    from bebert_cli.atomic import atomic_output_dir, check_output, output_lock
    from bebert_cli.ensemble.boosting import heldout_weight
    from bebert_cli.ensemble.model import EnsembleModel, combination_for, write_manifest
    from bebert_cli.evaluation import predict_logits
    from bebert_cli.models import load_tokenizer, save_tokenizer_compact
    from bebert_cli.pipeline import (
        EVAL_FILE, RUN_FILE, evaluate_splits, eval_payload, load_eval_split, load_train_data, make_accelerator, write_json,
    )
    from bebert_cli.quant.packed import fastest_runtime, load_packed
    from bebert_cli.schema import size_payload
    from bebert_cli.schema import teacher_payload as teacher_entry
    from bebert_cli.quant.student import load_eval_texts
    from bebert_cli.report.card import write_model_card
    from bebert_cli.report.lineage import lineage
    from bebert_cli.runner import environment_info

    if len(paths) < 2:
        raise UsageError("--from needs at least two packed checkpoints to combine")
    infos = [inspect_member(p, task) for p in paths]
    real = [os.path.realpath(i.path) for i in infos]
    if len(set(real)) != len(real):
        raise UsageError("--from names the same checkpoint twice")
    first = infos[0]
    for info in infos[1:]:
        if (info.model_type, info.vocab_size) != (first.model_type, first.vocab_size):
            raise ModelError(f"{info.path} ({info.model_type}, vocabulary {info.vocab_size}) and {first.path} "
                             f"({first.model_type}, vocabulary {first.vocab_size}) cannot share one tokenizer")
    if len({(i.data_seed, i.recipe.max_train_samples) for i in infos}) > 1 and (seed is None or max_train_samples is None):
        out.warn("the checkpoints were trained on different data splits (seed / max train samples); the held-out "
                 f"slice of {first.path} is used to fit the weights and may overlap the others' training rows")
    check_output(output, overwrite)
    seed = first.data_seed if seed is None else seed
    max_train_samples = first.recipe.max_train_samples if max_train_samples is None else max_train_samples
    seq = max_seq_length or max(i.max_seq_length for i in infos)
    tok_dir = tokenizer_source(first.path)
    tokenizer = load_tokenizer(str(tok_dir), trust_remote_code=trust_remote_code)
    accelerator = make_accelerator(cpu=cpu)
    data = load_train_data(task, tokenizer, data_dir=data_dir, max_seq_length=seq, max_train_samples=max_train_samples,
                           seed=seed)
    if data.select is None:
        raise UsageError("too few training rows to hold out a slice for fitting member weights (need at least 20); "
                         "raise --max-train-samples")
    dev = load_eval_split(task, "dev", tokenizer, data_dir=data_dir, max_seq_length=seq)
    labels = np.asarray(data.select["labels"])
    out.log(f"Combining {len(infos)} checkpoints for {task.name}; member weights fitted on {len(labels)} held-out "
            f"training rows (seed {seed}, max train samples {max_train_samples})")

    models, records = [], []
    runtime = fastest_runtime(accelerator.device)
    with out.progress(accelerator.is_main_process) as progress:
        for k, info in enumerate(infos):
            model = load_packed(info.path, runtime=runtime).to(accelerator.device)
            logits = predict_logits(model, data.select, data.collator, batch_size=eval_batch_size, device=accelerator.device)
            step = heldout_weight(logits, labels, regression=task.is_regression, num_classes=task.num_labels)
            if step.chance:
                out.warn(f"{info.path} is no better than chance on the held-out slice (error {step.error:.4f}); "
                         f"kept with weight {step.weight:g}")
            member_results = evaluate_splits(model, task, dev, data.collator, batch_size=eval_batch_size,
                                             progress=progress, device=accelerator.device)
            main_value = next(iter(member_results.values()))["metrics"][task.main_metric]
            models.append(model)
            records.append({"path": member_name(k), "weight": step.weight, "recipe": info.recipe.name,
                            "error": step.error, "chance": step.chance, "source": str(info.path),
                            "bits": info.recipe.bits_label, "main_value": main_value})
        ensemble = EnsembleModel(models, [r["weight"] for r in records], combination=combination_for(task.num_labels))
        results = evaluate_splits(ensemble, task, dev, data.collator, batch_size=eval_batch_size, progress=progress,
                                  device=accelerator.device)
    payload = eval_payload(task, results, model=str(output), split="dev", max_seq_length=seq, strategy="from",
                           members=len(records))
    teachers = {i.teacher for i in infos}
    teacher = teachers.pop() if len(teachers) == 1 else None
    best = max(records, key=lambda r: r["main_value"])
    run_info = {
        "command": "ensemble", "strategy": "from", "task": task.name, "sources": [str(i.path) for i in infos],
        **({"data": task.to_dict()} if hasattr(task, "to_dict") else {}),
        "members": len(records), "combination": combination_for(task.num_labels), "max_seq_length": seq,
        "weights_fitted_on": {"held_out_rows": len(labels), "seed": seed, "max_train_samples": max_train_samples},
        "member_weights": [r["weight"] for r in records], "member_errors": [r["error"] for r in records],
        "member_main_values": [r["main_value"] for r in records],
        "best_member": {"path": best["path"], "main_metric": task.main_metric, "main_value": best["main_value"]},
        "distillation": None, "train_seconds": 0.0, "teacher": teacher, "environment": environment_info(),
        "lineage": lineage(teacher if teacher else infos[0].path),
    }
    sample_texts = [str(t) for t in load_eval_texts(dev, tokenizer)]
    if accelerator.is_main_process:
        with output_lock(Path(output)), atomic_output_dir(output, overwrite=overwrite) as tmp:
            for info, r in zip(infos, records):
                dst = tmp / r["path"]
                dst.mkdir()
                names = [f.name for f in info.path.iterdir() if f.is_file()] if info.recipe.embeddings == "hash" else MEMBER_FILES
                for fname in names:
                    if (info.path / fname).is_file():
                        shutil.copyfile(info.path / fname, dst / fname)
                if info.recipe.embeddings == "hash" and tok_dir != info.path:
                    save_tokenizer_compact(tokenizer, dst, sample_texts)
            write_manifest(tmp, task=task.name, num_labels=task.num_labels, strategy="from", members=records,
                           teacher=teacher)
            save_tokenizer_compact(tokenizer, tmp, sample_texts)
            write_json(tmp / EVAL_FILE, payload)
            write_json(tmp / RUN_FILE, run_info)
            write_model_card(tmp, name=Path(output).name)
    accelerator.wait_for_everyone()
    return {**payload, "output": str(output), **size_payload(output), "members": records,
            "best_member": run_info["best_member"], **teacher_entry(teacher)}  # the members' one teacher, if shared
