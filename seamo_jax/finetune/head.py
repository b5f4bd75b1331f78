"""The fine-tuning classifier: encoder -> global mean pool -> fc_norm -> linear head, and its losses.

As MAE's fine-tuning ViT (`models_vit.VisionTransformer(global_pool=True)`):
the patch tokens (cls excluded) are averaged, normalised by a fresh
LayerNorm `fc_norm`, and mapped to logits by a linear head initialised with
trunc_normal(std=2e-5) weights and zero bias. One difference: MAE drops the
encoder's final norm when it pools; SeaMo's `encode` returns tokens after
the pretrained final norm, so here the pooled vector passes through that
norm (per token) and then fc_norm.

Params of a fine-tune: {"encoder": <the SeaMo encoder tree>, "classifier":
{"fc_norm": {scale, bias}, "head": {kernel [D, K], bias [K]}}}, so
`train/optimizer.layer_decay_scales` (patterns on "encoder/...") gives the
blocks their decayed rates and the classifier the full rate.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from seamo_jax.evaluate import multilabel  # the probe's average precision, so fine-tune and probe numbers compare
from seamo_jax.models import layers

PyTree = Any
TASKS = ("single_label", "multi_label")


class Linear(nn.Module):
    """y = x @ kernel + bias; kernel [D, K] (logical ("embed", None)), MAE's head init."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.truncated_normal(stddev=2e-5)
        kernel = self.param("kernel", nn.with_logical_partitioning(init, ("embed", None)),
                            (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                          (self.features,), jnp.float32)
        return jnp.asarray(x, jnp.float32) @ kernel + bias


class ClassifierHead(nn.Module):
    """pooled [B, D] -> logits [B, num_classes] (float32)."""

    num_classes: int

    @nn.compact
    def __call__(self, pooled: jnp.ndarray) -> jnp.ndarray:
        x = layers.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name="fc_norm")(jnp.asarray(pooled, jnp.float32))
        return Linear(self.num_classes, name="head")(x)


def logits_fn(model: nn.Module, head: ClassifierHead, modalities: Sequence[str], seasons: Sequence[int], pool: str,
              params: PyTree, views: Mapping[str, jax.Array], offsets: jax.Array, *, train: bool,
              key: jax.Array | None = None) -> jax.Array:
    """Logits of the fine-tune model; `train` turns on drop path (needs `key`)."""
    rngs = {"dropout": key} if train else {}
    _, pooled = model.apply({"params": {"encoder": params["encoder"]}}, views, offsets, method="encode",
                            modalities=tuple(modalities), seasons=tuple(seasons), pool=pool, train=train, rngs=rngs)
    return head.apply({"params": params["classifier"]}, pooled)


def loss_fn(task: str, logits: jax.Array, target: jax.Array, *, label_smoothing: float) -> jax.Array:
    """Mean cross-entropy (single-label, smoothed one-hot) or mean sigmoid BCE over (sample, class) (multi-label)."""
    if task == "single_label":
        num_classes = logits.shape[-1]
        soft = optax.smooth_labels(jax.nn.one_hot(target, num_classes, dtype=jnp.float32), label_smoothing)
        return jnp.mean(optax.softmax_cross_entropy(logits, soft))
    if task == "multi_label":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.asarray(target, jnp.float32)))
    raise ValueError(f"unknown task {task!r}; use one of {TASKS}")


def batch_metric(task: str, logits: jax.Array, target: jax.Array) -> jax.Array:
    """Train-batch accuracy (single-label) or accuracy of the 0.5-thresholded labels (multi-label), for logs."""
    if task == "single_label":
        return jnp.mean((jnp.argmax(logits, -1) == target).astype(jnp.float32))
    return jnp.mean(((logits > 0) == (target > 0)).astype(jnp.float32))


def scores(task: str, logits: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Test / val metrics: top-1 (single-label) or micro / macro mAP (multi-label, the probe's AP definition)."""
    if task == "single_label":
        return {"top1": float(np.mean(np.argmax(logits, -1) == target))}
    maps = multilabel.mean_average_precision(logits, target)
    return {"micro_map": float(maps["micro_map"]), "macro_map": float(maps["macro_map"])}


# The headline metric of each task (val selection, tables first column).
PRIMARY_METRIC = {"single_label": "top1", "multi_label": "micro_map"}
