"""Kept for code that imports `bebert_cli.checkpoint`: the formats live in `bebert_cli.format`, the
loader in `bebert_cli.loading`."""

from bebert_cli.format import ENSEMBLE_MANIFEST, checkpoint_kind, read_config_json
from bebert_cli.loading import load_model, tokenizer_path

__all__ = ["ENSEMBLE_MANIFEST", "checkpoint_kind", "load_model", "read_config_json", "tokenizer_path"]
