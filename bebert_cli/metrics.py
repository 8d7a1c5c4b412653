"""Classification and regression metrics (GLUE's and macro F1), from numpy arrays of predictions and references."""

from __future__ import annotations

import numpy as np
from scipy import stats

from bebert_cli.tasks import GlueTask


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    return float((pred == ref).mean())


def f1(pred: np.ndarray, ref: np.ndarray) -> float:
    """Binary F1 of the positive class (label 1), as GLUE scores MRPC and QQP."""
    tp = float(((pred == 1) & (ref == 1)).sum())
    fp = float(((pred == 1) & (ref != 1)).sum())
    fn = float(((pred != 1) & (ref == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(pred: np.ndarray, ref: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over the classes present in the references or predictions."""
    from sklearn.metrics import f1_score

    return float(f1_score(ref, pred, average="macro", zero_division=0))


def matthews_correlation(pred: np.ndarray, ref: np.ndarray) -> float:
    """Matthews correlation; 0.0 when it is undefined (a constant predictor), as sklearn does."""
    if max(int(pred.max(initial=0)), int(ref.max(initial=0))) > 1:  # K > 2 classes: the multi-class form
        from sklearn.metrics import matthews_corrcoef

        return float(matthews_corrcoef(ref, pred))
    tp = float(((pred == 1) & (ref == 1)).sum())
    tn = float(((pred == 0) & (ref == 0)).sum())
    fp = float(((pred == 1) & (ref == 0)).sum())
    fn = float(((pred == 0) & (ref == 1)).sum())
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)


def _correlation(fn, pred: np.ndarray, ref: np.ndarray) -> float:
    # A constant prediction has no defined correlation; report 0 rather than NaN so gates work.
    if np.std(pred) == 0 or np.std(ref) == 0:
        return 0.0
    return float(fn(pred, ref)[0])


METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews_correlation": matthews_correlation,
    "pearson": lambda p, r: _correlation(stats.pearsonr, p, r),
    "spearman": lambda p, r: _correlation(stats.spearmanr, p, r),
}


def predictions_from_logits(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    if task.is_regression:
        return logits.reshape(-1).astype(np.float64)
    return logits.argmax(axis=-1)


def compute_metrics(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All of the task's metrics, as fractions (accuracy 0.893, not 89.3)."""
    pred = predictions_from_logits(task, logits)
    ref = labels.astype(np.float64) if task.is_regression else labels.astype(np.int64)
    return {name: METRICS[name](pred, ref) for name in task.metrics}
