"""torchgeo-bench: L-BFGS logistic regression with a C sweep, kNN-5, bootstrap intervals.

Read from torchgeo/torchgeo-bench. The defaults here are those of commit
319734f (2025-10-27; the same eval settings as the initial commit c215b78):

- conf/config.yaml: eval.c_range [-7, 2, 20] -> C = 10 ** linspace(-7, 2, 20);
  eval.bootstrap 500; eval.merge_val true; dataset.batch_size 64,
  normalization mean_stdev, image_size 224, interpolation bilinear.
- torchgeo_bench.py `evaluate_logistic`: for every C fit
  src/linear.py LogisticRegression(C, max_iter=2000, tol=1e-6) on the raw
  (unstandardised) train embeddings, score val accuracy; keep the first C
  with a strictly better val score; refit with max_iter 4000 on train + val
  (merge_val) and predict test. `evaluate_knn`: sklearn
  KNeighborsClassifier(n_neighbors=5) (Euclidean, uniform weights, majority
  vote, ties -> the smaller class) fitted on train only. `bootstrap_accuracy`:
  rng = default_rng(seed), n_boot resamples rng.integers(0, n, n) of the test
  set, CI = 2.5 / 97.5 percentiles of the resampled accuracy, point estimate
  = accuracy on the full test set.
- src/linear.py: multinomial softmax, objective
  mean cross-entropy + 0.5 / (C n) * ||W||^2 (bias not penalised), i.e.
  scikit-learn's C * sum(loss) + ||W||^2 / 2 divided by C n; torch LBFGS
  (history 10, strong-Wolfe line search, tolerance_grad 1e-7,
  tolerance_change 1e-7), zero bias / torch-default weight init (convex, so
  the optimum does not depend on it).
- src/datasets.py, src/geobench_dataset.py: GeoBench bands red, green, blue;
  z-score per band with the GeoBench band statistics ((x - mean) / (std + 1e-8));
  then F.interpolate to 224 x 224, bilinear, align_corners=False.
- That commit is single-label only (m-bigearthnet "TODO"). Multi-label here
  follows the HEAD version (0660813, 2026-07-01,
  src/torchgeo_bench/{main.py, linear.py, knn.py}): per-class sigmoid with
  BCEWithLogits mean over n * K + 0.5 / (C n K) ||W||^2 (= one scikit-learn
  binary logistic regression per class with the same C), C chosen by val
  micro mAP (sklearn average_precision_score(average="micro")); kNN-5 scores
  = fraction of the 5 Euclidean neighbours carrying each label, micro mAP;
  `bootstrap_map` skips resamples without a positive.
  HEAD also changed the defaults: c_range [-6, 4, 40], bootstrap 200, bands
  rgb, normalization bandspec_zscore; pass `c_grid` / `num_bootstrap` to use them.

Here the fits use `seamo_jax.evaluate.solver` (optax L-BFGS, zoom line
search, stop at gradient norm < tol or max_iter) through
`linear_probe.fit_softmax` / `multilabel.fit_sigmoid` with l2 = 1 / (C n).
"""

from __future__ import annotations

import numpy as np

from seamo_jax.evaluate import linear_probe, multilabel
from seamo_jax.evaluate.protocols import common

NAME = "torchgeo_bench"
C_GRID = tuple(float(c) for c in 10.0 ** np.linspace(-7.0, 2.0, 20))
DEFAULTS = {
    "c_grid": "10 ** linspace(-7, 2, 20)",
    "num_bootstrap": 500,
    "confidence": 95.0,
    "merge_val": True,
    "knn_k": 5,
    "knn_metric": "euclidean, uniform majority vote",
    "sweep_max_iter": 2000,
    "final_max_iter": 4000,
    "tol": 1e-6,
    "features": "raw (not standardised)",
    "selection": "first C with the strictly best val score; refit on train + val",
}


def _fit(task: str, x: np.ndarray, y: np.ndarray, num_classes: int, c: float, max_iter: int, tol: float):
    l2 = 1.0 / (c * len(x))
    if task == "single_label":
        params, info = linear_probe.fit_softmax(x, y, num_classes, l2, max_iter=max_iter, tol=tol)
    else:
        params, info = multilabel.fit_sigmoid(x, y, l2, max_iter=max_iter, tol=tol)
    return params, info


def _metric(task: str, scores: np.ndarray, y: np.ndarray) -> float:
    if task == "single_label":
        return common.top1_accuracy(scores, y)
    return common.micro_average_precision(scores, y)


