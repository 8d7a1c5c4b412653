import pytest
import torch
import torch.nn.functional as F

from bebert_cli.errors import UsageError
from bebert_cli.quant.distill import AUGMENTED, Distiller
from tests.conftest import tiny_batch


def _pair(num_labels=2):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model("bert", vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, num_labels=num_labels, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    student = AutoModelForSequenceClassification.from_config(cfg)
    teacher = AutoModelForSequenceClassification.from_config(cfg).eval()
    return student, teacher


def _batch(labels=(0, 1, 1, 0), augmented=None):
    b = {**tiny_batch(), "labels": torch.tensor(labels)}
    if augmented is not None:
        b[AUGMENTED] = torch.tensor(augmented)
    return b


def test_temperature_one_is_the_plain_soft_cross_entropy_and_t_scales_by_t_squared():
    student, teacher = _pair()
    b = _batch()
    s, t = student(**tiny_batch()).logits, teacher(**tiny_batch()).logits
    for temp in (1.0, 3.0):
        d = Distiller(student, teacher, ("logits",), regression=False, hard_label_weight=0.0, temperature=temp)
        _, logs = d(student, b)
        want = -(F.softmax(t / temp, -1) * F.log_softmax(s / temp, -1)).sum(-1).mean() * temp**2
        assert logs["logits"] == pytest.approx(want.item(), rel=1e-5)


def test_hidden_layers_choose_the_matched_states():
    student, teacher = _pair()
    pairs = {h: Distiller(student, teacher, ("hidden",), regression=False, hidden_layers=h).hidden_pairs
             for h in ("all", "last", "0,2")}
    assert pairs == {"all": [(0, 0), (1, 1), (2, 2)], "last": [(2, 2)], "0,2": [(0, 0), (2, 2)]}
    _, all_logs = Distiller(student, teacher, ("hidden",), regression=False)(student, _batch())
    _, last_logs = Distiller(student, teacher, ("hidden",), regression=False, hidden_layers="last")(student, _batch())
    assert 0 < last_logs["hidden"] < all_logs["hidden"]
    with pytest.raises(UsageError, match="hidden states 0..2"):
        Distiller(student, teacher, ("hidden",), regression=False, hidden_layers="5")


def test_augmented_rows_learn_from_the_teacher_only():
    student, teacher = _pair()
    d = Distiller(student, teacher, ("logits",), regression=False, hard_label_weight=1.0)
    a, _ = d(student, _batch((0, 1, 1, 0), augmented=(0, 1, 0, 1)))
    b, _ = d(student, _batch((0, 0, 1, 1), augmented=(0, 1, 0, 1)))  # only augmented rows' labels changed
    c, _ = d(student, _batch((1, 1, 1, 0), augmented=(0, 1, 0, 1)))  # a labelled row's label changed
    assert a.item() == pytest.approx(b.item()) and a.item() != pytest.approx(c.item())
    plain, _ = d(student, _batch((0, 1, 1, 0)))
    assert plain.item() != pytest.approx(a.item())
    with pytest.raises(UsageError, match="need distillation"):
        Distiller(student, None, (), regression=False)(student, _batch(augmented=(0, 1, 0, 1)))
