"""Texture features: a no-learning baseline that sees local spatial structure.

`band_stats` (per-band mean and std) is blind to how values are arranged: a
checkerboard and a smooth ramp with equal mean and std look the same to it.
Hand-made texture descriptors, the classic remote-sensing answer before deep
features, are the next baseline a foundation model has to beat. Per modality,
season and band of the raw views (sensor units; the probe standardises every
dimension afterwards) we take:

  mean, std                 what band_stats has;
  gradient                  mean gradient magnitude (edge density, boundaries, streets);
  local_std                 mean 3x3-window standard deviation (fine-scale roughness: speckle,
                            crowns, buildings) - it ignores tile-scale gradients that inflate std;
  glcm_contrast, glcm_homogeneity, glcm_energy, glcm_correlation
                            Haralick statistics of the grey-level co-occurrence matrix at
                            distance 1, symmetric, averaged over the row and column directions, on
                            8 levels spanning mean +- 2 std of each image (so they describe
                            arrangement, not brightness or contrast).

Pure numpy, chunked over samples so memory stays small; deterministic.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from seamo_jax.evaluate import band_stats

FEATURE_NAMES: tuple[str, ...] = ("mean", "std", "gradient", "local_std", "glcm_contrast", "glcm_homogeneity",
                                  "glcm_energy", "glcm_correlation")
GLCM_LEVELS = 8


def _box3_mean(images: np.ndarray) -> np.ndarray:
    """3x3 window mean over the valid region: [B, H, W] -> [B, H-2, W-2] (separable: rows, then columns)."""
    rows = images[:, :-2] + images[:, 1:-1] + images[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9.0


def _glcm(levels: np.ndarray) -> np.ndarray:
    """Symmetric normalised co-occurrence matrices at distance 1, rows and columns averaged.

    Args:
      levels: int64 [B, H, W] in [0, GLCM_LEVELS).
    Returns:
      float64 [B, L, L], each summing to 1.
    """
    count = len(levels)
    square = GLCM_LEVELS * GLCM_LEVELS
    base = (np.arange(count, dtype=np.int64) * square)[:, None, None]
    total = np.zeros(count * square, np.float64)
    for first, second in ((levels[:, :, :-1], levels[:, :, 1:]), (levels[:, :-1, :], levels[:, 1:, :])):
        total += np.bincount((base + first * GLCM_LEVELS + second).ravel(), minlength=count * square)
    matrices = total.reshape(count, GLCM_LEVELS, GLCM_LEVELS)
    # Both orders of every pair: the matrix is symmetric (direction-free texture).
    matrices = matrices + np.swapaxes(matrices, 1, 2)
    return matrices / matrices.sum(axis=(1, 2), keepdims=True)


def image_texture(images: np.ndarray) -> np.ndarray:
    """Texture features of single-band images.

    Args:
      images: [B, H, W] (H, W >= 3), any real dtype.
    Returns:
      float64 [B, len(FEATURE_NAMES)] in FEATURE_NAMES order.
    """
    images = np.asarray(images)
    if images.ndim != 3 or min(images.shape[1:]) < 3:
        raise ValueError(f"image_texture needs [B, H, W] with H, W >= 3, got shape {images.shape}")
    mean = images.mean(axis=(1, 2), dtype=np.float64)  # float64 sums: uint16 over many pixels lose digits
    centred = (images - mean[:, None, None]).astype(np.float32)  # centring conditions E[x^2] - E[x]^2
    std = np.sqrt(np.mean(np.square(centred, dtype=np.float64), axis=(1, 2)))
    grad_rows, grad_cols = np.gradient(centred, axis=(1, 2))
    gradient = np.hypot(grad_rows, grad_cols).mean(axis=(1, 2))
    local_var = _box3_mean(centred**2) - _box3_mean(centred) ** 2
    local_std = np.sqrt(np.maximum(local_var, 0.0)).mean(axis=(1, 2))

    scale = 4.0 * std + 1e-12  # mean +- 2 std onto [0, 1): flat images land in one level
    levels = np.clip(np.floor((centred / scale[:, None, None] + 0.5) * GLCM_LEVELS), 0, GLCM_LEVELS - 1)
    matrices = _glcm(levels.astype(np.int64))
    index = np.arange(GLCM_LEVELS, dtype=np.float64)
    diff = index[:, None] - index[None, :]
    contrast = (matrices * diff**2).sum(axis=(1, 2))
    homogeneity = (matrices / (1.0 + np.abs(diff))).sum(axis=(1, 2))
    energy = (matrices**2).sum(axis=(1, 2))
    marginal = matrices.sum(axis=2)                                   # symmetric: rows = columns
    level_mean = marginal @ index
    level_var = marginal @ index**2 - level_mean**2
    centred_index = index[None, :] - level_mean[:, None]              # [B, L]
    covariance = np.einsum("bij,bi,bj->b", matrices, centred_index, centred_index)
    correlation = np.where(level_var > 1e-12, covariance / np.maximum(level_var, 1e-12), 1.0)
    return np.stack([mean, std, gradient, local_std, contrast, homogeneity, energy, correlation], axis=1)


def texture_features(raw_views: Mapping[str, np.ndarray], modalities: Sequence[str],
                     seasons: Sequence[int] | None = None, *, chunk_size: int = 64) -> np.ndarray:
    """Texture features per modality, season and band, concatenated (same call as band_statistics).

    Args:
      raw_views: modality -> [N, S, H, W, C_m] raw values (any numeric dtype).
      modalities: which modalities to use, in this order.
      seasons: season indices to keep (None = all S).
      chunk_size: samples processed at once (memory only; results do not depend on it).
    Returns:
      float32 [N, sum_m len(seasons) * len(FEATURE_NAMES) * C_m]; layout per
      modality is season-major, then feature (FEATURE_NAMES order), then band.
    """
    if not modalities:
        raise ValueError("texture_features needs at least one modality")
    blocks = []
    for modality in modalities:
        views = band_stats.selected_views(raw_views, modality, seasons)
        num, num_seasons, height, width, channels = views.shape
        parts = []
        for start in range(0, num, chunk_size):
            chunk = views[start:start + chunk_size]
            images = np.moveaxis(chunk, -1, 2).reshape(-1, height, width)          # [n * S * C, H, W]
            feats = image_texture(images).reshape(len(chunk), num_seasons, channels, len(FEATURE_NAMES))
            parts.append(np.swapaxes(feats, 2, 3).reshape(len(chunk), -1))           # [n, S * F * C]
        empty = np.zeros((0, num_seasons * len(FEATURE_NAMES) * channels))
        blocks.append(np.concatenate(parts, axis=0) if parts else empty)
    return np.concatenate(blocks, axis=-1).astype(np.float32)
