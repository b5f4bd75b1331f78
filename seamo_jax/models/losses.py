"""Masked-patch reconstruction loss (MAE), reported per modality and season.

loss_m = mean over the masked patches of all views of modality m of
mean_pixels((pred - target)^2), with target = the view's patches, each
normalised by its own mean/variance when `norm_pix_loss` (MAE's default).
Visible patches contribute nothing. total = sum over modalities (SeaMo sums
optical and SAR losses).
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp


def normalise_patches(patches: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """Per-patch standardisation: [..., P] -> (x - mean) / sqrt(var + eps) over P."""
    mean = jnp.mean(patches, axis=-1, keepdims=True)
    var = jnp.var(patches, axis=-1, keepdims=True)
    return (patches - mean) / jnp.sqrt(var + eps)


def reconstruction_losses(preds: Mapping[str, jnp.ndarray], targets: Mapping[str, jnp.ndarray],
                          masks: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Masked MSE per modality and season.

    Args:
      preds: modality -> [B, S, T, P] predicted patches.
      targets: modality -> [B, S, T, P] target patches (already normalised if
        norm_pix_loss).
      masks: modality -> bool [B, S, T], True = masked (= scored).
    Returns:
      total: float32 scalar, sum over modalities.
      losses: {"total", m, f"{m}/season_{s}"} float32 scalars.
    """
    losses: dict[str, jnp.ndarray] = {}
    total = jnp.zeros((), jnp.float32)
    for m, pred in preds.items():
        per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - targets[m].astype(jnp.float32)), axis=-1)
        weight = masks[m].astype(jnp.float32)  # [B, S, T]
        per_season_sum = jnp.sum(per_patch * weight, axis=(0, 2))
        per_season_count = jnp.maximum(jnp.sum(weight, axis=(0, 2)), 1.0)
        losses[m] = jnp.sum(per_season_sum) / jnp.sum(per_season_count)
        for s in range(per_patch.shape[1]):
            losses[f"{m}/season_{s}"] = per_season_sum[s] / per_season_count[s]
        total = total + losses[m]
    losses["total"] = total
    return total, losses
