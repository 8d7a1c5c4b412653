import numpy as np
import pytest
from scipy import stats

from bebert_cli.metrics import accuracy, compute_metrics, f1, matthews_correlation
from bebert_cli.tasks import get_task

pred = np.array([1, 1, 0, 0, 1, 0, 1, 1])
ref = np.array([1, 0, 0, 1, 1, 0, 0, 1])


def test_hand_computed_classification_metrics():
    # tp=3 fp=2 fn=1 tn=2
    assert accuracy(pred, ref) == pytest.approx(5 / 8)
    assert f1(pred, ref) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    mcc = (3 * 2 - 2 * 1) / np.sqrt((3 + 2) * (3 + 1) * (2 + 2) * (2 + 1))
    assert matthews_correlation(pred, ref) == pytest.approx(mcc)


def test_constant_predictor_has_zero_mcc_not_nan():
    assert matthews_correlation(np.zeros(5, int), np.array([0, 1, 0, 1, 1])) == 0.0


def test_regression_metrics_match_scipy():
    rng = np.random.default_rng(0)
    p, r = rng.normal(size=50), rng.normal(size=50)
    m = compute_metrics(get_task("stsb"), p[:, None], r)
    assert m["pearson"] == pytest.approx(stats.pearsonr(p, r)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(p, r)[0])


def test_each_task_reports_its_official_metrics():
    logits = np.eye(2)[pred]
    assert set(compute_metrics(get_task("mrpc"), logits, ref)) == {"f1", "accuracy"}
    assert set(compute_metrics(get_task("cola"), logits, ref)) == {"matthews_correlation", "accuracy"}
    assert set(compute_metrics(get_task("sst2"), logits, ref)) == {"accuracy"}
