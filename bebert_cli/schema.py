"""The one JSON schema of `--json` output (docs/json.md): names, version, and the builders that give the
shared pieces (a split's name, sizes, the teacher) the same shape in every command.

Torch-free and bebert-free but for `files`: the commands, the work behind them and the error handler
all build their output through these few functions, so one name means one thing everywhere.
The machine-checkable form is `schemas/bebert.schema.json` (package data); `validate` checks an object
against it with `jsonschema` (a dependency of the test extra).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from bebert_cli.files import checkpoint_bytes

SCHEMA_VERSION = 2  # 1 was the report's own "bebert-report" schema; 2 is the first one for every command
PREFIX = "bebert."
KINDS = ("finetune", "binarize", "ensemble", "eval", "export", "report", "prediction", "env", "upload", "error")
SCHEMA_FILE = Path(__file__).parent / "schemas" / "bebert.schema.json"

# The user says "dev"; the data calls it "validation" (MNLI: validation_matched / _mismatched).
_SPLIT_ALIASES = {"dev": "validation", "dev_matched": "validation_matched", "matched": "validation_matched",
                  "dev_mismatched": "validation_mismatched", "mismatched": "validation_mismatched"}


def with_schema(kind: str, payload: dict) -> dict:
    """`payload` as a top-level `--json` object of `kind`: `schema` and `schema_version` first."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    rest = {k: v for k, v in payload.items() if k not in ("schema", "schema_version")}
    return {"schema": PREFIX + kind, "schema_version": SCHEMA_VERSION, **rest}


def split_name(split: str) -> str:
    """The data's name of a split the user named: "dev" -> "validation"; other names lower-cased."""
    s = str(split).lower()
    return _SPLIT_ALIASES.get(s, s)


def size_payload(path, key: str = "bytes") -> dict:
    """{key: {"disk", "weights"}} of a checkpoint directory, counted as `bebert report` counts them."""
    return {key: checkpoint_bytes(path)}


def teacher_payload(teacher, evaluation: dict | None = None) -> dict:
    """The teacher, named the same everywhere: `teacher` its path (a string, or None when the command had
    none), `teacher_evaluation` its scores on the same split (an evaluation object, or None)."""
    return {"teacher": None if teacher is None else str(teacher), "teacher_evaluation": evaluation}


def error_payload(error_type: str, message: str, exit_code: int) -> dict:
    """The object `--json` prints on stdout when a command fails (besides the `Error:` line on stderr)."""
    return with_schema("error", {"error": {"type": error_type, "message": message, "exit_code": int(exit_code)}})


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate(obj: dict) -> None:
    """Raise `jsonschema.ValidationError` unless `obj` is a valid object of the kind its `schema` names."""
    import jsonschema

    schema = load_schema()
    kind = obj.get("schema", "") if isinstance(obj, dict) else ""
    name = kind[len(PREFIX):] if isinstance(kind, str) and kind.startswith(PREFIX) else None
    if name not in schema["$defs"] or name not in KINDS:
        raise jsonschema.ValidationError(f"unknown or missing schema {kind!r}")
    one = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}
    jsonschema.validate(obj, one, cls=jsonschema.Draft202012Validator)
