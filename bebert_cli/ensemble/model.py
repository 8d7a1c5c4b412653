"""The ensemble checkpoint: a manifest naming packed binary members, and the model that combines them.

ENS/ensemble.json:
    {"format": "bebert-ensemble", "format_version": 1, "task": "sst2", "num_labels": 2,
     "strategy": "adaboost" | "bagging" | "from",
     "combination": "weighted_logits" (classification) | "weighted_mean" (regression),
     "members": [{"path": "member-0", "weight": 1.2, "recipe": "bibert", "error": 0.21 | null,
                  "main_value": 0.81 (its main metric on the validation split), ...}, ...],
     "teacher": "<path>" | null}
ENS/member-K/          a packed checkpoint (config.json, model.safetensors, recipe.json, eval_results.json)
ENS/tokenizer files, eval_results.json (the ensemble's validation metrics), bebert_run.json (how it was made)

The output is sum_k w_k * out_k / sum_k w_k for both combinations: member logits for
classification, member predictions for regression.

The manifest is validated completely (types, version, member paths confined to ENS, weights,
label counts and tasks of the members) before any member's weights are read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from bebert_cli.errors import CheckpointError, ModelError
from bebert_cli.format import (  # noqa: F401 - the ensemble format's names, re-exported for its users
    COMBINATIONS, ENSEMBLE_FORMAT, ENSEMBLE_FORMAT_VERSION, ENSEMBLE_MANIFEST, STRATEGIES, check_weights, combination_for,
    member_num_labels, read_manifest,
)
from bebert_cli.format import recorded_task as _recorded_task  # noqa: F401 - used by ensemble/train.py

MANIFEST_FILE = ENSEMBLE_MANIFEST
FORMAT = ENSEMBLE_FORMAT
FORMAT_VERSION = ENSEMBLE_FORMAT_VERSION


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


def load_ensemble(path, runtime: str = "simulated") -> EnsembleModel:
    """Load an ensemble directory: manifest checked first, then each member with `load_packed`."""
    from bebert_cli.quant.packed import load_packed

    manifest, dirs, configs = read_manifest(path)
    members = []
    for entry, member_dir, config in zip(manifest["members"], dirs, configs):
        model = load_packed(member_dir, runtime=runtime, config=config)
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
