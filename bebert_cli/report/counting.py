"""Count what a checkpoint holds, from its files: parameters by precision, bytes, modules.

Nothing is built and no weights are read: the safetensors headers (dtype, shape, validated by
`read_header`) and config.json say everything. Works on plain full-precision Hugging Face
checkpoints, packed bebert checkpoints and ensembles (every member counted).

Precision classes (keys of `Count.params`):
  fp32 / fp16 / bf16 / fp64   floating-point tensors, by stored dtype (quantizer scales included)
  int8                        8-bit integer *weights* (I8/U8 tensors named `*.weight`)
  1bit                        `*.weight_packed` [N, ceil(K/8)] uint8 holds N*K one-bit parameters;
                              K is the module's input width, recovered from config.json
  on_the_fly                  hashed word embeddings (EELBERT): vocab x hidden values computed from
                              the token strings at load time, zero stored bytes
  scales                      the fp16 per-row scales of 1-bit tensors (`*.weight_scale`): counted
                              apart, as binarization overhead; excluded from `total`, included in
                              every byte count
Integer buffers (quantizer `initialized` flags, position ids) are not parameters; their bytes are
counted under `buffers`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from bebert_cli.errors import CheckpointError, ModelError
from bebert_cli.families import FAMILIES, SUPPORTED_MODEL_TYPES
from bebert_cli.files import checkpoint_bytes
from bebert_cli.format import (
    DTYPE_SIZES, EVAL_FILE, RUN_FILE, WEIGHTS_FILE, describe_checkpoint, is_packed_config,
    is_quantizer_tensor, module_list, read_manifest, validate_quant_config,
)

PRECISIONS = ("fp32", "fp16", "bf16", "fp64", "int8", "1bit", "on_the_fly")
PRECISION_LABELS = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp64": "fp64", "int8": "8-bit", "1bit": "1-bit",
                    "on_the_fly": "on-the-fly", "scales": "scales (fp16)"}
BYTE_CLASSES = (*PRECISIONS, "scales", "buffers")
_FLOAT_CLASSES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F64": "fp64"}
# Heads a sequence classifier never runs (pre-training heads left in a checkpoint): counted, no FLOPs.
_UNUSED_HEADS = ("cls.", "lm_head.", "discriminator_predictions.", "generator_", "vocab_transform.", "vocab_projector.",
                 "vocab_layer_norm.")
# Modules that run on one token per sequence ([CLS] / first token), not on all L.
_ONE_TOKEN = re.compile(r"(^|\.)pooler\.|^classifier(\.|$)|^pre_classifier(\.|$)")

KIND_BINARY_LINEAR = "binary linear"
KIND_BINARY_EMBEDDING = "binary embedding"
KIND_HASHED_EMBEDDING = "hashed embedding"
KIND_ATTENTION_QUANT = "attention quantizer"
KIND_FP_LINEAR = "fp linear"
KIND_FP_EMBEDDING = "fp embedding"
KIND_LAYER_NORM = "LayerNorm"
KIND_FP = "fp"


def empty_params() -> dict[str, int]:
    return {k: 0 for k in (*PRECISIONS, "scales")}


def empty_bytes() -> dict[str, int]:
    return {k: 0 for k in BYTE_CLASSES}


def total_params(params: dict[str, int]) -> int:
    """Parameters of the model as a network: every class but the scales (binarization overhead)."""
    return sum(params[k] for k in PRECISIONS)


@dataclass
class ModuleCount:
    """One module of the network (its weight, bias, quantizer parameters together)."""

    name: str
    kind: str
    params: dict[str, int] = field(default_factory=empty_params)
    bytes: int = 0
    reason: str = ""
    shape: tuple[int, int] | None = None  # (out, in) for linears and embeddings

    @property
    def total(self) -> int:
        return total_params(self.params)

    @property
    def precision(self) -> str:
        """e.g. "fp16", "1-bit (fp16 scales) + fp16", "on-the-fly"."""
        labels = [PRECISION_LABELS[k] + (" (fp16 scales)" if k == "1bit" and self.params["scales"] else "")
                  for k in PRECISIONS if self.params[k]]
        return " + ".join(labels) or "-"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "precision": self.precision, "params": self.total,
                "params_by_precision": dict(self.params), "bytes": self.bytes, "reason": self.reason,
                "shape": list(self.shape) if self.shape else None}


@dataclass
class LinearOp:
    """A matrix product of the forward pass: `in_features x out_features` per token."""

    name: str
    in_features: int
    out_features: int
    one_token: bool  # pooler / classifier: runs on the first token only
    weight_bits: int  # 1 or 32
    act_bits: int  # bits of the activations entering it (32: full precision)


@dataclass
class AttentionOp:
    """The two attention products (Q K^T and A V) of `layers` layers of width `hidden`."""

    name: str
    layers: int
    hidden: int
    act_bits: int  # 32: full precision
    mode: str  # softmax | bi


@dataclass
class Count:
    path: Path
    kind: str  # fp | packed | ensemble
    model_type: str
    bits_label: str  # 1-1-1, 1-h-1, fp32, ...
    recipe: str | None
    params: dict[str, int]
    tensor_bytes: dict[str, int]  # bytes of tensor data, by class
    weights_bytes: int  # size of the safetensors file(s), headers included
    disk_bytes: int  # every file of the checkpoint (all members, root files), but the model card
    modules: list[ModuleCount]
    linears: list[LinearOp]
    attention: list[AttentionOp]
    config: dict
    quantization: dict | None = None
    eval_results: dict | None = None
    run_info: dict = field(default_factory=dict)
    manifest: dict | None = None
    members: list["Count"] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return total_params(self.params)

    @property
    def name(self) -> str:
        return self.path.resolve().name or str(self.path)

    def default_seq_len(self) -> int:
        v = self.run_info.get("max_seq_length")
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
        return 128

    def task(self) -> str | None:
        for src in (self.eval_results or {}, self.run_info, self.manifest or {}):
            t = src.get("task") if isinstance(src, dict) else None
            if isinstance(t, str):
                return t
        return None


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    """A small JSON side file, or None when absent or unreadable (a report must not die on it)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def disk_bytes(root: Path) -> int:
    """Bytes of every file of the checkpoint at `root` but its model card (`files.checkpoint_bytes`)."""
    return checkpoint_bytes(root)["disk"]


