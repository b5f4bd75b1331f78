"""Weighted k-nearest-neighbour classifier on frozen features (DINO protocol).

Caron et al. 2021 ("Emerging Properties in Self-Supervised Vision
Transformers", code `eval_knn.py`): features are L2-normalised, similarity is
cosine, the k = 20 most similar training samples vote for their label with
weight exp(similarity / T), T = 0.07, and the class with the largest summed
weight wins. No training, no hyper-parameters fitted on the test set.

Ties between equal similarities are broken by the lower training index
(`jax.lax.top_k` is stable), and ties between equal class scores by the lower
class index (`argmax`), so the result is deterministic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax.evaluate import solver

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def _l2_normalise(x: jax.Array) -> jax.Array:
    # The epsilon keeps an all-zero feature (e.g. a dead random encoder) finite.
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_class_scores(train_features: jax.Array, train_labels: jax.Array, train_valid: jax.Array,
                      query_features: jax.Array, k: int, temperature: float, num_classes: int) -> jax.Array:
    """Summed vote weights per class. Shapes: [N, D], [N], [N] bool, [Q, D] -> [Q, num_classes]."""
    similarity = _l2_normalise(query_features) @ _l2_normalise(train_features).T  # [Q, N]
    similarity = jnp.where(train_valid[None, :], similarity, -jnp.inf)  # padding rows are never neighbours
    top_sim, top_idx = jax.lax.top_k(similarity, k)                              # [Q, k]
    weights = jnp.exp(top_sim / temperature)
    neighbour_onehot = jax.nn.one_hot(train_labels[top_idx], num_classes)         # [Q, k, C]
    return jnp.einsum("qk,qkc->qc", weights, neighbour_onehot)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray, query_features: np.ndarray, *,
                num_classes: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Predicts labels of queries by temperature-weighted cosine kNN votes.

    Args:
      train_features: [N, D] float features of the labelled set.
      train_labels: [N] int labels in [0, num_classes).
      query_features: [Q, D] features to classify.
      k: neighbours (clipped to N when the labelled set is smaller).
      temperature: vote weight is exp(cosine / temperature).
      chunk_size: queries per jitted call, bounds the [chunk, N] similarity matrix.
    Returns:
      (predictions [Q] int32, class_scores [Q, num_classes] float32).
    """
    # Rows are zero-padded to powers of two so probes of similar size share one compilation.
    num_train = len(train_features)
    k = min(int(k), num_train)
    train_x, train_y, train_valid = solver.pad_with_weights(np.asarray(train_features, np.float32),
                                                            np.asarray(train_labels, np.float32))
    train_y, train_valid = train_y.astype(jnp.int32), train_valid > 0
    scores = []
    for start in range(0, len(query_features), chunk_size):
        chunk = np.asarray(query_features[start:start + chunk_size], np.float32)
        padded, _, _ = solver.pad_with_weights(chunk, np.zeros(len(chunk), np.float32))
        chunk_scores = _knn_class_scores(train_x, train_y, train_valid, padded, k, temperature, num_classes)
        scores.append(np.asarray(chunk_scores)[:len(chunk)])
    class_scores = np.concatenate(scores, 0) if scores else np.zeros((0, num_classes), np.float32)
    return class_scores.argmax(-1).astype(np.int32), class_scores


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int, k: int = DEFAULT_K,
                 temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Top-1 accuracy of `knn_predict` on a labelled test set ([N, D], [N], [Q, D], [Q])."""
    predictions, _ = knn_predict(train_features, train_labels, test_features, num_classes=num_classes,
                                 k=k, temperature=temperature)
    return float(np.mean(predictions == np.asarray(test_labels)))
