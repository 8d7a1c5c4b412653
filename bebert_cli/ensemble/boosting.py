"""The arithmetic of BEBERT ensembles: AdaBoost (SAMME, AdaBoost.R2), bagging, resampling.

Pure numpy functions, no torch, no I/O: they are the hand-checkable part of `bebert ensemble`.

SAMME (classification, K classes), one round with sample weights w (sum 1):
    err   = sum_i w_i [wrong_i] / sum_i w_i, clipped to [1e-10, 1 - 1e-10]
    alpha = log((1 - err) / err) + log(K - 1)
    w_i  <- w_i * exp(alpha [wrong_i]), then renormalised to sum 1.

AdaBoost.R2 (regression, Drucker 1997, linear loss), one round:
    loss_i = |y_i - f(x_i)| / max_j |y_j - f(x_j)|   (all 0 when every prediction is exact)
    L      = sum_i w_i loss_i / sum_i w_i, clipped to [1e-10, 1 - 1e-10]
    beta   = L / (1 - L);   weight = log(1 / beta)
    w_i   <- w_i * beta ** (1 - loss_i), then renormalised (well-predicted rows go down).
  Members are combined by the weighted mean of their predictions (not R2's weighted median:
  the ensemble is one differentiable-shaped model whose output is a weighted average).

A member no better than chance (SAMME: err >= 1 - 1/K, i.e. alpha <= 0; R2: L >= 0.5; both up to
CHANCE_TOL for rounding) is
KEPT with the small positive weight CHANCE_WEIGHT, and the sample weights are left unchanged
(the next round draws a fresh resample with its own seed). Stopping early, as textbook AdaBoost
does, would silently return fewer members than asked for, and with binary members the first
rounds on a small dataset are often near chance; a tiny weight makes such a member all but
silent in the combination while keeping `--members N` meaning N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ERR_CLIP = 1e-10
CHANCE_WEIGHT = 1e-3
CHANCE_TOL = 1e-9  # an error within rounding of the chance level is chance (SAMME re-weighting puts the
                   # previous member at exactly 1 - 1/K, so a copy of it lands there up to rounding)


@dataclass(frozen=True)
class BoostStep:
    weight: float  # the member's weight in the combination (SAMME alpha, R2 log(1/beta), or CHANCE_WEIGHT)
    error: float  # its weighted error (SAMME) or weighted average loss (R2), clipped
    sample_weights: np.ndarray  # the next round's sample weights (sum 1)
    chance: bool  # no better than chance: kept with CHANCE_WEIGHT, sample weights unchanged


def normalise(weights) -> np.ndarray:
    """Sample weights as float64 summing to 1; refuses negative, non-finite or all-zero weights."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0:
        raise ValueError("no sample weights")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("sample weights sum to zero")
    return w / total


def resample_indices(weights, n: int, seed: int) -> list[int]:
    """n row indices drawn with replacement, row i with probability w_i / sum(w); a pure function of
    (weights, n, seed). Sorted (training shuffles with its own seed; sorted selects are cheaper)."""
    p = normalise(weights)
    if n < 1:
        raise ValueError("cannot draw an empty resample")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    u = rng.random(n)  # uniform [0, 1): the one primitive whose stream numpy keeps stable
    cdf = np.cumsum(p)
    cdf /= cdf[-1]  # exactly 1 from the last positive row on: zero-weight rows are never drawn
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), len(p) - 1)
    return sorted(int(i) for i in idx)


def bootstrap_indices(n: int, seed: int) -> list[int]:
    """A bagging bootstrap: n rows drawn uniformly with replacement."""
    return resample_indices(np.ones(n), n, seed)


def samme_step(sample_weights, wrong, num_classes: int) -> BoostStep:
    """One SAMME round from the member's mistakes on the (full) training set."""
    w = normalise(sample_weights)
    wrong = np.asarray(wrong, dtype=bool).reshape(-1)
    if wrong.shape != w.shape:
        raise ValueError(f"{wrong.size} predictions for {w.size} sample weights")
    k = max(int(num_classes), 2)
    err = float(np.sum(w[wrong]) / np.sum(w))
    err = min(max(err, ERR_CLIP), 1.0 - ERR_CLIP)
    if err >= 1.0 - 1.0 / k - CHANCE_TOL:
        return BoostStep(CHANCE_WEIGHT, err, w, True)
    alpha = math.log((1.0 - err) / err) + math.log(k - 1)
    new = w * np.exp(alpha * wrong)
    return BoostStep(alpha, err, new / new.sum(), False)


def r2_step(sample_weights, abs_errors) -> BoostStep:
    """One AdaBoost.R2 round (linear loss) from the member's absolute errors on the training set."""
    w = normalise(sample_weights)
    e = np.abs(np.asarray(abs_errors, dtype=np.float64).reshape(-1))
    if e.shape != w.shape:
        raise ValueError(f"{e.size} errors for {w.size} sample weights")
    if not np.all(np.isfinite(e)):
        raise ValueError("prediction errors must be finite")
    emax = float(e.max())
    loss = e / emax if emax > 0 else np.zeros_like(e)
    avg = float(np.sum(w * loss) / np.sum(w))
    avg = min(max(avg, ERR_CLIP), 1.0 - ERR_CLIP)
    if avg >= 0.5 - CHANCE_TOL:
        return BoostStep(CHANCE_WEIGHT, avg, w, True)
    beta = avg / (1.0 - avg)
    new = w * np.power(beta, 1.0 - loss)
    return BoostStep(math.log(1.0 / beta), avg, new / new.sum(), False)


def heldout_weight(logits, labels, *, regression: bool, num_classes: int) -> BoostStep:
    """A member's weight fitted on a held-out slice (`--from`): one boosting step from uniform weights.

    Classification: SAMME alpha from the member's plain held-out error rate; regression: R2's
    log(1/beta) from its average normalised absolute error. Each member is weighed on its own
    (the members were not trained in sequence, so there is no re-weighting between them).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    uniform = np.ones(len(labels))
    if regression:
        return r2_step(uniform, logits.reshape(-1) - labels.astype(np.float64))
    return samme_step(uniform, logits.argmax(axis=-1) != labels.astype(np.int64), num_classes)
