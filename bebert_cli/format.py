"""The on-disk formats bebert reads and writes, and their validation: the bottom layer, torch-free.

A checkpoint directory is one of three kinds, by what it says it is:
- "ensemble": an `ensemble.json` manifest naming packed member directories inside it;
- "packed": `config.json` with `quantization_config.quant_method == "bebert"` (see quant/packed.py);
- "fp": anything else, a plain Hugging Face sequence-classification directory.

Everything here reads small JSON files only (never weights), so the loader (`loading.py`), the
packed format (`quant/packed.py`), the ensemble (`ensemble/model.py`) and the report (`report/`)
share one reading of the formats and one validator for each, and the report needs no torch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath

from bebert_cli.errors import CheckpointError, ModelError
from bebert_cli.families import SUPPORTED_MODEL_TYPES
from bebert_cli.quant.recipes import Recipe

# files of a checkpoint directory
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RECIPE_FILE = "recipe.json"
EVAL_FILE = "eval_results.json"
RUN_FILE = "bebert_run.json"
CARD_FILE = "README.md"
ENSEMBLE_MANIFEST = "ensemble.json"

# the packed format (`quantization_config` in config.json)
QUANT_METHOD = "bebert"
# 1: first release. 2: a 1-1-1 FFN's binary input is sign(y), not the sign of torch's rounded GELU(y)
# (`quant/ffn_sign.py`). 3: the w1a4 / w1a8 softmax attention multiplies the quantizers' integers and
# scales once (`quant/attention.py::_integer_products`), so integer kernels reproduce it bit for bit.
# Older checkpoints load with their own definitions.
PACKED_FORMAT_VERSION = 3
BIT_ORDER = "little"  # bit i (value 1 << i) of byte j holds column 8*j + i
PACK_DTYPE = "uint8"
SCALE_DTYPE = "float16"

# the ensemble format (`ensemble.json`)
ENSEMBLE_FORMAT = "bebert-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
STRATEGIES = ("adaboost", "bagging", "from")
COMBINATIONS = ("weighted_logits", "weighted_mean")

# bytes per element of each safetensors dtype
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
               "F32": 4, "I64": 8, "U64": 8, "F64": 8}

# Modules whose parameters are quantizer state (activation scales, shifts, LSQ steps, flags): always
# stored as trained (fp32), whatever the checkpoint's fp_dtype, and folded into the layer they serve.
QUANTIZER_MODULES = ("act_quant", "bebert_attn")

__all__ = [
    "BIT_ORDER", "CARD_FILE", "COMBINATIONS", "CONFIG_FILE", "DTYPE_SIZES", "ENSEMBLE_FORMAT", "ENSEMBLE_FORMAT_VERSION",
    "ENSEMBLE_MANIFEST", "EVAL_FILE", "PACKED_FORMAT_VERSION", "QUANT_METHOD", "RECIPE_FILE", "RUN_FILE", "STRATEGIES",
    "SUPPORTED_MODEL_TYPES", "WEIGHTS_FILE", "checkpoint_kind", "combination_for", "describe_checkpoint",
    "is_packed_config", "is_quantizer_tensor", "keeps_own_dtype", "module_list", "read_config_json", "read_manifest",
    "validate_quant_config",
]


# ---------------------------------------------------------------------------------------------
# config.json and the kind of a directory
# ---------------------------------------------------------------------------------------------


def read_config_json(path) -> dict:
    """The JSON object in `path/config.json` (ModelError if absent, CheckpointError if unreadable)."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        raise ModelError(f"{path} is not a model directory (no config.json)")
    try:
        cfg = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{f} must hold a JSON object")
    return cfg


def is_packed_config(config: dict) -> bool:
    qc = config.get("quantization_config")
    return isinstance(qc, dict) and qc.get("quant_method") == QUANT_METHOD


