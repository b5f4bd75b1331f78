"""Per-view random token masks for masked image modeling (numpy, per sample).

Contract (docs/contracts.md section 2): bool [S, M, T], True = masked (hidden
from the encoder and reconstructed), T = (h/p)*(w/p) tokens in row-major
order, and every view masks exactly `num_masked(T, ratio)` tokens, so the
model can gather a static number of visible tokens per view.
"""

from __future__ import annotations

import numpy as np

from seamo_jax import mask_count


def num_masked(num_tokens: int, ratio: float) -> int:
    """round(ratio * T) with halves rounded up: the rule the model uses too
    (seamo_jax/mask_count.py; Python's round() would round half to even, so
    0.5 * 5 tokens would give 2, not 3)."""
    return mask_count.num_masked(num_tokens, ratio)


def num_tokens(crop_size: int, patch_size: int) -> int:
    """T for a square view; the crop must be a whole number of patches."""
    if crop_size % patch_size:
        raise ValueError(f"crop_size {crop_size} is not a multiple of patch_size {patch_size}")
    return (crop_size // patch_size) ** 2


def random_token_masks(
    rng: np.random.Generator,
    num_seasons: int,
    num_modalities: int,
    num_tokens: int,
    ratio: float,
    shared_across_modalities: bool = False,
) -> np.ndarray:
    """Independent uniformly random masks per view.

    Args:
      shared_across_modalities: the S1 and S2 views of a season get the same
        mask (so a location is either hidden in both or visible in both).

    Returns:
      bool [S, M, T], True = masked, exactly num_masked(T, ratio) per [s, m].
    """
    draws = 1 if shared_across_modalities else num_modalities
    # The k smallest of T i.i.d. uniforms are a uniformly random k-subset per view: the first k of their
    # argsort, found here by a partition (O(T), not a sort; the same mask for the same draws).
    values = rng.random((num_seasons, draws, num_tokens))
    k = num_masked(num_tokens, ratio)
    if k >= num_tokens:
        mask = np.ones(values.shape, bool)
    else:
        mask = values < np.partition(values, k, axis=-1)[..., k:k + 1]
    if shared_across_modalities:
        mask = np.repeat(mask, num_modalities, axis=1)
    return mask
