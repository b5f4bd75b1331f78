"""Shared pieces of the published probe protocols.

- `Protocol`: what a benchmark's protocol is (name, metrics, input settings, source).
- `check_inputs` -> `ProbeInputs`: one place that validates shapes, dtypes and label ranges.
- Metrics: top-1 overall accuracy, average precision (scikit-learn's step
  definition, ties grouped), micro mAP, micro F1 at a threshold, percentile
  bootstrap intervals.
- `nearest_neighbours`: chunked float64 k-NN search.
- The BatchNorm + Linear heads and their minibatch plan: `bn_linear`.

All metric values are fractions in [0, 1] (0.975, not 97.5).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

TASKS = ("single_label", "multi_label")
DATASET_KINDS = ("eurosat", "bigearthnet", None)

# Metric variants: every result names the one it reports.
TOP1_OA = "top1_oa"              # single-label top-1 overall accuracy
MICRO_MAP = "micro_map"          # multi-label average precision over all (sample, class) pairs
MACRO_MAP = "macro_map"          # multi-label AP per class, averaged over classes
MICRO_F1_05 = "micro_f1@0.5"     # multi-label micro F1 of sigmoid(logit) > 0.5


class TooFewSamplesError(ValueError):
    """The training set is too small for the protocol as published (e.g. copernicus_bench's drop_last)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Protocol:
    """A published frozen-feature evaluation protocol.

    Attributes:
      name: registry key.
      description: one line.
      methods: result keys this protocol produces (e.g. "linear_probe", "knn_k20").
      primary_method: the method whose test metric is the protocol's headline number.
      metric_variants: task -> {method -> metric variant}.
      input_size: side length (pixels) the benchmark resizes images to before the
        encoder; None = native tile size.
      input_interpolation: resize kernel ("bilinear"), None without resizing.
      normalisation: how the benchmark normalises input bands before the encoder.
      source: repository, commit and files the settings were read from.
      hyperparameters: the protocol's defaults (JSON-ready).
      uses_val: whether the validation split takes part (selection / refit).
      accepts_views: whether train features may carry augmented views [A, N, D].
    """

    name: str
    description: str
    methods: tuple[str, ...]
    primary_method: str
    metric_variants: Mapping[str, Mapping[str, str]]
    input_size: int | None
    input_interpolation: str | None
    normalisation: str
    source: str
    hyperparameters: Mapping[str, Any]
    uses_val: bool
    accepts_views: bool
    run: Callable[..., dict] = dataclasses.field(repr=False)

    def metric_variant(self, task: str, method: str | None = None) -> str:
        """Metric variant of `method` (default: the primary one) for `task`."""
        return self.metric_variants[task][method or self.primary_method]

    def describe(self) -> dict:
        """JSON-ready description (everything but the run function)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "run"}
        out["methods"] = list(self.methods)
        out["metric_variants"] = {t: dict(m) for t, m in self.metric_variants.items()}
        out["hyperparameters"] = dict(self.hyperparameters)
        return out


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeInputs:
    """Validated frozen features and labels.

    train_views: [A, N, D] float32 (A = 1 without augmentation; view 0 is the plain one).
    *_y: [n] int64 class indices (single_label) or [n, C] float32 multi-hot (multi_label).
    val_x / val_y: None when no validation split was given.
    """

    train_views: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray | None
    val_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray
    task: str
    num_classes: int

    @property
    def train_x(self) -> np.ndarray:
        """[N, D] un-augmented train features (view 0)."""
        return self.train_views[0]

    @property
    def num_views(self) -> int:
        return int(self.train_views.shape[0])

    def targets(self, y: np.ndarray) -> np.ndarray:
        """[n, C] float32 one-hot (single_label) or the multi-hot labels themselves."""
        if self.task == "single_label":
            return np.eye(self.num_classes, dtype=np.float32)[y]
        return np.asarray(y, np.float32)


def _features(name: str, x: Any, ndims: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want} (samples x features), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    return x


def _labels(name: str, y: Any, num_rows: int, task: str, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if task == "single_label":
        if y.ndim != 1:
            raise ValueError(f"{name} must be 1-D class indices for single_label, got shape {y.shape}")
        if y.size and not (np.issubdtype(y.dtype, np.integer) or
                           (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
            raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}): min {y.min()}, max {y.max()}")
    else:
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"{name} must be [n, {num_classes}] multi-hot for multi_label, got shape {y.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"{name} must be multi-hot (only 0 and 1)")
        y = y.astype(np.float32)
    if len(y) != num_rows:
        raise ValueError(f"{name} has {len(y)} rows but its features have {num_rows}")
    return y


def check_inputs(*, train_x: Any, train_y: Any, val_x: Any, val_y: Any, test_x: Any, test_y: Any,
                 task: str, num_classes: int, require_val: bool, allow_views: bool,
                 protocol: str) -> ProbeInputs:
    """Validates a probe's arrays and returns them as `ProbeInputs` (raises ValueError).

    Args:
      train_x: [N, D] features, or [A, N, D] augmented views (only where `allow_views`).
      train_y / val_y / test_y: [n] int classes in [0, num_classes) or [n, num_classes] multi-hot.
      val_x: [Nv, D] or None (an error where `require_val`).
      test_x: [Nt, D].
      task: "single_label" or "multi_label".
      num_classes: C >= 2.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    num_classes = int(num_classes)
    views = _features("train_x", train_x, (2, 3))
    if views.ndim == 2:
        views = views[None]
    elif views.shape[0] > 1 and not allow_views:
        raise ValueError(f"protocol {protocol!r} takes no augmented views: train_x must be [N, D] "
                         f"(or [1, N, D]), got shape {views.shape}")
    if views.shape[0] < 1 or views.shape[1] < 1 or views.shape[2] < 1:
        raise ValueError(f"train_x must have at least one view, sample and feature, got shape {views.shape}")
    dim = views.shape[2]
    train_y = _labels("train_y", train_y, views.shape[1], task, num_classes)
    test_x = _features("test_x", test_x, (2,))
    if test_x.shape[1] != dim:
        raise ValueError(f"test_x has {test_x.shape[1]} features, train_x has {dim}")
    if len(test_x) == 0:
        raise ValueError("test_x is empty")
    test_y = _labels("test_y", test_y, len(test_x), task, num_classes)
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither")
    if val_x is None:
        if require_val:
            raise ValueError(f"protocol {protocol!r} needs a validation split (val_x, val_y)")
    else:
        val_x = _features("val_x", val_x, (2,))
        if val_x.shape[1] != dim:
            raise ValueError(f"val_x has {val_x.shape[1]} features, train_x has {dim}")
        if len(val_x) == 0:
            raise ValueError("val_x is empty")
        val_y = _labels("val_y", val_y, len(val_x), task, num_classes)
    return ProbeInputs(views, train_y, val_x, val_y, test_x, test_y, task, num_classes)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def top1_accuracy(scores_or_predictions: np.ndarray, labels: np.ndarray) -> float:
    """Overall top-1 accuracy of [n, C] scores (argmax, ties -> lower class) or [n] predictions."""
    pred = np.asarray(scores_or_predictions)
    if pred.ndim == 2:
        pred = pred.argmax(-1)
    return float(np.mean(pred == np.asarray(labels)))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision as scikit-learn / torchmetrics define it: sum_n (R_n - R_{n-1}) P_n.

    Thresholds are the distinct scores (descending), so tied scores enter
    together (no dependence on sample order). [n] scores, [n] {0, 1}; NaN when
    there is no positive.
    """
    scores = np.asarray(scores, np.float64).ravel()
    targets = np.asarray(targets).ravel() > 0
    num_pos = int(targets.sum())
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, targets = scores[order], targets[order]
    # The last index of every run of equal scores is a threshold.
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tp = np.cumsum(targets)[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / num_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def micro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Micro mAP: one AP over every (sample, class) pair of [n, C] scores / multi-hot targets."""
    return average_precision(np.asarray(scores).ravel(), np.asarray(targets).ravel())


def micro_f1(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Micro F1 of [n, C] binary predictions: 2 TP / (2 TP + FP + FN), 0 when nothing is positive."""
    pred = np.asarray(predictions).astype(bool)
    true = np.asarray(targets).astype(bool)
    tp = float(np.sum(pred & true))
    denom = 2 * tp + float(np.sum(pred & ~true)) + float(np.sum(~pred & true))
    return 2 * tp / denom if denom > 0 else 0.0


def bootstrap_interval(statistic: Callable[[np.ndarray], float], num_samples: int, *, num_resamples: int,
                       seed: int, confidence: float = 95.0) -> tuple[float, float, int]:
    """Percentile bootstrap interval of `statistic(indices)` over resamples of the test set.

    Draws `num_resamples` index vectors of length `num_samples` with
    replacement (numpy default_rng(seed).integers, all at once), drops
    resamples whose statistic is NaN (e.g. AP of a resample with no positive),
    and returns (low, high, resamples_used) at the (100 - confidence) / 2 and
    100 - that percentiles.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_samples, size=(num_resamples, num_samples))
    values = np.asarray([statistic(row) for row in idx], np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), 0
    tail = (100.0 - confidence) / 2.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)), int(values.size)