def describe_checkpoint(path) -> tuple[str, dict | None]:
    """(kind, config.json) of a directory: kind is "ensemble" (config None), "packed" or "fp".

    The loader passes the config on, so one load reads config.json once.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model directory {path} does not exist")
    if not p.is_dir():
        raise ModelError(f"{path} is a file, not a model directory")
    if (p / ENSEMBLE_MANIFEST).is_file():
        return "ensemble", None
    config = read_config_json(p)
    return ("packed" if is_packed_config(config) else "fp"), config


def checkpoint_kind(path) -> str:
    return describe_checkpoint(path)[0]


# ---------------------------------------------------------------------------------------------
# quantization_config
# ---------------------------------------------------------------------------------------------


def module_list(qc: dict, key: str, where) -> list[str]:
    """`qc[key]` (absent: empty), checked to be a list of module names."""
    v = qc.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise CheckpointError(f"{where}: quantization_config.{key} must be a list of module names")
    return v


def validate_quant_config(qc, where) -> Recipe:
    """The recipe a `quantization_config` block describes, after checking that
    this bebert can read the block: version, bit layout, recipe, module lists."""
    if not isinstance(qc, dict):
        raise CheckpointError(f"{where}: quantization_config must be an object")
    version = qc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{where}: quantization_config.format_version must be an integer")
    if version > PACKED_FORMAT_VERSION:
        raise CheckpointError(f"{where} uses packed format {version}; this bebert reads up to {PACKED_FORMAT_VERSION} "
                              "(upgrade bebert)")
    if qc.get("bit_order") != BIT_ORDER or qc.get("pack_dtype") != PACK_DTYPE:
        raise CheckpointError(f"{where}: unsupported bit order or pack dtype ({qc.get('bit_order')!r}, {qc.get('pack_dtype')!r})")
    try:
        recipe = Recipe.from_dict(qc.get("recipe")).validate()
    except Exception as exc:
        raise CheckpointError(f"{where}: invalid recipe in quantization_config: {exc}") from None
    for key in ("binary_modules", "binary_embeddings", "hashed_embeddings"):
        module_list(qc, key, where)
    return recipe


def is_quantizer_tensor(name: str) -> bool:
    """Whether tensor `name` is quantizer state (inside an `act_quant` or `bebert_attn` module)."""
    return any(m in QUANTIZER_MODULES for m in name.split(".")[:-1])


def keeps_own_dtype(name: str, *, is_float: bool) -> bool:
    """The one rule of what a packed checkpoint does NOT store in its `fp_dtype`.

    Integer tensors (packed signs, flags, ids) and quantizer state keep their own dtype, and a binary
    layer's per-row `weight_scale` stays fp16 whatever fp_dtype is; every other floating-point tensor
    (what stays full precision: embeddings, LayerNorms, biases, the classifier) is stored in fp_dtype.
    """
    return not is_float or is_quantizer_tensor(name) or name.endswith(".weight_scale")


# ---------------------------------------------------------------------------------------------
# ensemble.json
# ---------------------------------------------------------------------------------------------


def combination_for(num_labels: int) -> str:
    return "weighted_mean" if num_labels == 1 else "weighted_logits"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_weights(weights, where: str) -> None:
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise CheckpointError(f"{where}: member weights must be finite numbers, got {w!r}")
        if w < 0:
            raise CheckpointError(f"{where}: member weights must not be negative, got {w!r}")
    if math.fsum(weights) <= 0:
        raise CheckpointError(f"{where}: member weights sum to zero")


def member_num_labels(config: dict) -> int | None:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = config.get("num_labels")
    return n if _is_int(n) else None


def recorded_task(path) -> str | None:
    """The task a checkpoint says it was made for (eval_results.json, then bebert_run.json), if any."""
    for name in (EVAL_FILE, RUN_FILE):
        f = Path(path) / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError, OSError):
                raise CheckpointError(f"{f} is not valid JSON") from None
            if isinstance(data, dict) and isinstance(data.get("task"), str):
                return data["task"]
    return None


def read_manifest(path) -> tuple[dict, list[Path], list[dict]]:
    """The validated manifest of the ensemble at `path`, its member directories and their config.json
    (so that loading reads each once). Reads no weights.

    The one validator of ensemble.json (loading and the report both use it): types, version, member
    paths confined to the ensemble, weights, and each member's own small files (a packed checkpoint,
    not itself an ensemble, with the ensemble's label count and task).
    """
    from bebert_cli.tasks import TASKS

    root = Path(path)
    f = root / ENSEMBLE_MANIFEST
    if not f.is_file():
        raise ModelError(f"{root} is not an ensemble directory (no {ENSEMBLE_MANIFEST})")
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(m, dict):
        raise CheckpointError(f"{f} must hold a JSON object")
    if m.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{f}: format must be {ENSEMBLE_FORMAT!r}, not {m.get('format')!r}")
    version = m.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{f}: format_version must be a positive integer")
    if version > ENSEMBLE_FORMAT_VERSION:
        raise CheckpointError(f"{f} uses ensemble format {version}; this bebert reads up to {ENSEMBLE_FORMAT_VERSION} "
                              "(upgrade bebert)")
    task = m.get("task")
    # A GLUE task name, or the name of the user's own data (bebert_run.json's "data" says what it is).
    if not isinstance(task, str) or not task.strip() or len(task) > 200:
        raise CheckpointError(f"{f}: task must be a GLUE task ({', '.join(TASKS)}) or the name of the data, not {task!r}")
    num_labels = m.get("num_labels")
    if not _is_int(num_labels) or num_labels < 1:
        raise CheckpointError(f"{f}: num_labels must be a positive integer")
    if task in TASKS and num_labels != TASKS[task].num_labels:
        raise CheckpointError(f"{f}: num_labels {num_labels} does not match task {task} ({TASKS[task].num_labels})")
    if m.get("strategy") not in STRATEGIES:
        raise CheckpointError(f"{f}: strategy must be one of {', '.join(STRATEGIES)}, not {m.get('strategy')!r}")
    if m.get("combination") != combination_for(num_labels):
        raise CheckpointError(f"{f}: combination must be {combination_for(num_labels)!r} for {num_labels} label(s), "
                              f"not {m.get('combination')!r}")
    teacher = m.get("teacher")
    if teacher is not None and not isinstance(teacher, str):
        raise CheckpointError(f"{f}: teacher must be a path string or null")
    members = m.get("members")
    if not isinstance(members, list) or not members:
        raise CheckpointError(f"{f}: members must be a non-empty list")

    root_real = Path(os.path.realpath(root))
    dirs, configs, seen = [], [], set()
    for i, entry in enumerate(members):
        where = f"{f}: members[{i}]"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} must be an object")
        rel = entry.get("path")
        if not isinstance(rel, str) or not rel.strip():
            raise CheckpointError(f"{where}.path must be a non-empty string")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or rel.startswith(("\\", "~")) or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
            raise CheckpointError(f"{where}.path {rel!r} must be relative to the ensemble directory")
        if ".." in pure.parts:
            raise CheckpointError(f"{where}.path {rel!r} must not contain '..'")
        member_dir = root.joinpath(*pure.parts)
        real = Path(os.path.realpath(member_dir))
        if real == root_real or not _inside(real, root_real):
            raise CheckpointError(f"{where}.path {rel!r} resolves outside the ensemble directory (symlink?)")
        if real in seen:
            raise CheckpointError(f"{where}.path {rel!r} names a member twice")
        seen.add(real)
        if not member_dir.is_dir():
            raise CheckpointError(f"{where}: member directory {rel!r} is missing")
        if (member_dir / ENSEMBLE_MANIFEST).exists():
            raise CheckpointError(f"{where}: member {rel!r} is itself an ensemble")
        for child in member_dir.iterdir():  # a member's files must not point outside the ensemble either
            if not _inside(Path(os.path.realpath(child)), root_real):
                raise CheckpointError(f"{where}: {rel}/{child.name} is a link to outside the ensemble directory")
        weight = entry.get("weight")
        check_weights([weight], where)
        if not isinstance(entry.get("recipe"), str):
            raise CheckpointError(f"{where}.recipe must be a string")
        err = entry.get("error")
        if err is not None and (isinstance(err, bool) or not isinstance(err, (int, float)) or not math.isfinite(err)):
            raise CheckpointError(f"{where}.error must be a finite number or null")
        # Consistency of the member itself, from its small JSON files only.
        try:
            cfg = read_config_json(member_dir)
        except ModelError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        if not is_packed_config(cfg):
            raise CheckpointError(f"{where}: {rel} is not a packed bebert checkpoint")
        n = member_num_labels(cfg)
        if n != num_labels:
            raise CheckpointError(f"{where}: member {rel} has {n} label(s) but the ensemble has {num_labels}")
        member_task = recorded_task(member_dir)
        if member_task is not None and member_task != task:
            raise CheckpointError(f"{where}: member {rel} was trained for task {member_task}, the ensemble is for {task}")
        dirs.append(member_dir)
        configs.append(cfg)
    check_weights([e["weight"] for e in members], str(f))
    return m, dirs, configs