def _with_interval(task: str, scores: np.ndarray, y: np.ndarray, num_bootstrap: int, seed: int,
                   confidence: float) -> dict:
    if task == "single_label":
        correct = (np.asarray(scores).argmax(-1) if np.ndim(scores) == 2 else np.asarray(scores)) == y

        def statistic(idx):
            return float(correct[idx].mean())
    else:
        def statistic(idx):
            return common.micro_average_precision(scores[idx], y[idx])
    out = {"test": _metric(task, scores, y), "ci_low": None, "ci_high": None, "bootstrap_resamples": 0,
           "confidence": confidence}
    if num_bootstrap > 0:
        low, high, used = common.bootstrap_interval(statistic, len(y), num_resamples=num_bootstrap, seed=seed,
                                                    confidence=confidence)
        out.update(ci_low=low, ci_high=high, bootstrap_resamples=used)
    return out


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, *, task: str, num_classes: int,
               k: int = 5) -> np.ndarray:
    """Euclidean kNN: [Q, C] neighbour vote counts (single_label) or label fractions (multi_label)."""
    _, idx = common.nearest_neighbours(train_x, query_x, k, "euclidean")
    if task == "single_label":
        votes = np.zeros((len(query_x), num_classes))
        np.add.at(votes, (np.arange(len(query_x))[:, None], train_y[idx]), 1.0)
        return votes                                                  # argmax: ties -> smaller class
    return train_y[idx].mean(1)


def run(inputs: common.ProbeInputs, *, seed: int = 0, dataset_kind: str | None = None, c_grid=C_GRID,
        num_bootstrap: int = DEFAULTS["num_bootstrap"], confidence: float = DEFAULTS["confidence"],
        merge_val: bool = True, knn_k: int = DEFAULTS["knn_k"], sweep_max_iter: int = DEFAULTS["sweep_max_iter"],
        final_max_iter: int = DEFAULTS["final_max_iter"], tol: float = DEFAULTS["tol"]) -> dict:
    """torchgeo-bench logistic regression and kNN on frozen features.

    Args:
      inputs: validated features (val needed: it picks C).
      seed: seeds the bootstrap (the fits are deterministic).
      dataset_kind: unused, accepted for a uniform API.
      c_grid: inverse L2 strengths swept (default 20 values, 1e-7 .. 1e2).
      num_bootstrap: test resamples for the interval (0: none).
    Returns:
      {"linear_probe": {...}, "knn_k5": {...}}: test metric with ci_low / ci_high.
    """
    del dataset_kind
    task, num_classes = inputs.task, inputs.num_classes
    train_x, train_y = inputs.train_x, inputs.train_y
    variant = common.TOP1_OA if task == "single_label" else common.MICRO_MAP
    c_grid = [float(c) for c in c_grid]
    if not c_grid or min(c_grid) <= 0:
        raise ValueError(f"c_grid must be positive values, got {c_grid}")
    val_scores: list[float] = []
    best_c, best_val = None, -1.0
    for c in c_grid:
        params, _ = _fit(task, train_x, train_y, num_classes, c, sweep_max_iter, tol)
        score = _metric(task, linear_probe.predict(params, inputs.val_x), inputs.val_y)
        val_scores.append(score)
        if score > best_val:
            best_c, best_val = c, score
    final_x, final_y = train_x, train_y
    if merge_val:
        final_x = np.concatenate([train_x, inputs.val_x])
        final_y = np.concatenate([train_y, inputs.val_y])
    params, info = _fit(task, final_x, final_y, num_classes, best_c, final_max_iter, tol)
    test_scores = linear_probe.predict(params, inputs.test_x)
    linear = {"metric_variant": variant, "val": best_val,
              **_with_interval(task, test_scores, inputs.test_y, num_bootstrap, seed, confidence),
              "hyperparameters": {"C": best_c, "merge_val": merge_val, "num_fit": len(final_x),
                                  "solver_iterations": info.iterations, "solver_converged": info.converged},
              "sweep": [{"C": c, "val": v} for c, v in zip(c_grid, val_scores)]}
    knn_test = knn_scores(train_x, train_y, inputs.test_x, task=task, num_classes=num_classes, k=knn_k)
    knn_val = knn_scores(train_x, train_y, inputs.val_x, task=task, num_classes=num_classes, k=knn_k)
    knn = {"metric_variant": variant, "val": _metric(task, knn_val, inputs.val_y),
           **_with_interval(task, knn_test, inputs.test_y, num_bootstrap, seed, confidence),
           "hyperparameters": {"k": int(knn_k), "metric": "euclidean"}}
    return {"linear_probe": linear, f"knn_k{knn_k}": knn}


PROTOCOL = common.Protocol(
    name=NAME,
    description="torchgeo-bench: L-BFGS logistic regression, C from 20 values in [1e-7, 1e2] on val, "
                "refit on train+val; Euclidean kNN-5; 95% bootstrap interval (500 test resamples)",
    methods=("linear_probe", "knn_k5"),
    primary_method="linear_probe",
    metric_variants={"single_label": {"linear_probe": common.TOP1_OA, "knn_k5": common.TOP1_OA},
                     "multi_label": {"linear_probe": common.MICRO_MAP, "knn_k5": common.MICRO_MAP}},
    input_size=224,
    input_interpolation="bilinear (F.interpolate, align_corners=False)",
    normalisation="RGB bands, z-score per band with GeoBench band statistics ((x - mean) / (std + 1e-8)), "
                  "before resizing",
    source="torchgeo/torchgeo-bench@319734f torchgeo_bench.py, src/linear.py, src/datasets.py, "
           "src/geobench_dataset.py, conf/config.yaml; multi-label from @0660813 src/torchgeo_bench/"
           "{main.py, linear.py, knn.py}",
    hyperparameters=DEFAULTS,
    uses_val=True,
    accepts_views=False,
    run=run,
)
