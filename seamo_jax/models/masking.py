"""Static-shape selection of visible tokens from the batch mask, and random masks.

The batch mask is bool `[B, S, M, T]`, True = masked (hidden from the encoder,
reconstructed by the decoder). The data pipeline guarantees every view masks
exactly `num_masked(T, ratio)` tokens, so the visible count V = T - K is a
static Python int and every gather below has a static shape (XLA needs
static shapes; a boolean-index gather would not be jittable).

Visible tokens are taken in their original row-major order (stable argsort of
the mask puts the False entries first, in order), so the encoder sees the same
sequence whatever the mask's random draw order was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seamo_jax import mask_count


def num_masked(num_tokens: int, ratio: float) -> int:
    """Masked tokens per view: round(ratio * T), halves up (seamo_jax/mask_count.py,
    the data pipeline's rule too); at least one token must stay visible."""
    k = mask_count.num_masked(num_tokens, ratio)
    if not 0 <= k < num_tokens:
        raise ValueError(f"mask ratio {ratio} masks {k} of {num_tokens} tokens; at least one must stay visible")
    return k


def visible_indices(mask: jnp.ndarray, num_visible: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Indices of the visible tokens and the permutation that restores order.

    Args:
      mask: bool [..., T], True = masked, exactly T - num_visible True per row.
      num_visible: V.
    Returns:
      ids_keep: int32 [..., V], visible token indices, ascending.
      ids_restore: int32 [..., T]; `concat(visible, masked)[ids_restore]` is
        the original token order (MAE's ids_restore).
    """
    ids_shuffle = jnp.argsort(mask.astype(jnp.int32), axis=-1, stable=True)
    ids_restore = jnp.argsort(ids_shuffle, axis=-1)
    return ids_shuffle[..., :num_visible].astype(jnp.int32), ids_restore.astype(jnp.int32)


def gather_tokens(tokens: jnp.ndarray, ids: jnp.ndarray) -> jnp.ndarray:
    """tokens [..., T, D], ids int [..., N] -> [..., N, D]."""
    return jnp.take_along_axis(tokens, ids[..., None], axis=-2)


def mask_count_ok(mask: jnp.ndarray, expected_masked: int) -> jnp.ndarray:
    """Scalar bool: every view of `mask` [..., T] masks exactly `expected_masked` tokens.

    Checked at run time because a wrong count would silently leak masked
    tokens into the encoder (or drop visible ones); the model turns the loss
    into NaN when this is False, which stops training loudly.
    """
    return jnp.all(jnp.sum(mask, axis=-1) == expected_masked)


def random_mask(key: jax.Array, shape: tuple[int, ...], num_masked_tokens: int) -> jnp.ndarray:
    """Uniformly random masks with exactly `num_masked_tokens` True per row.

    Args:
      key: PRNG key.
      shape: (..., T), e.g. (B, S, M, T).
      num_masked_tokens: K per row.
    Returns:
      bool array of `shape`.
    """
    noise = jax.random.uniform(key, shape)
    ranks = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
    return ranks < num_masked_tokens
