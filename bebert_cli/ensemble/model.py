"""The ensemble checkpoint: a manifest naming packed binary members, and the model that combines them.

ENS/ensemble.json:
    {"format": "bebert-ensemble", "format_version": 1, "task": "sst2", "num_labels": 2,
     "strategy": "adaboost" | "bagging" | "from",
     "combination": "weighted_logits" (classification) | "weighted_mean" (regression),
     "members": [{"path": "member-0", "weight": 1.2, "recipe": "bibert", "error": 0.21 | null, ...}, ...],
     "teacher": "<path>" | null}
ENS/member-K/          a packed checkpoint (config.json, model.safetensors, recipe.json, eval_results.json)
ENS/tokenizer files, eval_results.json (the ensemble's dev metrics), bebert_run.json (how it was made)

The output is sum_k w_k * out_k / sum_k w_k for both combinations: member logits for
classification, member predictions for regression.

The manifest is validated completely (types, version, member paths confined to ENS, weights,
label counts and tasks of the members) before any member's weights are read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from bebert_cli.errors import CheckpointError, ModelError

MANIFEST_FILE = "ensemble.json"
FORMAT = "bebert-ensemble"
FORMAT_VERSION = 1
STRATEGIES = ("adaboost", "bagging", "from")
COMBINATIONS = ("weighted_logits", "weighted_mean")


def combination_for(num_labels: int) -> str:
    return "weighted_mean" if num_labels == 1 else "weighted_logits"


class EnsembleModel(nn.Module):
    """Weighted combination of member classifiers; `.config` is the first member's config."""

    def __init__(self, members, weights, *, combination: str | None = None, manifest: dict | None = None):
        super().__init__()
        members, weights = list(members), [float(w) for w in weights]
        if not members:
            raise ModelError("an ensemble needs at least one member")
        if len(members) != len(weights):
            raise ModelError(f"{len(members)} members but {len(weights)} weights")
        check_weights(weights, "ensemble")
        self.members = nn.ModuleList(members)
        self.weights = tuple(weights)
        self.config = members[0].config
        labels = {int(m.config.num_labels) for m in members}
        if len(labels) != 1:
            raise ModelError(f"ensemble members disagree on the number of labels: {sorted(labels)}")
        self.combination = combination or combination_for(self.config.num_labels)
        if self.combination not in COMBINATIONS:
            raise ModelError(f"unknown combination {self.combination!r}")
        self.manifest = manifest or {}
        total = math.fsum(weights)
        self.register_buffer("normalised_weights", torch.tensor([w / total for w in weights], dtype=torch.float32),
                             persistent=False)

    @property
    def num_labels(self) -> int:
        return int(self.config.num_labels)

    def member_outputs(self, input_ids=None, attention_mask=None, token_type_ids=None) -> list[torch.Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return [m(**inputs).logits.float() for m in self.members]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        outs = self.member_outputs(input_ids, attention_mask, token_type_ids)
        w = self.normalised_weights.to(outs[0].device)
        logits = outs[0] * w[0]
        for k in range(1, len(outs)):
            logits = logits + outs[k] * w[k]
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=logits)


def check_weights(weights, where: str) -> None:
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise CheckpointError(f"{where}: member weights must be finite numbers, got {w!r}")
        if w < 0:
            raise CheckpointError(f"{where}: member weights must not be negative, got {w!r}")
    if math.fsum(weights) <= 0:
        raise CheckpointError(f"{where}: member weights sum to zero")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def member_num_labels(config: dict) -> int | None:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = config.get("num_labels")
    return n if _is_int(n) else None


