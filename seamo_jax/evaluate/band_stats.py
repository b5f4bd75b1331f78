"""The classic no-learning baseline: per-band mean and std of the raw tile.

A foundation model's features are only interesting if a linear probe on them
beats a linear probe on simple spectral statistics, which for land-cover sets
like EuroSAT are already strong (forest vs sea vs crop differ mostly in
spectrum). This module turns raw views into such a feature vector.

For each modality (in the given order), each season and each band we take
the spatial mean and standard deviation of the raw (unnormalised, sensor
units) values. Seasons and modalities are concatenated, not pooled, so the
baseline sees the same seasonal information as the encoder; the probe
standardises every dimension afterwards, so units do not matter.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def selected_views(raw_views: Mapping[str, np.ndarray], modality: str, seasons: Sequence[int] | None) -> np.ndarray:
    """raw_views[modality] [N, S, H, W, C] checked, restricted to `seasons` (None = all)."""
    if modality not in raw_views:
        raise KeyError(f"no raw views for modality {modality!r}; have {sorted(raw_views)}")
    views = np.asarray(raw_views[modality])
    if views.ndim != 5:
        raise ValueError(f"raw views of {modality!r} must be [N, S, H, W, C], got shape {views.shape}")
    return views if seasons is None else views[:, list(seasons)]


def band_statistics(raw_views: Mapping[str, np.ndarray], modalities: Sequence[str],
                    seasons: Sequence[int] | None = None) -> np.ndarray:
    """Per-band spatial mean and std, concatenated over modalities and seasons.

    Args:
      raw_views: modality -> [N, S, H, W, C_m] raw values (any numeric dtype).
      modalities: which modalities to use, in this order.
      seasons: season indices to keep (None = all S).
    Returns:
      float32 [N, sum_m len(seasons) * C_m * 2]; layout per modality is
      season-major, then [means of C_m bands, stds of C_m bands].
    """
    if not modalities:
        raise ValueError("band_statistics needs at least one modality")
    blocks = []
    for modality in modalities:
        views = selected_views(raw_views, modality, seasons)
        # float64 accumulation: uint16 reflectances summed over 64x64 pixels lose digits in float32.
        views = views.astype(np.float64)
        mean = views.mean(axis=(2, 3))                      # [N, S, C]
        std = views.std(axis=(2, 3))                        # [N, S, C]
        blocks.append(np.concatenate([mean, std], axis=-1).reshape(len(views), -1))
    return np.concatenate(blocks, axis=-1).astype(np.float32)
