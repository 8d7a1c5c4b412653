"""`load_model(path)`: a ready-to-run model for any directory bebert can read, by what it says it is.

Above the formats it dispatches to: `format.describe_checkpoint` says the kind (reading config.json
once, and handing it on), then `ensemble.model.load_ensemble`, `quant.packed.load_packed` or
transformers for a plain full-precision classifier.
"""

from __future__ import annotations

from pathlib import Path

from bebert_cli.errors import ModelError
from bebert_cli.format import describe_checkpoint


def load_model(path, *, task=None, runtime: str = "simulated", trust_remote_code: bool = False, revision=None):
    """A ready-to-run model (eval mode) for any bebert-readable directory or hub id (at `revision`)."""
    from bebert_cli.hub import looks_like_path

    p = Path(path).expanduser()
    kind, config = describe_checkpoint(p) if p.exists() or looks_like_path(str(path)) else ("fp", None)
    if kind == "ensemble":
        from bebert_cli.ensemble.model import load_ensemble

        model = load_ensemble(p, runtime=runtime)
    elif kind == "packed":
        from bebert_cli.quant.packed import load_packed

        model = load_packed(p, runtime=runtime, config=config)
    else:
        from transformers import AutoModelForSequenceClassification

        from bebert_cli.models import check_supported, load_config

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