# ----------------------------------------------------------------------------------------------
# Nearest neighbours (float64 numpy, chunked over queries)
# ----------------------------------------------------------------------------------------------


def nearest_neighbours(train: np.ndarray, queries: np.ndarray, k: int, metric: str,
                       chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar train rows of every query, most similar first.

    metric "cosine": similarity = cosine (rows L2-normalised, zero rows stay
    zero), returns (similarity [Q, k], index [Q, k]); "euclidean": returns
    (distance [Q, k], index [Q, k]) ascending. Ties between equal scores go to
    the lower train index. k is clipped to N.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    train = np.asarray(train, np.float64)
    k = min(int(k), len(train))
    if metric == "cosine":
        train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    train_sq = np.sum(train ** 2, 1)
    values, indices = [], []
    for start in range(0, len(queries), chunk_size):
        q = np.asarray(queries[start:start + chunk_size], np.float64)
        if metric == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            score = -(q @ train.T)                                              # lower = closer
        else:
            score = np.maximum(np.sum(q ** 2, 1)[:, None] - 2 * q @ train.T + train_sq[None], 0.0)
        order = np.argsort(score, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(score, order, 1)
        values.append(-best if metric == "cosine" else np.sqrt(best))
        indices.append(order)
    if not values:
        return np.zeros((0, k)), np.zeros((0, k), np.int64)
    return np.concatenate(values), np.concatenate(indices)
