"""The closed sets of values options take, as enums: help lists them, shells complete them, and click
refuses anything else with a usage error (exit 2) before any loading.

Each enum is built from the set its code already defines (the recipe presets, the export formats, the
mixed-precision modes), so an added recipe or format appears in the CLI without a second list. The
members are `str`s that print, format, hash and compare as their value, so the commands and everything
below them (recipes, JSON payloads, fingerprints) keep seeing plain strings.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str enum whose members behave as their value everywhere (Python 3.10 has no StrEnum)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    def __hash__(self) -> int:  # Enum hashes the member's *name*: "remote-code" would miss dict keys
        return str.__hash__(self)


def _choice(name: str, values) -> type[Choice]:
    return Choice(name, [(v.replace("-", "_"), v) for v in values])


def _recipe_names():
    from bebert_cli.quant.recipes import PRESETS

    return tuple(PRESETS)


def _export_formats():
    from bebert_cli.export.common import FORMATS

    return FORMATS


def _mixed_precision_modes():
    from bebert_cli.hardware import MIXED_PRECISION_CHOICES

    return MIXED_PRECISION_CHOICES


RecipeName = _choice("RecipeName", _recipe_names())
ExportFormat = _choice("ExportFormat", _export_formats())
MixedPrecisionMode = _choice("MixedPrecisionMode", _mixed_precision_modes())
Runtime = _choice("Runtime", ("packed", "simulated"))
Strategy = _choice("Strategy", ("adaboost", "bagging"))
Embeddings = _choice("Embeddings", ("table", "binary", "hash"))
ActivationMode = _choice("ActivationMode", ("sign", "elastic"))
Attention = _choice("Attention", ("bi", "softmax"))
FpDtype = _choice("FpDtype", ("float16", "float32"))


def glue_tasks(incomplete: str = ""):
    """Shell completion of --task (imported only when a shell asks)."""
    from bebert_cli.tasks import TASKS

    return [name for name in TASKS if name.startswith(incomplete)]


def comma_list_completer(terms):
    """Shell completion for a comma list of `terms` (`--distill logits,hi<TAB>` -> logits,hidden)."""

    def complete(incomplete: str):
        done, _, last = incomplete.rpartition(",")
        used = set(done.split(",")) if done else set()
        prefix = done + "," if done else ""
        return [prefix + t for t in terms if t.startswith(last) and t not in used]

    return complete