def weight_files(path: Path) -> list[Path]:
    single = path / WEIGHTS_FILE
    if single.is_file():
        return [single]
    shards = sorted(p for p in path.glob("model-*-of-*.safetensors") if p.is_file())
    if shards:
        return shards
    other = "pytorch_model.bin" if (path / "pytorch_model.bin").is_file() else None
    hint = f" (found {other}: bebert reads safetensors only)" if other else ""
    raise CheckpointError(f"{path}: missing {WEIGHTS_FILE}{hint}")


def read_headers(files: list[Path]) -> tuple[dict[str, dict], int]:
    from bebert_cli.quant.safetensors_check import read_header

    merged: dict[str, dict] = {}
    size = 0
    for f in files:
        header = read_header(f)
        dup = set(header) & set(merged)
        if dup:
            raise CheckpointError(f"{f}: tensor {sorted(dup)[0]!r} appears in two weight files")
        merged.update(header)
        size += f.stat().st_size
    return merged, size


# ---------------------------------------------------------------------------------------------
# shapes from config.json
# ---------------------------------------------------------------------------------------------


def _cfg_int(config: dict, *keys: str) -> int:
    for k in keys:
        v = config.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    raise CheckpointError(f"config.json has no valid {' / '.join(keys)}")


def _family(config: dict):
    return FAMILIES.get(config.get("model_type"), FAMILIES["bert"])  # check_model_type has refused the others


def hidden_size(config: dict) -> int:
    return _cfg_int(config, _family(config).hidden_key)


def num_layers(config: dict) -> int:
    return _cfg_int(config, _family(config).layers_key)


def embedding_dim(config: dict) -> int:
    key = _family(config).embedding_key
    if key and config.get(key):
        return _cfg_int(config, key)
    return hidden_size(config)


