"""What bebert knows about each BERT-family architecture it supports, in one table.

Everything that differs between BERT, RoBERTa, ELECTRA and DistilBERT (where the encoder layers
are, what the Q/K/V projections are called, which config keys hold the widths) is read from here
by the converter, the distiller, the student builder, the report and the fused layer. Adding a
BERT-family architecture is one entry (plus its tests). Torch-free: the report reads config.json
dicts with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bebert_cli.errors import ModelError


@dataclass(frozen=True)
class Family:
    model_type: str
    layers: str  # the encoder's layer list, relative to the base model (`model.<base_model_prefix>`)
    qkv: tuple[str, str, str]  # the Q, K, V projections, relative to one layer
    hidden_key: str  # config key of the model width
    layers_key: str  # ... of the number of layers
    heads_key: str  # ... of the number of attention heads
    ffn_key: str  # ... of the FFN's inner width
    ffn_down: str  # the FFN's down-projection relative to a layer (its input is `ffn_key` wide)
    ffn_activation: tuple[str, str]  # (module holding the FFN's activation, its attribute), relative to a layer
    ffn_up: str  # the FFN's up-projection relative to a layer (the activation's input is its output)
    embedding_key: str | None = None  # config key of a word-embedding width that may differ from the model's
    token_type_ids: bool = True  # whether the model takes token type ids
    bert_layer: bool = True  # layers are transformers' BertLayer shape (what the fused runtime computes)

    @property
    def attention(self) -> str:
        """The self-attention module (the parent of Q, K and V), relative to a layer."""
        return self.qkv[0].rpartition(".")[0]

    def is_ffn_down(self, name: str) -> bool:
        """Whether module `name` (a full name) is a layer's FFN down-projection."""
        return re.search(rf"(^|\.)\d+\.{re.escape(self.ffn_down)}$", name) is not None


_BERT_LIKE = dict(layers="encoder.layer", qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
                  hidden_key="hidden_size", layers_key="num_hidden_layers", heads_key="num_attention_heads",
                  ffn_key="intermediate_size", ffn_down="output.dense", ffn_activation=("intermediate", "intermediate_act_fn"), ffn_up="intermediate.dense")

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", **_BERT_LIKE),
    "roberta": Family("roberta", **_BERT_LIKE),
    # ELECTRA's embeddings may be narrower than the model (embedding_size, then a projection).
    "electra": Family("electra", **_BERT_LIKE, embedding_key="embedding_size"),
    "distilbert": Family("distilbert", layers="transformer.layer", qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                         hidden_key="dim", layers_key="n_layers", heads_key="n_heads", ffn_key="hidden_dim",
                         ffn_down="ffn.lin2", ffn_activation=("ffn", "activation"), ffn_up="ffn.lin1", token_type_ids=False, bert_layer=False),
}

SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def family(model_type) -> Family:
    """The family of `model_type` (a string, or a config object / dict that has one)."""
    if not isinstance(model_type, str):
        model_type = model_type.get("model_type") if isinstance(model_type, dict) else getattr(model_type, "model_type", None)
    try:
        return FAMILIES[model_type]
    except (KeyError, TypeError):
        raise ModelError(f"a {model_type!r} model is not one bebert supports ({', '.join(SUPPORTED_MODEL_TYPES)})") from None


def encoder_layers(model) -> list:
    """The encoder layers of a (transformers) model of a supported family."""
    fam = family(model.config)
    return list(getattr(model, model.base_model_prefix).get_submodule(fam.layers))
