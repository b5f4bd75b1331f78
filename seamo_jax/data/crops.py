"""Non-aligned crop windows: one window per season, partially overlapping.

SeaMo cuts the views of different seasons from the same tile at different
windows so the model must relate content across seasons instead of copying
a pixel-aligned stack. All modalities of one season share the window.

Overlap semantics (the paper only states "overlap ratio in [0.5, 1.0]"):
we draw one hidden *anchor* window uniformly inside the tile; every season's
window then overlaps the anchor by an area ratio
`|season ∩ anchor| / crop_size**2` drawn uniformly from `overlap_range`.
Seasons are therefore symmetric (no season is the reference). The overlap
between two seasons is not constrained: it can be below `overlap_range[0]`
(two windows shifted to opposite sides of the anchor may even just touch).

The tile bounds the achievable displacement (a 224 crop in a 264 tile moves
at most 40 px per axis, so its overlap with any window is >= (184/224)^2 =
0.675). The lower end of `overlap_range` is raised to what the anchor position
allows; a range the tile cannot realise at all is an error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_MAX_TRIES = 64


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def overlap_ratio(offset_a: np.ndarray, offset_b: np.ndarray, crop_size: int) -> float:
    """Area of the intersection of two square windows / crop_size**2.

    Args:
      offset_a, offset_b: int [2] window origins (row, col).
    """
    dy = abs(int(offset_a[0]) - int(offset_b[0]))
    dx = abs(int(offset_a[1]) - int(offset_b[1]))
    return max(0, crop_size - dy) * max(0, crop_size - dx) / float(crop_size * crop_size)


def min_feasible_overlap(tile_size: int | Sequence[int], crop_size: int) -> float:
    """Smallest overlap ratio two windows inside the tile can have."""
    height, width = _as_hw(tile_size)
    max_dy, max_dx = height - crop_size, width - crop_size
    return max(0, crop_size - max_dy) * max(0, crop_size - max_dx) / float(crop_size * crop_size)


def _sample_displacement(rng: np.random.Generator, ratio: float, crop_size: int, max_dy: int,
                         max_dx: int) -> tuple[int, int]:
    """|dy|, |dx| (ints) with (c-|dy|)(c-|dx|) ~= ratio * c^2 and |dy|<=max_dy, |dx|<=max_dx."""
    c = float(crop_size)
    area = ratio * c * c
    # Intersection height iy in [c - max_dy, c]; its width ix = area / iy must lie in [c - max_dx, c].
    lo = max(c - max_dy, area / c)
    hi = c if max_dx >= c else min(c, area / (c - max_dx))
    if lo > hi:  # numerically tight; fall back to the feasible end
        lo = hi
    inter_h = rng.uniform(lo, hi)
    inter_w = area / inter_h
    return int(round(c - inter_h)), int(round(c - inter_w))


def sample_crop_offsets(
    rng: np.random.Generator,
    tile_size: int | Sequence[int],
    crop_size: int,
    num_seasons: int,
    overlap_range: Sequence[float] = (0.5, 1.0),
) -> np.ndarray:
    """Draws one crop origin per season, each overlapping a shared anchor window.

    See `sample_crop_windows` (this drops the anchor). Returns int32 [S, 2].
    """
    return sample_crop_windows(rng, tile_size, crop_size, num_seasons, overlap_range)[1]


def sample_crop_windows(
    rng: np.random.Generator,
    tile_size: int | Sequence[int],
    crop_size: int,
    num_seasons: int,
    overlap_range: Sequence[float] = (0.5, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Draws the anchor and one crop origin per season overlapping it.

    Args:
      rng: numpy generator (Grain's per-record RNG in the pipeline).
      tile_size: tile height/width in pixels (int or (H, W)).
      crop_size: side of the square view, <= tile size.
      num_seasons: S, number of windows to draw.
      overlap_range: (lo, hi) area overlap of each window with the anchor.

    Returns:
      (anchor int32 [2], offsets int32 [S, 2]) window origins (row, col); every
      window lies inside the tile and overlaps the anchor by a ratio in
      [max(lo, what the anchor position allows), hi].
    """
    height, width = _as_hw(tile_size)
    if crop_size > height or crop_size > width:
        raise ValueError(f"crop_size {crop_size} larger than tile {height}x{width}")
    lo, hi = float(overlap_range[0]), float(overlap_range[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"overlap_range must satisfy 0 <= lo <= hi <= 1, got {overlap_range}")
    if hi < min_feasible_overlap((height, width), crop_size):
        raise ValueError(
            f"overlap_range {overlap_range} cannot be realised with {crop_size}px crops in a {height}x{width} tile: "
            f"windows always overlap by >= {min_feasible_overlap((height, width), crop_size):.3f}")
    range_y, range_x = height - crop_size, width - crop_size
    for _ in range(_MAX_TRIES):
        anchor = np.array([rng.integers(0, range_y + 1), rng.integers(0, range_x + 1)])
        # Largest move from the anchor that stays in the tile on at least one side.
        max_dy = max(int(anchor[0]), range_y - int(anchor[0]))
        max_dx = max(int(anchor[1]), range_x - int(anchor[1]))
        lo_here = max(lo, max(0, crop_size - max_dy) * max(0, crop_size - max_dx) / crop_size**2)
        if lo_here <= hi:
            break
    else:
        raise ValueError(f"could not place an anchor for overlap_range {overlap_range} in tile {height}x{width}")

    offsets = np.zeros((num_seasons, 2), np.int32)
    for season in range(num_seasons):
        for _ in range(_MAX_TRIES):
            ratio = rng.uniform(lo_here, hi)
            abs_dy, abs_dx = _sample_displacement(rng, ratio, crop_size, max_dy, max_dx)
            origin = []
            for axis, (delta, limit) in enumerate(((abs_dy, range_y), (abs_dx, range_x))):
                choices = [s for s in (anchor[axis] - delta, anchor[axis] + delta) if 0 <= s <= limit]
                origin.append(choices[int(rng.integers(len(choices)))] if len(choices) == 2 else choices[0])
            realised = overlap_ratio(np.array(origin), anchor, crop_size)
            if lo - 1e-9 <= realised <= hi + 1e-9:  # whole-pixel rounding can leave the range: redraw
                offsets[season] = origin
                break
        else:
            raise ValueError(f"could not realise overlap_range {overlap_range} with {crop_size}px windows "
                             f"(range narrower than one pixel step?)")
    return anchor.astype(np.int32), offsets


def center_offsets(tile_size: int | Sequence[int], crop_size: int, num_seasons: int) -> np.ndarray:
    """int32 [S, 2]: the same centred window for every season (evaluation)."""
    height, width = _as_hw(tile_size)
    origin = ((height - crop_size) // 2, (width - crop_size) // 2)
    return np.tile(np.asarray(origin, np.int32), (num_seasons, 1))


def crop_windows(values: np.ndarray, offsets: np.ndarray, crop_size: int, dtype=None) -> np.ndarray:
    """Cuts each season's window: [S, H, W, C] -> [S, crop, crop, C].

    `dtype` (default: the input's) converts while copying, in one pass.
    """
    offsets = np.asarray(offsets)
    out = np.empty((len(offsets), crop_size, crop_size, values.shape[-1]), dtype or values.dtype)
    for season, (y, x) in enumerate(offsets):
        out[season] = values[season, y:y + crop_size, x:x + crop_size, :]
    return out
