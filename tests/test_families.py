"""bebert_cli/families.py: the one table of supported architectures agrees with transformers' real models."""

import inspect

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification

from bebert_cli.errors import ModelError
from bebert_cli.families import FAMILIES, SUPPORTED_MODEL_TYPES, encoder_layers, family

TINY = {"bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48),
        "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48),
        "electra": dict(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48),
        "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=48)}


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_every_entry_names_the_real_modules_and_config_keys(model_type):
    fam = FAMILIES[model_type]
    cfg = AutoConfig.for_model(model_type, vocab_size=50, max_position_embeddings=32, **TINY[model_type])
    model = AutoModelForSequenceClassification.from_config(cfg)
    layers = encoder_layers(model)
    assert len(layers) == getattr(cfg, fam.layers_key) == 2
    assert getattr(cfg, fam.hidden_key) == 32 and getattr(cfg, fam.heads_key) == 2 and getattr(cfg, fam.ffn_key) == 48
    for name in fam.qkv:
        assert layers[0].get_submodule(name).out_features == 32
    assert hasattr(layers[0].get_submodule(fam.attention), fam.qkv[0].rpartition(".")[2])
    downs = [n for n, m in model.named_modules() if fam.is_ffn_down(n)]
    assert len(downs) == 2 and all(model.get_submodule(n).in_features == 48 for n in downs)
    if fam.embedding_key:
        assert model.get_input_embeddings().embedding_dim == getattr(cfg, fam.embedding_key)
    assert ("token_type_ids" in inspect.signature(model.forward).parameters) == fam.token_type_ids
    assert fam.bert_layer == hasattr(layers[0], "intermediate")  # transformers' BertLayer shape


def test_unknown_model_types_are_refused():
    with pytest.raises(ModelError, match="gpt2"):
        family("gpt2")
    assert family({"model_type": "distilbert"}) is FAMILIES["distilbert"]
