"""The one warning of a failed automatic registration (shared by the import hook and the quantizer module)."""

from __future__ import annotations

import warnings


def registration_failed(exc: Exception) -> None:
    warnings.warn(f"bebert could not register its quantizer with transformers ({type(exc).__name__}: {exc}); "
                  "from_pretrained will not read bebert packed checkpoints (bebert_cli.load_model still does)",
                  RuntimeWarning, stacklevel=3)
