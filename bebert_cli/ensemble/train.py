"""BEBERT ensemble members: training one round (AdaBoost or bagging), the resumable state between rounds,
and checking / copying the finished checkpoints `--from` combines. `workflows.ensemble` puts them in order.

Training (`workflows.ensemble.train_ensemble`, one `MemberTrainer.train` per round), in the run's work directory beside the output (`.ENS.bebert-run/`):

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

`--from` (`workflows.ensemble.combine`): packed checkpoints of one task are copied in as members; each member's
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

from bebert_cli.atomic import atomic_output_dir, atomic_write_bytes
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
    for rec in state["members"]:
        # Records saved before JSON schema 2 held the member's score as {"dev": {metric: value}}.
        old = rec.pop("dev", None)
        if "main_value" not in rec and isinstance(old, dict) and len(old) == 1:
            rec["main_value"] = next(iter(old.values()))
    return state


def _sync_floats(accelerator, values: np.ndarray) -> np.ndarray:
    """Every process takes the main process's numbers (sample weights must agree bit for bit)."""
    if accelerator.num_processes == 1:
        return values
    import torch
    from accelerate.utils import broadcast

    t = torch.as_tensor(np.asarray(values, dtype=np.float64)).to(accelerator.device)
    return broadcast(t, from_process=0).cpu().numpy()


def load_state(work: Path, fingerprint: dict, n: int, *, resume: bool, members: int) -> dict:
    """The ensemble state to continue (under --resume) or a fresh one: uniform sample weights, no members.
    A resumed state must come from the same settings and still hold every finished member's checkpoint."""
    state = _read_state(work / STATE_FILE, fingerprint, n) if resume else None
    if state is not None and len(state["members"]) > members:
        raise UsageError(f"the interrupted run already finished {len(state['members'])} members; "
                         f"pass --members {len(state['members'])} or more, or start over with --overwrite")
    if state is None:
        state = {"version": STATE_VERSION, "fingerprint": fingerprint, "sample_weights": [1.0 / n] * n, "members": []}
    for rec in state["members"]:
        if not (work / rec["path"] / PACKED_SUBDIR / "model.safetensors").is_file():
            raise TrainingError(f"the ensemble state lists {rec['path']} as finished but {work / rec['path']} "
                                "lost its packed checkpoint; start over with --overwrite")
    return state


@dataclass
class MemberTrainer:
    """What every round of ensemble training shares; `train(m, state)` runs round m."""
    teacher: object
    teacher_path: str
    tokenizer: object
    task: GlueTask
    recipe: Recipe
    strategy: str
    members: int
    data: object  # pipeline.TaskData: the training rows, the held-out slice, the collator
    dev: dict
    work: Path  # the run's work directory
    accelerator: object
    out: object  # progress.Sink
    save_every: int
    eval_batch_size: int
    sample_texts: list  # to check a hash-embedding member's compact tokenizer

    def train(self, m: int, state: dict) -> None:
        """Train member m on its round's rows, weigh it (AdaBoost), keep it packed in the work directory and
        record it in `state` (written atomically): a Ctrl-C at any point keeps the members finished before."""
        from bebert_cli.ensemble.boosting import r2_step, samme_step
        from bebert_cli.evaluation import predict_logits
        from bebert_cli.models import save_tokenizer_compact
        from bebert_cli.pipeline import EVAL_FILE, RUN_FILE, evaluate_splits, eval_payload, write_json
        from bebert_cli.quant.packed import fast_inference_twin, save_packed
        from bebert_cli.quant.student import finalize_student, make_student, train_student
        from bebert_cli.reproducibility import seed_all
        from bebert_cli.training import BEST_FILE, STATE_FILE as TRAIN_STATE_FILE, TrainingInterrupted

        task, recipe, strategy, members, work, accelerator = (self.task, self.recipe, self.strategy, self.members,
                                                              self.work, self.accelerator)
        data, teacher, tokenizer, out = self.data, self.teacher, self.tokenizer, self.out
        n, labels = len(data.train), np.asarray(data.train["labels"])
        main = accelerator.is_main_process
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
                resume=(mwork / TRAIN_STATE_FILE).exists(), out=out, save_every=self.save_every,
                eval_batch_size=self.eval_batch_size, train_ds=data.train.select(indices),
                description=f"member {m + 1}/{members} ({strategy})",
                fingerprint={"teacher": str(self.teacher_path), "task": task.name, "ensemble": strategy, "member": m,
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
                logits = predict_logits(fast, data.train, data.collator, batch_size=self.eval_batch_size,
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
            member_results = evaluate_splits(fast, task, self.dev, data.collator, batch_size=self.eval_batch_size,
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
                member_run = {"command": "ensemble-member", "teacher": str(self.teacher_path), "task": task.name,
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
                        save_tokenizer_compact(tokenizer, tmp, self.sample_texts)
                record["round_seconds"] = time.perf_counter() - round_start
                state["members"].append(record)
                state["sample_weights"] = [float(x) for x in new_weights]
                atomic_write_bytes(work / STATE_FILE, _json_bytes(state))
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


def copy_member(info: MemberInfo, dst: Path, *, tokenizer, tokenizer_dir: Path, sample_texts: list) -> None:
    """Copy a `--from` checkpoint's files into the ensemble's member directory `dst` (made here). A
    hash-embedding member builds its skeleton from its vocabulary: it keeps every file, and a tokenizer."""
    from bebert_cli.models import save_tokenizer_compact

    dst.mkdir()
    hashed = info.recipe.embeddings == "hash"
    names = [f.name for f in info.path.iterdir() if f.is_file()] if hashed else MEMBER_FILES
    for fname in names:
        if (info.path / fname).is_file():
            shutil.copyfile(info.path / fname, dst / fname)
    if hashed and tokenizer_dir != info.path:
        save_tokenizer_compact(tokenizer, dst, sample_texts)
