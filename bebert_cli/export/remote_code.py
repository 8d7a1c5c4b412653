"""`--format remote-code`: the packed checkpoint plus standalone modeling code.

config.json: model_type "bebert", auto_map {AutoConfig: configuration_bebert.BebertConfig,
AutoModelForSequenceClassification: modeling_bebert.BebertForSequenceClassification},
`base_config` (the original architecture's config) and `bebert_quantization` (the packed format's
quantization_config, storage "packed"). model.safetensors: the source's file, byte for byte (with
hashed embeddings: the same tensors plus the hashed table, which bebert recomputes from the
vocabulary but the standalone code cannot).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bebert_cli.export.common import (
    CONFIG_CLASS,
    MODEL_CLASS,
    copy_side_files,
    copy_template,
    write_json,
)


def remote_config(config: dict, qc: dict) -> dict:
    from bebert_cli import __version__

    cfg = {
        "model_type": "bebert",
        "architectures": [MODEL_CLASS],
        "auto_map": {
            "AutoConfig": f"configuration_bebert.{CONFIG_CLASS}",
            "AutoModelForSequenceClassification": f"modeling_bebert.{MODEL_CLASS}",
        },
        "base_config": config,
        "bebert_quantization": {**qc, "storage": "packed"},
        "bebert_version": __version__,
    }
    for key in ("id2label", "label2id", "problem_type"):
        if key in config:
            cfg[key] = config[key]
    return cfg


def write_remote_code(model, src: Path, out: Path, config: dict, qc: dict) -> dict:
    hashed = list(qc.get("hashed_embeddings", []))
    if hashed:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(src / "model.safetensors"), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {"format": "pt"}
        for h in hashed:
            state[f"{h}.hash_table"] = model.get_submodule(h).hash_table.detach().float().contiguous().clone()
        save_file(state, str(out / "model.safetensors"), metadata=metadata)
    else:
        shutil.copy2(src / "model.safetensors", out / "model.safetensors")
    write_json(out / "config.json", remote_config(config, qc))
    copy_template(out)
    copy_side_files(src, out)
    note = {}
    if hashed:
        note["note"] = "hashed embeddings are stored as their fp32 table (the standalone code cannot hash the vocabulary)"
    return {
        "storage": "packed",
        "exact": True,
        "loads_with": ("AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True) (no bebert needed; "
                       "AutoTokenizer.from_pretrained(DIR, trust_remote_code=True) too, as its config is model_type bebert)"),
        **note,
    }
