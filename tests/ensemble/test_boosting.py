import math

import numpy as np
import pytest

from bebert_cli.ensemble.boosting import (
    CHANCE_WEIGHT, bootstrap_indices, heldout_weight, normalise, r2_step, resample_indices, samme_step,
)


def test_samme_binary_hand_computed():
    # 4 rows, uniform weights, the member gets row 0 wrong: err = 1/4, alpha = log(3) + log(1),
    # row 0's weight x3 -> (3, 1, 1, 1) / 6.
    step = samme_step([0.25] * 4, [True, False, False, False], num_classes=2)
    assert step.error == pytest.approx(0.25)
    assert step.weight == pytest.approx(math.log(3))
    np.testing.assert_allclose(step.sample_weights, [0.5, 1 / 6, 1 / 6, 1 / 6])
    assert not step.chance


def test_samme_three_classes_and_unnormalised_input_weights():
    # Weights (2, 1, 1, 1, 1) (not normalised), rows 1 and 2 wrong: err = 2/6 = 1/3,
    # alpha = log(2) + log(2) = log(4); rows 1, 2 x4 -> (2, 4, 4, 1, 1) / 12.
    step = samme_step([2, 1, 1, 1, 1], [False, True, True, False, False], num_classes=3)
    assert step.error == pytest.approx(1 / 3)
    assert step.weight == pytest.approx(math.log(4))
    np.testing.assert_allclose(step.sample_weights, np.array([2, 4, 4, 1, 1]) / 12)
    assert step.sample_weights.sum() == pytest.approx(1.0)
    # After the update the member's weighted error is exactly chance, (K - 1) / K: SAMME's defining property.
    assert np.sum(step.sample_weights[[1, 2]]) == pytest.approx(2 / 3)


def test_samme_sequence_of_two_rounds():
    w = np.full(5, 0.2)
    s1 = samme_step(w, [1, 0, 0, 0, 0], 2)  # err 0.2 -> alpha log 4; w -> (4,1,1,1,1)/8
    np.testing.assert_allclose(s1.sample_weights, np.array([4, 1, 1, 1, 1]) / 8)
    s2 = samme_step(s1.sample_weights, [0, 1, 0, 0, 0], 2)  # err 1/8 -> alpha log 7; row 1 x7 -> (4,7,1,1,1)/14
    assert s2.error == pytest.approx(1 / 8) and s2.weight == pytest.approx(math.log(7))
    np.testing.assert_allclose(s2.sample_weights, np.array([4, 7, 1, 1, 1]) / 14)


def test_samme_chance_member_is_kept_with_a_small_weight_and_weights_unchanged():
    w = np.array([0.1, 0.2, 0.3, 0.4])
    # binary: err 0.6 >= 1/2 -> chance
    step = samme_step(w, [False, True, False, True], 2)
    assert step.chance and step.weight == CHANCE_WEIGHT and step.error == pytest.approx(0.6)
    np.testing.assert_allclose(step.sample_weights, w)
    # exactly chance, up to rounding (what a copy of the previous member scores after re-weighting)
    prev = samme_step([0.25] * 4, [True, False, False, False], 2)
    again = samme_step(prev.sample_weights, [True, False, False, False], 2)
    assert again.chance and again.weight == CHANCE_WEIGHT
    # three classes: 0.6 < 2/3 is still better than chance
    assert not samme_step(w, [False, True, False, True], 3).chance


def test_samme_error_is_clipped():
    perfect = samme_step([1, 1], [False, False], 2)
    assert perfect.error == 1e-10 and perfect.weight == pytest.approx(math.log((1 - 1e-10) / 1e-10))
    np.testing.assert_allclose(perfect.sample_weights, [0.5, 0.5])
    # Three classes, a quarter of the weight wrong: alpha = log(3) + log(2).
    assert samme_step([1, 1, 1, 1], [True, False, False, False], 3).weight == pytest.approx(math.log(3) + math.log(2))


def test_r2_hand_computed():
    # |errors| (0, 1, 2, 4): loss = e / 4 = (0, .25, .5, 1); L = 1.75 / 4 = 0.4375;
    # beta = 0.4375 / 0.5625 = 7/9; weight = log(9/7); w_i ~ beta^(1 - loss_i).
    step = r2_step([1, 1, 1, 1], [0, -1, 2, -4])
    beta = 7 / 9
    assert step.error == pytest.approx(0.4375)
    assert step.weight == pytest.approx(math.log(9 / 7))
    expected = np.array([beta ** 1, beta ** 0.75, beta ** 0.5, beta ** 0])
    np.testing.assert_allclose(step.sample_weights, expected / expected.sum())
    assert step.sample_weights[0] < step.sample_weights[-1]  # the worst-predicted row goes up


def test_r2_chance_and_exact():
    step = r2_step([1, 1], [1, 1])  # every row has the maximal loss: L = 1 -> chance
    assert step.chance and step.weight == CHANCE_WEIGHT
    exact = r2_step([1, 1, 1], [0, 0, 0])  # no error at all: L clipped to 1e-10
    assert not exact.chance and exact.weight == pytest.approx(math.log((1 - 1e-10) / 1e-10))


def test_resample_is_a_pure_function_of_weights_and_seed():
    w = np.array([0.5, 0.0, 0.25, 0.25, 0.0])
    a = resample_indices(w, 1000, seed=3)
    assert a == resample_indices(w, 1000, seed=3)
    assert a != resample_indices(w, 1000, seed=4)
    assert len(a) == 1000 and a == sorted(a)
    counts = np.bincount(a, minlength=5)
    assert counts[1] == 0 and counts[4] == 0  # zero-weight rows are never drawn, trailing ones included
    assert abs(counts[0] / 1000 - 0.5) < 0.06 and abs(counts[2] / 1000 - 0.25) < 0.06


def test_bagging_bootstrap_is_deterministic_under_a_seed():
    a = bootstrap_indices(50, seed=42)
    assert a == bootstrap_indices(50, seed=42)
    assert a != bootstrap_indices(50, seed=43)
    assert len(a) == 50 and all(0 <= i < 50 for i in a)
    assert len(set(a)) < 50  # with replacement: ~63% unique
    # AdaBoost's first round (uniform weights) is the same draw as bagging's.
    assert resample_indices(np.ones(50), 50, seed=42) == a


def test_heldout_weight():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1, 0])  # one wrong of four
    step = heldout_weight(logits, labels, regression=False, num_classes=2)
    assert step.error == pytest.approx(0.25) and step.weight == pytest.approx(math.log(3))
    reg = heldout_weight(np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([1.0, 1.0, 3.0, 0.0]), regression=True, num_classes=1)
    assert reg.weight == pytest.approx(r2_step(np.ones(4), [0, 1, 0, 4]).weight)


@pytest.mark.parametrize("bad", [[], [1, -1], [0, 0], [1, float("nan")], [float("inf"), 1]])
def test_bad_sample_weights_are_refused(bad):
    with pytest.raises(ValueError):
        normalise(bad)
