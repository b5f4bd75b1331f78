"""Multi-label probe (BigEarthNet): per-class logistic regression, micro/macro mAP.

Protocol mirrors `linear_probe` (standardise with fit-set stats, full-batch
L-BFGS to convergence, L2 from a grid chosen on a stratified validation carve
by a fixed seed, refit on all training data), with an independent sigmoid
per class (one-vs-rest; all classes share the L2 weight and are fitted
jointly, which is the same optimum as fitting them one at a time) and mean
average precision as the metric:

- macro mAP: average precision per class, averaged over classes that have at
  least one positive in the evaluated set (AP is undefined without one);
- micro mAP: one AP over all (sample, class) pairs flattened.

The L2 weight is chosen by validation macro mAP.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax.evaluate import solver, splits
from seamo_jax.evaluate.linear_probe import DEFAULT_L2_GRID, predict, standardise


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP = mean over positives of precision at that positive's rank ([N] scores, [N] {0,1}).

    Ranking is by descending score; ties are ordered by index (stable sort) so
    the value is deterministic. Returns NaN when there is no positive.
    """
    targets = np.asarray(targets).astype(bool)
    if not targets.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = targets[order]
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at_rank[hits].mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> dict:
    """Macro and micro mAP of [N, K] scores against [N, K] multi-hot targets."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    per_class = [average_precision(scores[:, k], targets[:, k]) for k in range(targets.shape[1])]
    valid = [ap for ap in per_class if not np.isnan(ap)]
    return {"macro_map": float(np.mean(valid)) if valid else float("nan"),
            "micro_map": average_precision(scores.ravel(), targets.ravel()),
            "per_class_ap": per_class}


def _sigmoid_objective(params, hyper, features, targets, weights):
    logits = features @ params["w"] + params["b"]
    # Binary cross-entropy summed over classes, averaged over (non-padding) samples.
    per_sample = jnp.sum(jax.nn.softplus(logits) - targets * logits, -1)
    data_term = jnp.sum(weights * per_sample) / jnp.sum(weights)
    return data_term + 0.5 * hyper * jnp.sum(params["w"] ** 2)


def fit_sigmoid(features: np.ndarray, targets: np.ndarray, l2: float, *, max_iter: int = 500,
                tol: float = 1e-5) -> tuple[dict, solver.SolverInfo]:
    """Fits W [D, K], b [K] on standardised features [N, D] and multi-hot targets [N, K]."""
    data = solver.pad_with_weights(np.asarray(features, np.float32), np.asarray(targets, np.float32))
    init = {"w": jnp.zeros((features.shape[1], targets.shape[1])), "b": jnp.zeros((targets.shape[1],))}
    params, info = solver.minimise(_sigmoid_objective, init, l2, data, max_iter=max_iter, tol=tol)
    return jax.tree.map(np.asarray, params), info


def multilabel_probe(train_features: np.ndarray, train_targets: np.ndarray, test_features: np.ndarray,
                     test_targets: np.ndarray, *, l2_grid: Sequence[float] = DEFAULT_L2_GRID,
                     val_fraction: float = 0.2, seed: int = 0, max_iter: int = 500,
                     tol: float = 1e-5) -> dict:
    """Runs the multi-label protocol; returns test macro/micro mAP, chosen l2 and val mAP per l2.

    Shapes: features [N, D] / [M, D], targets multi-hot [N, K] / [M, K].
    """
    train_targets = np.asarray(train_targets)
    val_map: dict[str, float] = {}
    if len(l2_grid) > 1:
        fit_idx, val_idx = splits.stratified_holdout(train_targets, val_fraction, seed)
        fit_x, val_x = standardise(train_features[fit_idx], train_features[val_idx])
        for l2 in l2_grid:
            params, _ = fit_sigmoid(fit_x, train_targets[fit_idx], l2, max_iter=max_iter, tol=tol)
            val_map[repr(float(l2))] = mean_average_precision(predict(params, val_x),
                                                              train_targets[val_idx])["macro_map"]
        best = max(val_map.values())
        chosen_l2 = max(float(l2) for l2 in l2_grid if val_map[repr(float(l2))] == best)
    else:
        chosen_l2 = float(l2_grid[0])
    train_x, test_x = standardise(train_features, test_features)
    params, info = fit_sigmoid(train_x, train_targets, chosen_l2, max_iter=max_iter, tol=tol)
    metrics = mean_average_precision(predict(params, test_x), test_targets)
    return {"macro_map": metrics["macro_map"], "micro_map": metrics["micro_map"], "l2": chosen_l2,
            "val_macro_map": val_map, "iterations": info.iterations, "converged": info.converged,
            "final_loss": info.loss}
