import torch

from bebert_cli.quant.recipes import resolve_recipe, stage_recipe
from bebert_cli.quant.student import activation_scale_names, init_from_student, make_student
from tests.conftest import tiny_batch


def _teacher():
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model("bert", vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg)


def test_a_stage_starts_from_the_previous_students_weights_but_its_own_quantizers():
    teacher = _teacher()
    chain = resolve_recipe("bit", stages="w1a4,w1a1")
    prev, _ = make_student(teacher, stage_recipe(chain, 0), None)
    prev.train()(**tiny_batch())  # calibrates the LSQ steps on a first batch
    with torch.no_grad():
        for p in prev.parameters():
            p.add_(0.5)
    nxt, _ = make_student(teacher, stage_recipe(chain, 1), None)
    copied = init_from_student(nxt, prev)
    a, b = prev.state_dict(), nxt.state_dict()
    shared = [k for k in b if "act_quant." not in k and "bebert_attn." not in k]
    assert copied == len(shared) and all(torch.equal(a[k], b[k]) for k in shared)
    quantizer = [k for k in b if k.endswith("act_quant.alpha")]
    assert quantizer and all(float(b[k]) == 1.0 for k in quantizer)  # fresh: calibrates on its first batch
    assert not any(k in a for k in quantizer)


def test_activation_scales_are_the_quantizer_parameters():
    student, _ = make_student(_teacher(), resolve_recipe("bit"), None)
    names = activation_scale_names(student)
    params = dict(student.named_parameters())
    assert names and names <= set(params) and all(params[n].ndim == 0 for n in names)
    assert {n.rsplit(".", 1)[1] for n in names} == {"alpha", "beta"}
    assert activation_scale_names(make_student(_teacher(), resolve_recipe("bibert"), None)[0]) == set()
