"""`quantize_(model, recipe)`: swap a BERT-family classifier's layers for binary ones, in place.

What is binarized (BiBERT's choice): every Linear of the encoder layers (Q, K, V, attention
output, FFN in/out) and BERT's pooler, the activations entering them, the attention products,
and (embedding_bits=1) the word-embedding table. What stays full precision, and why, is
returned as a plan so reports and model cards can show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from bebert_cli.errors import ModelError
from bebert_cli.families import FAMILIES, SUPPORTED_MODEL_TYPES, encoder_layers, family
from bebert_cli.quant.attention import ATTN_IMPLEMENTATION, INTEGER_PRODUCTS_SINCE, AttentionQuant, register_attention
from bebert_cli.quant.ffn_sign import SIGN_OF_INPUT_SINCE, SignOfInput, define_ffn_sign_by_input_, is_sign_preserving
from bebert_cli.quant.layers import PackedEmbedding, PackedLinear, QuantEmbedding, QuantLinear
from bebert_cli.quant.quantizers import make_activation_quantizer
from bebert_cli.quant.recipes import Recipe

KEEP_REASONS = {
    "position_embeddings": "position embeddings: small, and binarizing them breaks word order (BiBERT keeps them)",
    "token_type_embeddings": "token-type embeddings: two rows, nothing to gain",
    "LayerNorm": "LayerNorm: normalisation statistics need full precision",
    "layer_norm": "LayerNorm: normalisation statistics need full precision",
    "classifier": "classifier head: a few hundred parameters that decide every prediction",
    "word_embeddings": "word embeddings kept (embedding bits 32)",
    "embeddings_project": "embedding projection: outside the encoder",
}


@dataclass
class QuantPlan:
    binary_linears: list[str] = field(default_factory=list)
    binary_embeddings: list[str] = field(default_factory=list)
    hashed_embeddings: list[str] = field(default_factory=list)
    quantized_attention: list[str] = field(default_factory=list)
    full_precision: dict[str, str] = field(default_factory=dict)  # module name -> reason


def check_architecture(model) -> None:
    mt = getattr(model.config, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"cannot binarize a {mt!r} model; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")


def _is_binarized(name: str, model_type: str) -> bool:
    inside_layer = f".{FAMILIES[model_type].layers}." in f".{name}"
    return inside_layer or name.endswith("pooler.dense")


def _reason(name: str) -> str:
    for key, why in KEEP_REASONS.items():
        if key in name:
            return why
    return "outside the encoder"


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize_(model, recipe: Recipe, *, packed: bool = False, runtime: str = "simulated", vocab: list[str] | None = None,
              ffn_sign_of_input: bool = True, integer_attention: bool = True) -> QuantPlan:
    """Convert in place. packed=True builds the inference form (buffers to load packed tensors into).

    ffn_sign_of_input: with sign activations, the FFN's binary input is sign(y), not sign(GELU(y)) as
    rounded by torch (see `ffn_sign`); False only for checkpoints of packed format 1.
    integer_attention: w1a4 / w1a8 attention products on the integers (`attention._integer_products`);
    False only for checkpoints of packed formats 1 and 2."""
    check_architecture(model)
    register_attention()
    mt = model.config.model_type
    plan = QuantPlan()
    act_bits, mode = recipe.activation_bits, recipe.activation_mode

    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            if recipe.weight_bits == 1 and _is_binarized(name, mt):
                # FFN output input is GELU output: mostly non-negative, but GELU dips below 0, so
                # a signed quantizer (with a learned shift for BiT) is kept there too.
                act = make_activation_quantizer(act_bits, mode)
                if packed:
                    new = PackedLinear(module.in_features, module.out_features, module.bias is not None, act, runtime)
                else:
                    new = QuantLinear(module, act)
                _set(model, name, new)
                plan.binary_linears.append(name)
            else:
                plan.full_precision[name] = "encoder kept full precision (weight bits 32)" if _is_binarized(name, mt) else _reason(name)
        elif isinstance(module, nn.Embedding):
            if name.endswith("word_embeddings") and recipe.embeddings == "binary":
                new = PackedEmbedding(module.num_embeddings, module.embedding_dim, module.padding_idx) if packed else QuantEmbedding(module)
                _set(model, name, new)
                plan.binary_embeddings.append(name)
            elif name.endswith("word_embeddings") and recipe.embeddings == "hash":
                from bebert_cli.quant.hash_embedding import HashEmbedding, HashEmbeddingSettings

                if vocab is None:
                    raise ModelError("hashed embeddings need the tokenizer's vocabulary")
                settings = HashEmbeddingSettings(dim=module.embedding_dim, ngram_sizes=tuple(recipe.hash_ngrams),
                                                 seed=recipe.hash_seed, projection=recipe.hash_projection)
                _set(model, name, HashEmbedding(vocab, settings, padding_idx=module.padding_idx))
                plan.hashed_embeddings.append(name)
            else:
                plan.full_precision[name] = _reason(name)
        elif isinstance(module, nn.LayerNorm):
            plan.full_precision[name] = _reason(name)

    if act_bits < 32:
        attn_mode = recipe.attention
        for i, layer in enumerate(encoder_layers(model)):
            self_attn = layer.get_submodule(family(mt).attention)
            aq = AttentionQuant(attn_mode, act_bits, mode)
            aq.runtime = runtime
            aq.integer_products = integer_attention
            self_attn.bebert_attn = aq
            plan.quantized_attention.append(f"layer {i}")
            if recipe.weight_bits == 1 and act_bits == 1 and mode == "sign" and ffn_sign_of_input:
                define_ffn_sign_by_input_(layer, mt)
        model.config._attn_implementation = ATTN_IMPLEMENTATION
    return plan


def format_definition(model, recipe: Recipe) -> int:
    """The packed format version whose definitions `model` computes: 1 if a layer binarizes torch's
    rounded GELU output (a format-1 checkpoint loaded as such), 2 if its w1a4 / w1a8 attention
    multiplies quantized floats (a format-1 or 2 checkpoint loaded as such), else the current one."""
    if recipe.weight_bits == 1 and recipe.activation_bits == 1 and recipe.activation_mode == "sign":
        holder_name, attr = family(model.config).ffn_activation
        for layer in encoder_layers(model):
            act = getattr(layer.get_submodule(holder_name), attr)
            if not isinstance(act, SignOfInput) and is_sign_preserving(act):
                return 1
    if any(isinstance(m, AttentionQuant) and m.lsq and not m.integer_products for m in model.modules()):
        return SIGN_OF_INPUT_SINCE
    return INTEGER_PRODUCTS_SINCE
