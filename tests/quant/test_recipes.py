import pytest

from bebert_cli.errors import UsageError
from bebert_cli.quant.recipes import PRESETS, Recipe, resolve_recipe


def test_presets():
    assert resolve_recipe("bibert").bits_label == "1-1-1" and resolve_recipe("bibert").attention == "bi"
    assert resolve_recipe("bit").activation_mode == "elastic" and resolve_recipe("bit").attention == "softmax"
    assert resolve_recipe("w1a4").bits_label == "1-1-4" and resolve_recipe("w1a8").activation_bits == 8


def test_overrides_and_round_trip():
    r = resolve_recipe("bibert", distill="logits", lr=1e-3, embedding_bits=32, seed=7)
    assert r.distill == ("logits",) and r.lr == 1e-3 and r.embeddings == "table" and r.bits_label == "1-32-1"
    assert Recipe.from_dict(r.to_dict()) == r
    assert resolve_recipe("bibert", distill="none").distill == ()


def test_lever_fields_default_to_the_old_behaviour_and_round_trip():
    r = resolve_recipe("bit")
    assert (r.group_by_length, r.warmup_ratio, r.temperature, r.scale_lr, r.hidden_layers, r.stages, r.augment) == \
        (True, 0.1, 1.0, None, "all", (), 0)
    r = resolve_recipe("bit", stages="w1a4, W1A2,w1a1", temperature=2.0, scale_lr=1e-4, hidden_layers="0,6",
                       augment=3, group_by_length=False, warmup_ratio=0.0)
    assert r.stages == ("w1a4", "w1a2", "w1a1") and r.to_dict()["stages"] == ["w1a4", "w1a2", "w1a1"]
    assert Recipe.from_dict(r.to_dict()) == r
    old = {k: v for k, v in PRESETS["bibert"].to_dict().items() if k not in ("stages", "augment", "temperature")}
    assert Recipe.from_dict(old) == PRESETS["bibert"]  # a checkpoint saved before these fields existed
    with pytest.raises(ValueError, match="group_by_length has type int"):
        Recipe.from_dict({**PRESETS["bibert"].to_dict(), "group_by_length": 1})


def test_stage_recipes():
    from bebert_cli.quant.recipes import stage_recipe

    r = resolve_recipe("bibert", stages="w1a4,w1a2,w1a1")
    first, second, last = (stage_recipe(r, k) for k in range(3))
    assert (first.activation_bits, first.attention, first.stages, first.name) == (4, "softmax", (), "bibert-stage1-w1a4")
    assert second.activation_bits == 2 and last is r and last.attention == "bi"
    first.validate()
    second.validate()


@pytest.mark.parametrize("kwargs", [
    {"distill": "dmd,magic"}, {"attention": "bi", "activation_bits": 4}, {"weight_bits": 2}, {"activation_bits": 16},
    {"embedding_bits": 4}, {"attention": "linear"}, {"temperature": 0}, {"warmup_ratio": 1.0}, {"scale_lr": -1e-4},
    {"hidden_layers": "first"}, {"hidden_layers": "-1"}, {"augment": -1}, {"augment_prob": 0.0}, {"augment_top_k": 0},
    {"stages": "w1a4,w1a2"}, {"stages": "w1a1"}, {"stages": "w2a4,w1a1"}, {"stages": "w1a16,w1a1"},
    {"stages": "w1a4,w1a1", "embeddings": "hash"},
])
def test_invalid_overrides(kwargs):
    with pytest.raises(UsageError):
        resolve_recipe("bibert", **kwargs)


def test_unknown_recipe_and_fields():
    with pytest.raises(UsageError, match="choose one of bibert, bit, w1a4, w1a8"):
        resolve_recipe("ternary")
    with pytest.raises(ValueError, match="unknown recipe field"):
        Recipe.from_dict({**PRESETS["bibert"].to_dict(), "evil": 1})


@pytest.mark.parametrize("kwargs, message", [
    ({"hash_ngrams": "3,3"}, "lists a size twice"),
    ({"hash_ngrams": "0"}, "must be positive integers"),
    ({"hash_ngrams": "2,-1"}, "must be positive integers"),
    ({"hash_seed": -1}, "--hash-seed must be an integer from 0 to 2\\*\\*64 - 1"),
    ({"hash_seed": 2**64}, "--hash-seed"),
    ({"student_width": 48}, "multiple of 32"),
    ({"student_width": 0}, "positive integer"),
])
def test_hash_and_student_options_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        resolve_recipe("bibert", embeddings="hash", **kwargs)


@pytest.mark.parametrize("width, heads", [(32, 1), (64, 1), (96, 3), (128, 2), (160, 5), (384, 6)])
def test_student_width_gives_heads_of_64_or_32_dimensions(width, heads):
    from bebert_cli.quant.recipes import student_heads

    resolve_recipe("bibert", student_width=width)  # every multiple of 32 is accepted ...
    assert student_heads(width) == heads and width // heads in (32, 64)  # ... and has heads the message promises
