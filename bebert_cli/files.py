"""Small file helpers every layer shares: the size of a directory, and a JSON side file."""

from __future__ import annotations

import json
import os
from pathlib import Path


def dir_size(root, *, exclude_top: tuple[str, ...] = ()) -> int:
    """Bytes of the regular files under `root`; links are not followed and hidden entries (temporary
    files, `.git`) are skipped, as are the files named in `exclude_top` directly under `root` (a
    report leaves out the model card: it counts what a checkpoint holds, not the card about it)."""
    root = Path(root)
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if f.startswith(".") or (f in exclude_top and Path(dirpath) == root):
                continue
            p = Path(dirpath) / f
            try:
                if p.is_symlink():
                    continue
                total += p.stat().st_size
            except OSError:
                continue
    return total


def checkpoint_bytes(root) -> dict:
    """{"disk": every file of the checkpoint but its model card, "weights": its safetensors files (ensemble
    members' included)}: the one definition of a checkpoint's size that every command reports."""
    root = Path(root)
    weights = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            p = Path(dirpath) / f
            if f.endswith(".safetensors") and not f.startswith(".") and not p.is_symlink():
                weights += p.stat().st_size
    from bebert_cli.format import CARD_FILE  # the model card is about a checkpoint, not part of it

    return {"disk": dir_size(root, exclude_top=(CARD_FILE,)), "weights": weights}


def write_json(path: Path, payload: dict) -> None:
    """A small JSON side file (eval_results.json, bebert_run.json, an exported config.json): indented,
    keys sorted, so that two runs that agree write the same bytes."""
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