def read_manifest(path) -> dict:
    """The validated manifest of the ensemble at `path`, with member directories resolved.

    Returns the manifest dict plus "_member_dirs": [Path, ...]. Reads no weights.
    """
    from bebert_cli.checkpoint import read_config_json
    from bebert_cli.tasks import TASKS

    root = Path(path)
    f = root / MANIFEST_FILE
    if not f.is_file():
        raise ModelError(f"{root} is not an ensemble directory (no {MANIFEST_FILE})")
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(m, dict):
        raise CheckpointError(f"{f} must hold a JSON object")
    if m.get("format") != FORMAT:
        raise CheckpointError(f"{f}: format must be {FORMAT!r}, not {m.get('format')!r}")
    version = m.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{f}: format_version must be a positive integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{f} uses ensemble format {version}; this bebert reads up to {FORMAT_VERSION} (upgrade bebert)")
    task = m.get("task")
    # A GLUE task name, or the name of the user's own data (bebert_run.json's "data" says what it is).
    if not isinstance(task, str) or not task.strip() or len(task) > 200:
        raise CheckpointError(f"{f}: task must be a GLUE task ({', '.join(TASKS)}) or the name of the data, not {task!r}")
    num_labels = m.get("num_labels")
    if not _is_int(num_labels) or num_labels < 1:
        raise CheckpointError(f"{f}: num_labels must be a positive integer")
    if task in TASKS and num_labels != TASKS[task].num_labels:
        raise CheckpointError(f"{f}: num_labels {num_labels} does not match task {task} ({TASKS[task].num_labels})")
    if m.get("strategy") not in STRATEGIES:
        raise CheckpointError(f"{f}: strategy must be one of {', '.join(STRATEGIES)}, not {m.get('strategy')!r}")
    if m.get("combination") != combination_for(num_labels):
        raise CheckpointError(f"{f}: combination must be {combination_for(num_labels)!r} for {num_labels} label(s), "
                              f"not {m.get('combination')!r}")
    teacher = m.get("teacher")
    if teacher is not None and not isinstance(teacher, str):
        raise CheckpointError(f"{f}: teacher must be a path string or null")
    members = m.get("members")
    if not isinstance(members, list) or not members:
        raise CheckpointError(f"{f}: members must be a non-empty list")

    root_real = Path(os.path.realpath(root))
    dirs, seen = [], set()
    for i, entry in enumerate(members):
        where = f"{f}: members[{i}]"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} must be an object")
        rel = entry.get("path")
        if not isinstance(rel, str) or not rel.strip():
            raise CheckpointError(f"{where}.path must be a non-empty string")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or rel.startswith(("\\", "~")) or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
            raise CheckpointError(f"{where}.path {rel!r} must be relative to the ensemble directory")
        if ".." in pure.parts:
            raise CheckpointError(f"{where}.path {rel!r} must not contain '..'")
        member_dir = root.joinpath(*pure.parts)
        real = Path(os.path.realpath(member_dir))
        if real == root_real or not _inside(real, root_real):
            raise CheckpointError(f"{where}.path {rel!r} resolves outside the ensemble directory (symlink?)")
        if real in seen:
            raise CheckpointError(f"{where}.path {rel!r} names a member twice")
        seen.add(real)
        if not member_dir.is_dir():
            raise CheckpointError(f"{where}: member directory {rel!r} is missing")
        for child in member_dir.iterdir():  # a member's files must not point outside the ensemble either
            if not _inside(Path(os.path.realpath(child)), root_real):
                raise CheckpointError(f"{where}: {rel}/{child.name} is a link to outside the ensemble directory")
        weight = entry.get("weight")
        check_weights([weight], where)
        if not isinstance(entry.get("recipe"), str):
            raise CheckpointError(f"{where}.recipe must be a string")
        err = entry.get("error")
        if err is not None and (isinstance(err, bool) or not isinstance(err, (int, float)) or not math.isfinite(err)):
            raise CheckpointError(f"{where}.error must be a finite number or null")
        # Consistency of the member itself, from its small JSON files only.
        try:
            cfg = read_config_json(member_dir)
        except ModelError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        qc = cfg.get("quantization_config")
        if not (isinstance(qc, dict) and qc.get("quant_method") == "bebert"):
            raise CheckpointError(f"{where}: {rel} is not a packed bebert checkpoint")
        n = member_num_labels(cfg)
        if n != num_labels:
            raise CheckpointError(f"{where}: member {rel} has {n} label(s) but the ensemble has {num_labels}")
        member_task = _recorded_task(member_dir)
        if member_task is not None and member_task != task:
            raise CheckpointError(f"{where}: member {rel} was trained for task {member_task}, the ensemble is for {task}")
        dirs.append(member_dir)
    check_weights([e["weight"] for e in members], str(f))
    return {**m, "_member_dirs": dirs}


def _recorded_task(path: Path) -> str | None:
    """The task a checkpoint says it was made for (eval_results.json, then bebert_run.json), if any."""
    for name in ("eval_results.json", "bebert_run.json"):
        f = Path(path) / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError, OSError):
                raise CheckpointError(f"{f} is not valid JSON") from None
            if isinstance(data, dict) and isinstance(data.get("task"), str):
                return data["task"]
    return None


def load_ensemble(path, runtime: str = "simulated") -> EnsembleModel:
    """Load an ensemble directory: manifest checked first, then each member with `load_packed`."""
    from bebert_cli.quant.packed import load_packed

    manifest = read_manifest(path)
    dirs = manifest.pop("_member_dirs")
    members = []
    for entry, member_dir in zip(manifest["members"], dirs):
        model = load_packed(member_dir, runtime=runtime)
        if int(model.config.num_labels) != manifest["num_labels"]:
            raise CheckpointError(f"{path}: member {entry['path']} has {model.config.num_labels} label(s), "
                                  f"the ensemble {manifest['num_labels']}")
        members.append(model)
    model = EnsembleModel(members, [e["weight"] for e in manifest["members"]], combination=manifest["combination"],
                          manifest=manifest)
    return model.eval()


def write_manifest(root: Path, *, task: str, num_labels: int, strategy: str, members: list[dict],
                   teacher: str | None) -> dict:
    """Write ENS/ensemble.json (members: dicts with at least path, weight, recipe, error)."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "num_labels": int(num_labels),
        "strategy": strategy,
        "combination": combination_for(num_labels),
        "members": members,
        "teacher": teacher,
    }
    (Path(root) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest
