"""The packed checkpoint format: a Hugging Face directory that describes itself.

config.json            the model config plus `quantization_config` (quant_method "bebert",
                       format_version, recipe, bits, bit order, binary and full-precision modules)
model.safetensors      binarized matrices as uint8 signs (`*.weight_packed`) + fp16 per-row scales
                       (`*.weight_scale`); everything kept full precision in `fp_dtype`; quantizer
                       parameters in fp32. No fp32 copy of a binarized weight anywhere.
recipe.json            the resolved recipe (repeat the run exactly)
eval_results.json, bebert_run.json, tokenizer files
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bebert_cli.errors import CheckpointError
from bebert_cli.families import SUPPORTED_MODEL_TYPES
from bebert_cli.format import (
    BIT_ORDER, CONFIG_FILE, PACK_DTYPE, PACKED_FORMAT_VERSION, QUANT_METHOD, RECIPE_FILE, SCALE_DTYPE, WEIGHTS_FILE,
    keeps_own_dtype, read_config_json, validate_quant_config,
)
from bebert_cli.quant.layers import PackedEmbedding, PackedLinear, QuantEmbedding, QuantLinear
from bebert_cli.quant.recipes import Recipe

FORMAT_VERSION = PACKED_FORMAT_VERSION  # see format.py: 2 = the FFN's binary input is sign(y); 3 = integer attention products
_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_ST_NAMES = {torch.uint8: "U8", torch.float16: "F16", torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16"}


def _binary_modules(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding, PackedLinear, PackedEmbedding))}


def round_full_precision_(model, fp_dtype: str) -> None:
    """Round every kept-full-precision tensor to its storage precision, in place.

    Called before the final evaluation so that the model evaluated is exactly the model saved.
    """
    target = _TORCH_DTYPES[fp_dtype]
    binary = _binary_modules(model)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            owner = name.rpartition(".")[0]
            if owner in binary and name.endswith(".weight"):
                continue  # latent weights are binarized on save
            if keeps_own_dtype(name, is_float=t.is_floating_point()):
                continue
            t.data.copy_(t.data.to(target).to(t.dtype))


def packed_state_dict(model, fp_dtype: str) -> dict[str, torch.Tensor]:
    target = _TORCH_DTYPES[fp_dtype]
    binary = _binary_modules(model)
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        if owner in binary and leaf == "weight":
            m = binary[owner]
            for k, v in m.packed_state().items():
                out[f"{owner}.{k}"] = v.cpu().contiguous()
            continue
        t = t.detach().cpu()
        # An already packed layer's fp16 scales keep their dtype whatever fp_dtype is (the format's rule,
        # `format.keeps_own_dtype`); only tensors that stay full precision take fp_dtype.
        if not keeps_own_dtype(name, is_float=t.is_floating_point()):
            t = t.to(target)
        out[name] = t.contiguous()
    return out


def quantization_config(recipe: Recipe, plan, format_version: int = FORMAT_VERSION) -> dict:
    return {
        "quant_method": QUANT_METHOD,
        "format_version": format_version,
        "recipe": recipe.to_dict(),
        "bits": {"weights": recipe.weight_bits, "embeddings": "hash" if recipe.embeddings == "hash" else recipe.embedding_bits,
                 "activations": recipe.activation_bits},
        "bits_label": recipe.bits_label,
        "bit_order": BIT_ORDER,
        "pack_dtype": PACK_DTYPE,
        "scale_dtype": SCALE_DTYPE,
        "fp_dtype": recipe.fp_dtype,
        "attention": recipe.attention if recipe.activation_bits < 32 else "softmax",
        "binary_modules": plan.binary_linears,
        "binary_embeddings": plan.binary_embeddings,
        "hashed_embeddings": plan.hashed_embeddings,
        "full_precision_modules": plan.full_precision,
    }


def save_packed(model, out_dir: Path, recipe: Recipe, plan) -> None:
    from safetensors.torch import save_file

    from bebert_cli.quant.convert import format_definition

    out_dir = Path(out_dir)
    state = packed_state_dict(model, recipe.fp_dtype)
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})  # one key: byte-reproducible
    config = model.config.to_dict()
    config.pop("_attn_implementation", None)
    config.pop("_attn_implementation_autoset", None)
    config["quantization_config"] = quantization_config(recipe, plan, format_definition(model, recipe))
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / RECIPE_FILE).write_text(json.dumps(recipe.to_dict(), indent=2, sort_keys=True) + "\n")


def _read_quant_config(path: Path, config: dict | None = None) -> tuple[dict, dict, Recipe]:
    """config.json (as read by the caller, or read here), its quantization_config and recipe."""
    config = dict(read_config_json(path) if config is None else config)
    qc = config.pop("quantization_config")
    return config, qc, validate_quant_config(qc, path)


def hash_vocab(source) -> list[str]:
    """The token list hashed embeddings are computed from: the checkpoint's own tokenizer."""
    from bebert_cli.models import load_tokenizer
    from bebert_cli.quant.hash_embedding import tokens_from_vocab

    return tokens_from_vocab(load_tokenizer(str(source)).get_vocab())


def convert_to_packed_(model, qc: dict, recipe: Recipe, where, *, runtime: str = "simulated", vocab=None):
    """Turn a freshly built (empty, usually meta) model into the packed inference form, in place.

    Shared by `load_packed` and the transformers quantizer (`bebert_cli.integrations`), so both build
    exactly the same modules, names, shapes and dtypes. Returns the plan, checked against `qc`.
    """
    from bebert_cli.quant.convert import quantize_

    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{where}: model_type {model_type!r} is not one bebert supports")
    if recipe.embeddings == "hash" and vocab is None:
        vocab = hash_vocab(where)
    from bebert_cli.quant.attention import INTEGER_PRODUCTS_SINCE
    from bebert_cli.quant.ffn_sign import SIGN_OF_INPUT_SINCE

    plan = quantize_(model, recipe, packed=True, runtime=runtime, vocab=vocab,
                     ffn_sign_of_input=qc["format_version"] >= SIGN_OF_INPUT_SINCE,
                     integer_attention=qc["format_version"] >= INTEGER_PRODUCTS_SINCE)
    if sorted(plan.binary_linears) != sorted(qc.get("binary_modules", [])) or \
            sorted(plan.binary_embeddings) != sorted(qc.get("binary_embeddings", [])):
        raise CheckpointError(f"{where}: the binarized modules listed in config.json do not match the architecture")
    return plan


def finish_packed_model(model, recipe: Recipe, plan, runtime: str = "simulated"):
    """After the tensors are in: what `load_packed` and the transformers quantizer both attach."""
    model.bebert_recipe, model.bebert_plan = recipe, plan
    if runtime == "packed":
        from bebert_cli.quant.runtime import prepare_packed_runtime

        prepare_packed_runtime(model)
    return model


