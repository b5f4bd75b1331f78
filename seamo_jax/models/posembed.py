"""2-D sin-cos position embeddings: per view (MAE) or from each view's crop offset.

Two frames (`config.model.position_frame`, used by the encoder and the decoders):

* "view": MAE's fixed table per view, `sincos_2d`: a patch's position is its
  (row, col) index in its own view's grid; crop offsets are ignored, so the
  same ground pixel gets different embeddings in views cut at different
  windows.
* "tile": `sincos_2d_from_offsets`, positions in the tile frame (below).

SeaMo's views of different seasons are cut at different windows of one tile
(non-aligned crops). A patch's position is therefore measured in *tile*
patch units: patch (i, j) of a view cropped at pixel offset (r0, c0) sits at

    (row, col) = (r0 / p + i, c0 / p + j)        (floats; p = patch size)

so the same ground pixel gets the same embedding in every season's view, even
when the offset is not a multiple of p. With offset (0, 0) the table equals
MAE's fixed `get_2d_sincos_pos_embed` (first half of the channels encodes the
column, second half the row; each half is [sin, cos] with frequencies
1 / 10000^(k / (D/4))), so an exported S2 encoder uses MAE's table unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp


def sincos_1d(dim: int, positions: jnp.ndarray) -> jnp.ndarray:
    """MAE 1-D sin-cos embedding.

    Args:
      dim: even output width.
      positions: float [...].
    Returns:
      float32 [..., dim] = concat(sin(pos * omega), cos(pos * omega)).
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = jnp.arange(dim // 2, dtype=jnp.float32) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)
    angles = positions.astype(jnp.float32)[..., None] * omega
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def patch_positions(offsets: jnp.ndarray, grid_size: tuple[int, int], patch_size: int) -> jnp.ndarray:
    """Tile-frame (row, col) of every patch of a view, row-major.

    Args:
      offsets: int/float [..., 2] crop origin (row, col) in tile pixels.
      grid_size: (h/p, w/p) patches per view.
      patch_size: p.
    Returns:
      float32 [..., T, 2] with T = grid_h * grid_w.
    """
    grid_h, grid_w = grid_size
    rows, cols = jnp.meshgrid(jnp.arange(grid_h, dtype=jnp.float32), jnp.arange(grid_w, dtype=jnp.float32),
                              indexing="ij")
    grid = jnp.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)  # [T, 2]
    origin = offsets.astype(jnp.float32)[..., None, :] / float(patch_size)  # [..., 1, 2]
    return origin + grid


def sincos_2d_from_offsets(dim: int, offsets: jnp.ndarray, grid_size: tuple[int, int],
                           patch_size: int) -> jnp.ndarray:
    """Position embedding of every patch of views cropped at `offsets`.

    Args:
      dim: embedding width D (multiple of 4).
      offsets: [..., 2] crop origin (row, col) in tile pixels.
      grid_size: (h/p, w/p).
      patch_size: p.
    Returns:
      float32 [..., T, D]; channels [:D/2] encode the column, [D/2:] the row
      (MAE's layout).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
    pos = patch_positions(offsets, grid_size, patch_size)
    return jnp.concatenate([sincos_1d(dim // 2, pos[..., 1]), sincos_1d(dim // 2, pos[..., 0])], axis=-1)


def sincos_2d(dim: int, grid_size: tuple[int, int]) -> jnp.ndarray:
    """MAE's fixed 2-D sin-cos table of one view ("view" frame): float32 [T, D].

    Row t = the patch at grid index (t // grid_w, t % grid_w); equals
    `sincos_2d_from_offsets` at offset (0, 0).
    """
    return sincos_2d_from_offsets(dim, jnp.zeros((2,), jnp.float32), grid_size, 1)


POSITION_FRAMES = ("view", "tile")


def view_positions(dim: int, position_frame: str, offsets: jnp.ndarray, grid_size: tuple[int, int],
                   patch_size: int) -> jnp.ndarray:
    """Position table of every patch of views of shape offsets.shape[:-1], in `position_frame`.

    Returns:
      float32 [T, D] for "view" (the same for every view; broadcasts) or
      [..., T, D] for "tile".
    """
    if position_frame == "view":
        return sincos_2d(dim, grid_size)
    if position_frame == "tile":
        return sincos_2d_from_offsets(dim, offsets, grid_size, patch_size)
    raise ValueError(f"unknown position_frame {position_frame!r}; use one of {POSITION_FRAMES}")
