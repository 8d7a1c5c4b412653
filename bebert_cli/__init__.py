"""bebert: turn fine-tuned BERT checkpoints into packed binary models."""

__version__ = "0.1.0"


def load_model(path, **kwargs):
    """Load any checkpoint bebert can read (full precision, packed binary, ensemble).

    Imported lazily so that `import bebert_cli` stays cheap (no torch import).
    """
    from bebert_cli.loading import load_model as _load

    return _load(path, **kwargs)


def register_with_transformers() -> None:
    """Teach transformers to read bebert packed checkpoints (`quant_method: "bebert"`). Idempotent.

    Afterwards `AutoModelForSequenceClassification.from_pretrained(packed_dir)` returns the same
    model as `load_model(packed_dir)`. Importing bebert_cli already arranges this (without importing
    transformers: see `bebert_cli.integrations`); call this to do it explicitly, or to get an error
    instead of a warning if it cannot be done. Imports transformers and torch.
    """
    from bebert_cli.integrations.transformers_quantizer import register

    register()


# Registered as soon as transformers' quantizer registry is imported; never imports transformers itself.
from bebert_cli.integrations import register_when_transformers_loads as _register_when_transformers_loads  # noqa: E402

_register_when_transformers_loads()

__all__ = ["__version__", "load_model", "register_with_transformers"]
