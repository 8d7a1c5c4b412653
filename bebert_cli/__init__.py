"""bebert: turn fine-tuned BERT checkpoints into packed binary models."""

__version__ = "0.1.0"


def load_model(path, **kwargs):
    """Load any checkpoint bebert can read (full precision, packed binary, ensemble).

    Imported lazily so that `import bebert_cli` stays cheap (no torch import).
    """
    from bebert_cli.checkpoint import load_model as _load

    return _load(path, **kwargs)


__all__ = ["__version__", "load_model"]
