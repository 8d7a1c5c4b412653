"""Where a model comes from, for its Hub card: the license and the Hub base model it carries forward.

A checkpoint made from a local directory (the usual case: a teacher fine-tuned here) has no Hub id
of its own, so the chain is followed through the files bebert and the Hub leave behind: the source's
model card front matter (`license`, `base_model`), its bebert_run.json (`lineage`, `teacher`,
`base_model`), and transformers' `_name_or_path` in config.json. Training commands record the
result in bebert_run.json (`lineage`), so the card can be regenerated after the teacher is gone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_id(ref) -> str | None:
    """`ref` if it names a Hub repository (not a local path), else None: base_model must be a repo id."""
    if not isinstance(ref, str) or not _HUB_ID.match(ref) or Path(ref).expanduser().exists():
        return None
    return ref


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def card_metadata(path) -> dict:
    """The YAML front matter of `path/README.md` ({} without a card or with a malformed one)."""
    from huggingface_hub import metadata_load

    card = Path(path) / "README.md"
    if not card.is_file():
        return {}
    try:
        return metadata_load(card) or {}
    except Exception:  # a card is documentation: never a reason to fail a training command
        return {}


def _first(value) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def lineage(ref) -> dict:
    """{"license": str | None, "base_model": Hub id | None} of the model `ref` (local directory or Hub id)."""
    if hub_id(ref):
        return {"license": None, "base_model": ref}  # offline: the Hub card is not read; the id itself is the base
    path = Path(str(ref)).expanduser() if ref else None
    if path is None or not path.is_dir():
        return {"license": None, "base_model": None}
    meta = card_metadata(path)
    run = _json(path / "bebert_run.json")
    recorded = run.get("lineage") if isinstance(run.get("lineage"), dict) else {}
    config = _json(path / "config.json")
    license_ = _first(meta.get("license")) or _first(recorded.get("license"))
    base = (hub_id(_first(meta.get("base_model"))) or hub_id(recorded.get("base_model"))
            or hub_id(run.get("teacher")) or hub_id(run.get("base_model")) or hub_id(config.get("_name_or_path")))
    return {"license": license_, "base_model": base}
