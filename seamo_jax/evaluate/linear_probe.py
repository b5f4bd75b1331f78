"""Linear probe: multinomial logistic regression on frozen features.

Protocol (the L-BFGS logistic-regression probe of CLIP, Radford et al. 2021,
and sklearn's `LogisticRegression`, rather than MAE's SGD "linprobe"):

1. Features are standardised with the mean / std of the samples the
   classifier is fitted on (never with test statistics).
2. Objective: mean softmax cross-entropy + (l2 / 2) * ||W||_F^2 (bias not
   penalised), minimised full-batch with L-BFGS to a gradient-norm tolerance
   (`solver.minimise`).
3. The L2 weight is chosen from a fixed grid on a validation split carved
   from the training set (stratified, `val_fraction`, fixed `seed`): fit on
   train-minus-val, score top-1 accuracy on val; the best l2 (ties: the larger,
   i.e. simpler, model) is refitted on the whole training set and scored on
   test.

Everything is deterministic: no data order, no random init (weights start at
zero), the split comes from a seeded numpy Generator.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax.evaluate import solver, splits

DEFAULT_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def standardise(fit_features: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scales every array with the per-dimension mean/std of `fit_features` ([N, D]).

    Constant dimensions (std 0) are only centred, so they become 0, not NaN.
    Returns [fit_features_std, *others_std], float32.
    """
    fit_features = np.asarray(fit_features, np.float64)
    mean = fit_features.mean(0)
    std = fit_features.std(0)
    std = np.where(std > 0, std, 1.0)
    return [((np.asarray(x, np.float64) - mean) / std).astype(np.float32) for x in (fit_features, *others)]


def _softmax_objective(params, hyper, features, onehot, weights):
    logits = features @ params["w"] + params["b"]
    per_sample = -jnp.sum(onehot * jax.nn.log_softmax(logits), -1)
    data_term = jnp.sum(weights * per_sample) / jnp.sum(weights)  # weight 0 = padding row
    return data_term + 0.5 * hyper * jnp.sum(params["w"] ** 2)


def fit_softmax(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float, *,
                max_iter: int = 500, tol: float = 1e-5) -> tuple[dict, solver.SolverInfo]:
    """Fits W [D, C], b [C] on standardised features [N, D] with int labels [N]."""
    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]
    data = solver.pad_with_weights(np.asarray(features, np.float32), onehot)
    init = {"w": jnp.zeros((features.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    params, info = solver.minimise(_softmax_objective, init, l2, data, max_iter=max_iter, tol=tol)
    return jax.tree.map(np.asarray, params), info


def predict(params: dict, features: np.ndarray) -> np.ndarray:
    """Logits [N, C] of a fitted probe on standardised features [N, D]."""
    return np.asarray(features, np.float32) @ params["w"] + params["b"]


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int, l2_grid: Sequence[float] = DEFAULT_L2_GRID,
                 val_fraction: float = 0.2, seed: int = 0, max_iter: int = 500,
                 tol: float = 1e-5) -> dict:
    """Runs the full protocol above and returns a JSON-ready result.

    Args:
      train_features / test_features: [N, D] / [M, D] raw (unstandardised) features.
      train_labels / test_labels: [N] / [M] int class indices.
      l2_grid: candidate L2 weights; a one-element grid skips validation.
      val_fraction: share of each class held out of train to choose l2.
      seed: seed of the validation carve.
    Returns:
      dict with test `accuracy`, chosen `l2`, `val_accuracy` per l2,
      solver `iterations` and `converged` of the final fit.
    """
    train_labels = np.asarray(train_labels)
    val_accuracy: dict[str, float] = {}
    if len(l2_grid) > 1:
        fit_idx, val_idx = splits.stratified_holdout(train_labels, val_fraction, seed)
        fit_x, val_x = standardise(train_features[fit_idx], train_features[val_idx])
        for l2 in l2_grid:
            params, _ = fit_softmax(fit_x, train_labels[fit_idx], num_classes, l2, max_iter=max_iter, tol=tol)
            val_accuracy[repr(float(l2))] = float(np.mean(predict(params, val_x).argmax(-1) == train_labels[val_idx]))
        best = max(val_accuracy.values())
        # Ties go to the largest l2: the most regularised of the equally good models.
        chosen_l2 = max(float(l2) for l2 in l2_grid if val_accuracy[repr(float(l2))] == best)
    else:
        chosen_l2 = float(l2_grid[0])
    train_x, test_x = standardise(train_features, test_features)
    params, info = fit_softmax(train_x, train_labels, num_classes, chosen_l2, max_iter=max_iter, tol=tol)
    accuracy = float(np.mean(predict(params, test_x).argmax(-1) == np.asarray(test_labels)))
    return {"accuracy": accuracy, "l2": chosen_l2, "val_accuracy": val_accuracy,
            "iterations": info.iterations, "converged": info.converged, "final_loss": info.loss}