def linear_in_features(name: str, config: dict) -> int:
    """Input width of a binarized Linear, from the architecture's naming (the K of a packed tensor)."""
    fam = _family(config)
    if fam.is_ffn_down(name):
        return _cfg_int(config, fam.ffn_key)  # FFN down-projection
    return hidden_size(config)


def _in_features_from_architecture(config: dict) -> dict[str, int]:
    """Fallback for unusual layouts: the real module widths, from a model built on the meta device."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = {k: v for k, v in config.items() if k != "quantization_config"}
    try:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**cfg))
    except Exception as exc:
        raise CheckpointError(f"config.json does not describe a valid model: {str(exc).splitlines()[0][:200]}") from None
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[n] = m.in_features
        elif isinstance(m, nn.Embedding):
            out[n] = m.embedding_dim
    return out


# ---------------------------------------------------------------------------------------------
# one checkpoint
# ---------------------------------------------------------------------------------------------


def _owner(tensor: str) -> str:
    """The module a tensor belongs to; quantizers fold into the layer (or attention) they serve."""
    parts = tensor.rpartition(".")[0].split(".")
    if "bebert_attn" in parts:
        return ".".join(parts[: parts.index("bebert_attn") + 1])
    if "act_quant" in parts:
        return ".".join(parts[: parts.index("act_quant")])
    return ".".join(parts)


def _is_embedding_module(owner: str) -> bool:
    return owner.rpartition(".")[2].endswith("embeddings")


def _is_unused_head(owner: str) -> bool:
    return owner.startswith(_UNUSED_HEADS)


def check_model_type(config: dict, path: Path) -> str:
    mt = config.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{path} is a {mt!r} model; bebert supports {', '.join(SUPPORTED_MODEL_TYPES)} "
                         "(BERT-family) sequence-classification models")
    return mt


def count_parts(config: dict, header: dict[str, dict], *, path: Path | str = "<checkpoint>") -> tuple:
    """(params, tensor_bytes, modules, linears, attention) from a config and a safetensors header.

    Pure: no files. Exposed so that shapes (BERT-base, say) can be checked without writing a model.
    """
    path = Path(path)
    check_model_type(config, path)
    packed = is_packed_config(config)
    qc = config["quantization_config"] if packed else {}
    binary_linears = set(module_list(qc, "binary_modules", path))
    binary_embeddings = set(module_list(qc, "binary_embeddings", path))
    hashed = module_list(qc, "hashed_embeddings", path)
    reasons = qc.get("full_precision_modules") if isinstance(qc.get("full_precision_modules"), dict) else {}
    bits = qc.get("bits") if isinstance(qc.get("bits"), dict) else {}
    act_bits = bits.get("activations", 32) if packed else 32
    if isinstance(act_bits, bool) or not isinstance(act_bits, int) or not 1 <= act_bits <= 32:
        raise CheckpointError(f"{path}: quantization_config.bits.activations must be an integer 1..32")

    params, tbytes = empty_params(), empty_bytes()
    modules: dict[str, ModuleCount] = {}
    arch_widths: dict[str, int] | None = None

    def module(owner: str) -> ModuleCount:
        if owner not in modules:
            modules[owner] = ModuleCount(owner, _module_kind(owner, binary_linears, binary_embeddings), reason="")
        return modules[owner]

    for tname in sorted(header):
        info = header[tname]
        dtype, shape = info["dtype"], list(info["shape"])
        numel = math.prod(shape)
        nbytes = numel * DTYPE_SIZES[dtype]
        owner = _owner(tname)
        leaf = tname.rpartition(".")[2]
        m = module(owner)
        m.bytes += nbytes
        is_binary = owner in binary_linears or owner in binary_embeddings
        if leaf == "weight_packed" and is_binary:
            if dtype != "U8" or len(shape) != 2:
                raise CheckpointError(f"{path}: {tname} must be a 2-D uint8 tensor, not {dtype}{shape}")
            n_rows, width = shape
            try:
                k = embedding_dim(config) if owner in binary_embeddings else linear_in_features(owner, config)
            except CheckpointError:
                k = -1
            if (k + 7) // 8 != width:
                if arch_widths is None:
                    arch_widths = _in_features_from_architecture(config)
                k = arch_widths.get(owner, -1)
                if (k + 7) // 8 != width:
                    raise CheckpointError(f"{path}: {tname} has {width} bytes per row, which fits no input width of "
                                          f"module {owner} in config.json")
            cls, count = "1bit", n_rows * k
            m.shape = (n_rows, k)
        elif leaf == "weight_scale" and is_binary:
            cls, count = "scales", numel
        elif dtype in _FLOAT_CLASSES:
            cls, count = _FLOAT_CLASSES[dtype], numel
            if leaf == "weight" and len(shape) == 2:
                m.shape = (shape[0], shape[1])
        elif dtype in ("I8", "U8") and leaf == "weight" and not is_quantizer_tensor(tname):
            cls, count = "int8", numel
            if len(shape) == 2:
                m.shape = (shape[0], shape[1])
        else:
            cls, count = "buffers", 0
        tbytes[cls] += nbytes
        if cls != "buffers":
            params[cls] += count
            m.params[cls] += count

    for name in hashed:  # nothing stored: vocab x hidden values computed from the vocabulary
        v, d = _cfg_int(config, "vocab_size"), embedding_dim(config)
        params["on_the_fly"] += v * d
        m = module(name)
        m.kind, m.shape = KIND_HASHED_EMBEDDING, (v, d)
        m.params["on_the_fly"] += v * d

    linears: list[LinearOp] = []
    for owner, m in modules.items():
        if m.kind == KIND_FP and owner.startswith(tuple(f"{h}." for h in hashed)):
            m.kind = KIND_FP_LINEAR if m.shape else KIND_FP
            m.reason = "projection after the hashed embedding"
        elif m.kind == KIND_FP:
            m.kind = _fp_kind(owner, m)
        if m.kind == KIND_BINARY_LINEAR:
            m.reason = f"1-bit weights, {act_bits}-bit activations" if act_bits < 32 else "1-bit weights, full-precision activations"
        elif m.kind == KIND_BINARY_EMBEDDING:
            m.reason = "1-bit rows with a per-row scale"
        elif m.kind == KIND_HASHED_EMBEDDING:
            m.reason = "computed from the token strings at load time (EELBERT); nothing stored"
        elif m.kind == KIND_ATTENTION_QUANT:
            m.reason = f"{act_bits}-bit attention products ({qc.get('attention', 'softmax')})"
        elif not m.reason:
            if _is_unused_head(owner):
                m.reason = "not used by sequence classification (pre-training head)"
            elif packed:
                m.reason = reasons.get(owner) or _closest_reason(owner, reasons) or "kept full precision"
            else:
                m.reason = "full-precision model"
        if m.shape and m.kind in (KIND_BINARY_LINEAR, KIND_FP_LINEAR) and not _is_unused_head(owner):
            out_f, in_f = m.shape
            binary = m.kind == KIND_BINARY_LINEAR
            linears.append(LinearOp(owner, in_f, out_f, bool(_ONE_TOKEN.search(owner)), 1 if binary else 32,
                                    act_bits if binary else 32))

    attention = [AttentionOp("attention", num_layers(config), hidden_size(config),
                             act_bits if packed and act_bits < 32 else 32, qc.get("attention", "softmax") if packed else "softmax")]
    ordered = sorted(modules.values(), key=lambda m: _natural_key(m.name))
    return params, tbytes, ordered, linears, attention


def _module_kind(owner: str, binary_linears: set, binary_embeddings: set) -> str:
    if owner in binary_linears:
        return KIND_BINARY_LINEAR
    if owner in binary_embeddings:
        return KIND_BINARY_EMBEDDING
    if owner.endswith(".bebert_attn"):
        return KIND_ATTENTION_QUANT
    return KIND_FP


def _fp_kind(owner: str, m: ModuleCount) -> str:
    last = owner.rpartition(".")[2]
    if _is_embedding_module(owner) and m.shape:
        return KIND_FP_EMBEDDING
    if "layernorm" in last.lower() or "layer_norm" in last.lower():
        return KIND_LAYER_NORM
    if m.shape:
        return KIND_FP_LINEAR
    return KIND_FP


def _closest_reason(owner: str, reasons: dict) -> str:
    """The reason recorded for the nearest enclosing module (e.g. `classifier` for `classifier.dense`)."""
    parts = owner.split(".")
    for i in range(len(parts) - 1, 0, -1):
        r = reasons.get(".".join(parts[:i]))
        if isinstance(r, str):
            return r
    return ""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _bits_label(config: dict, params: dict) -> str:
    if is_packed_config(config):
        label = config["quantization_config"].get("bits_label")
        if isinstance(label, str):
            return label
        return "binary"
    floats = {k: params[k] for k in ("fp32", "fp16", "bf16", "fp64")}
    return max(floats, key=floats.get) if any(floats.values()) else "fp32"


def count_checkpoint(path) -> Count:
    """Count a checkpoint directory: full precision, packed, or ensemble (every member)."""
    path = Path(path).expanduser()
    kind, config = describe_checkpoint(path)  # ModelError for a missing path, a file, no config.json
    if kind == "ensemble":
        return _count_ensemble(path)
    if kind == "packed":  # the format's own validator: what loading would refuse, the report refuses too
        validate_quant_config(config["quantization_config"], path)
    files = weight_files(path)
    header, weights_size = read_headers(files)
    params, tbytes, modules, linears, attention = count_parts(config, header, path=path)
    qc = config.get("quantization_config") if kind == "packed" else None
    recipe = qc.get("recipe", {}).get("name") if isinstance(qc, dict) and isinstance(qc.get("recipe"), dict) else None
    return Count(
        path=path, kind=kind, model_type=config.get("model_type"), bits_label=_bits_label(config, params), recipe=recipe,
        params=params, tensor_bytes=tbytes, weights_bytes=weights_size, disk_bytes=disk_bytes(path), modules=modules,
        linears=linears, attention=attention, config=config, quantization=qc,
        eval_results=_read_json(path / EVAL_FILE), run_info=_read_json(path / RUN_FILE) or {},
    )


def _count_ensemble(root: Path) -> Count:
    manifest, dirs, _ = read_manifest(root)
    members = []
    for i, d in enumerate(dirs):
        try:
            members.append(count_checkpoint(d))
        except ModelError as exc:
            raise CheckpointError(f"{root}: member {i}: {exc}") from None
    params, tbytes = empty_params(), empty_bytes()
    modules, linears, attention = [], [], []
    for d, m in zip(dirs, members):
        rel = d.relative_to(root).as_posix()
        for k in params:
            params[k] += m.params[k]
        for k in tbytes:
            tbytes[k] += m.tensor_bytes[k]
        modules += [ModuleCount(f"{rel}/{x.name}", x.kind, dict(x.params), x.bytes, x.reason, x.shape) for x in m.modules]
        linears += [LinearOp(f"{rel}/{x.name}", x.in_features, x.out_features, x.one_token, x.weight_bits, x.act_bits)
                    for x in m.linears]
        attention += [AttentionOp(f"{rel}/{x.name}", x.layers, x.hidden, x.act_bits, x.mode) for x in m.attention]
    labels = sorted({m.bits_label for m in members})
    bits = f"{labels[0]} x{len(members)}" if len(labels) == 1 else " + ".join(labels)
    recipes = sorted({m.recipe for m in members if m.recipe})
    return Count(
        path=root, kind="ensemble", model_type=members[0].model_type, bits_label=bits,
        recipe="+".join(recipes) if recipes else None, params=params, tensor_bytes=tbytes,
        weights_bytes=sum(m.weights_bytes for m in members), disk_bytes=disk_bytes(root), modules=modules,
        linears=linears, attention=attention, config=members[0].config, quantization=members[0].quantization,
        eval_results=_read_json(root / EVAL_FILE), run_info=_read_json(root / RUN_FILE) or {}, manifest=manifest,
        members=members,
    )
