"""Loading any checkpoint bebert understands, by what it says it is.

- a bebert ensemble: `ensemble.json` manifest naming member directories;
- a packed binary model: `config.json` with `quantization_config.quant_method == "bebert"`;
- otherwise a plain Hugging Face sequence-classification directory (full precision).
"""

from __future__ import annotations

import json
from pathlib import Path

from bebert_cli.errors import CheckpointError, ModelError

ENSEMBLE_MANIFEST = "ensemble.json"


def read_config_json(path: Path) -> dict:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise ModelError(f"{path} is not a model directory (no config.json)")
    try:
        cfg = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{f} must hold a JSON object")
    return cfg


def checkpoint_kind(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model directory {path} does not exist")
    if not p.is_dir():
        raise ModelError(f"{path} is a file, not a model directory")
    if (p / ENSEMBLE_MANIFEST).is_file():
        return "ensemble"
    qc = read_config_json(p).get("quantization_config")
    if isinstance(qc, dict) and qc.get("quant_method") == "bebert":
        return "packed"
    return "fp"


def load_model(path, *, task=None, runtime: str = "simulated", trust_remote_code: bool = False, revision=None):
    """A ready-to-run model (eval mode) for any bebert-readable directory or hub id."""
    from bebert_cli.hub import looks_like_path

    p = Path(path).expanduser()
    kind = checkpoint_kind(p) if p.exists() or looks_like_path(str(path)) else "fp"
    if kind == "ensemble":
        from bebert_cli.ensemble.model import load_ensemble

        model = load_ensemble(p, runtime=runtime)
    elif kind == "packed":
        from bebert_cli.quant.packed import load_packed

        model = load_packed(p, runtime=runtime)
    else:
        from bebert_cli.models import check_supported, load_config

        from transformers import AutoModelForSequenceClassification

        config = load_config(str(path), trust_remote_code=trust_remote_code, revision=revision)
        check_supported(config, str(path))
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), trust_remote_code=trust_remote_code, use_safetensors=True, revision=revision)
        except Exception as exc:
            raise ModelError(f"cannot load {path} as a sequence classifier: {str(exc).splitlines()[0][:200]}") from exc
    if task is not None:
        from bebert_cli.models import check_task_matches

        check_task_matches(model.config, task, str(path))
    return model.eval()


def tokenizer_path(path) -> str:
    """Where a checkpoint keeps its tokenizer (an ensemble keeps one copy at its root)."""
    return str(path)