def build_packed_skeleton(path: Path, runtime: str = "simulated", config: dict | None = None):
    """An empty inference model shaped as the checkpoint says, plus its recipe and plan."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from bebert_cli.models import quiet_transformers

    quiet_transformers()
    config_dict, qc, recipe = _read_quant_config(path, config)
    model_type = config_dict.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not one bebert supports")
    try:
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForSequenceClassification.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"{path}: config.json does not describe a valid {model_type} model: {exc}") from None
    plan = convert_to_packed_(model, qc, recipe, path, runtime=runtime)
    return model, recipe, plan


def check_against_header(where, expected: dict, header: dict, fp_dtype: str | torch.dtype) -> None:
    """Names, shapes and dtypes of the model's tensors (a state dict, meta is fine) against the file's header."""
    if isinstance(fp_dtype, str):
        fp_dtype = _TORCH_DTYPES[fp_dtype]
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: tensors do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, t in expected.items():
        want_dtype = t.dtype if keeps_own_dtype(name, is_float=t.is_floating_point()) else fp_dtype
        got = header[name]
        if got["shape"] != list(t.shape) or got["dtype"] != _ST_NAMES.get(want_dtype):
            raise CheckpointError(
                f"{where}: tensor {name} is {got['dtype']}{got['shape']}, expected {_ST_NAMES.get(want_dtype)}{list(t.shape)}"
            )


def load_packed(path, runtime: str = "simulated", *, config: dict | None = None):
    """Rebuild a packed model; shapes, dtypes and metadata are checked against each other first.

    `config`: the directory's config.json when the caller has read it already (`loading.load_model`).
    """
    from safetensors import safe_open

    from bebert_cli.quant.safetensors_check import read_header

    path = Path(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path}: missing {WEIGHTS_FILE}")
    header = read_header(weights)  # before building anything large
    # A config.json can claim any size: check it against the header on the meta device (no memory)
    # before allocating the real model.
    if config is None:
        config = read_config_json(path)
    with torch.device("meta"):
        model, recipe, plan = build_packed_skeleton(path, runtime, config)
    expected = model.state_dict()
    check_against_header(path, expected, header, recipe.fp_dtype)
    try:
        with safe_open(str(weights), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read {WEIGHTS_FILE}: {exc}") from None
    state = {k: (v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v) for k, v in state.items()}
    if not _materialize(model, state):
        # the skeleton has state the file does not carry and transformers cannot rebuild (hash tables):
        # build it for real (the fp32 architecture first, so the peak is that of the fp32 model)
        model, recipe, plan = build_packed_skeleton(path, runtime, config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: {str(exc).splitlines()[0]}") from None
    finish_packed_model(model, recipe, plan, runtime)
    return model.eval()


_UNSAVED_BUFFERS = {  # non-persistent buffers transformers' `_init_weights` rebuilds, and what they hold
    "position_ids": lambda b: torch.equal(b, torch.arange(b.shape[-1]).expand_as(b)),
    "token_type_ids": lambda b: not bool(b.any()),
}


def _materialize(model, state: dict) -> bool:
    """Move a meta-device skeleton to the CPU without ever allocating its fp32 form: the file's tensors
    are assigned in place, and the unsaved buffers (position ids, token type ids) are rebuilt by the
    model's own `_init_weights` and checked. False (the model is then unusable) for anything else
    left unbuilt, e.g. hashed-embedding tables."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:
        return False  # the caller's real build reports it
    init = getattr(model, "_init_weights", None)
    for module in model.modules():
        missing = [name for name, b in module._buffers.items() if b is not None and b.is_meta]
        if not missing:
            continue
        if init is None or any(name not in _UNSAVED_BUFFERS for name in missing):
            return False
        for name in missing:
            module._buffers[name] = torch.empty_like(module._buffers[name], device="cpu")
        with torch.no_grad():
            init(module)
        if not all(_UNSAVED_BUFFERS[name](module._buffers[name]) for name in missing):
            return False
    return not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def fastest_runtime(device) -> str:
    """The runtime to predict with on `device`: "packed" (bit kernels) on a CPU that has the compiled
    kernels, else "simulated". Both give the same outputs bit for bit; only the speed differs."""
    from bebert_cli import kernels

    on_cpu = getattr(device, "type", str(device)) == "cpu"
    return "packed" if on_cpu and kernels.backend() != "torch" else "simulated"


def fast_inference_twin(model, recipe: Recipe, plan, device, tokenizer=None):
    """`model` (a trained student, finalized) as the packed runtime runs it, for predictions made during
    training (AdaBoost passes over the training set, member evaluation).

    The packed runtime's outputs are bit-identical to the simulated model's (tests check it for every
    recipe), and on a CPU with the compiled kernels it is faster (a w1a4 MiniLM member predicting 1,900
    SST-2 training rows on one thread: 11.6 s against 30.6 s, docs/results.md). It goes through
    save_packed / load_packed in a temporary directory: the very path whose equality the tests check.
    Anywhere else (a GPU, no compiled kernels) the model itself is returned.
    """
    import tempfile

    if fastest_runtime(device) != "packed":
        return model
    with tempfile.TemporaryDirectory(prefix="bebert-twin-") as tmp:
        save_packed(model, Path(tmp), recipe, plan)
        if recipe.embeddings == "hash":  # the skeleton's hash tables are computed from the vocabulary
            tokenizer.save_pretrained(tmp)
        return load_packed(tmp, runtime="packed")
