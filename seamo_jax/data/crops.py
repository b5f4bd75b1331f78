"""Where each season's view is cut from the tile: region selection.

SeaMo cuts the views of different seasons of one location at different
windows so the model must relate content across seasons instead of copying
a pixel-aligned stack (paper Fig. 2 / Table 10: views of the *same* region
are too easy, *disjoint* regions too hard, partial overlap in [50%, 100%]
works best). All modalities (S1, S2) of one season share the window.

`config.data.region_selection` picks the relation between seasons and
`config.data.region_reading` how `config.data.overlap_range = (lo, hi)` is
read. Throughout, the overlap of two windows A, B of seasons is
`|A ∩ B| / max(|A|, |B|)` (`pairwise_overlaps`; for equal windows simply
intersection area / window area, for a window inside a larger one the
CropMAE area ratio).

Reading "overlap" (views are `crop_size` windows cut without resizing):
  * "same": one window, uniform in the tile, for every season (overlap 1).
  * "partial": every pair of seasons overlaps by a ratio in [lo, hi]. The
    smallest pairwise overlap of a sample is drawn uniformly in [lo, hi]:
    it fixes a box of displacements, two seasons sit on opposite corners of
    the box, the others uniformly inside it (so every pair overlaps >= that
    minimum), redrawn until no pair exceeds hi; with two seasons the overlap
    is simply uniform in [lo, hi]. A tile too small for two windows to
    overlap as little as lo is a ValueError naming the lowest reachable
    overlap and the tile / crop sizes that reach lo (a 224 crop in a 264
    tile moves at most 40 px per axis: overlap >= (184/224)^2 = 0.675).
  * "disjoint": pairwise overlap 0: the tile is cut into a grid of
    crop-sized cells with random gaps, one cell per season (needs S
    non-overlapping windows in the tile, e.g. a tile >= 2 x crop along one
    side for 2 seasons; ValueError otherwise).

Reading "crop_area" (CropMAE-style; views are square crops of any size,
resized bilinearly to `crop_size`): the reference region is the largest
square of the tile at a random position; each season's crop is a square
inside it whose area is a fraction in [lo, hi] of the reference.
  * "same": one such crop for every season.
  * "partial": one crop per season (area ratio uniform in [lo, hi], position
    uniform in the reference), redrawn until every pair of seasons also
    overlaps by a ratio in [lo, hi].
  * "disjoint": the tile is cut into the near-square grid of >= S cells
    with the largest cells; each season gets its own cell, whose largest
    square (random position) is that season's reference; pairwise overlap 0.

`SeasonWindows.offsets` are window origins (row, col) in pixels of the
(flipped/rotated) tile and `sizes` their side in tile pixels (= crop_size for
the "overlap" reading); a view pixel spans `sizes / crop_size` tile pixels.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Sequence

import numpy as np

REGION_SELECTIONS = ("same", "partial", "disjoint")
REGION_READINGS = ("overlap", "crop_area")

_MAX_TRIES = 64
_EPS = 1e-9


class SeasonWindows(NamedTuple):
    """Where each season's view lies in the tile."""

    offsets: np.ndarray                   # int32 [S, 2] window origin (row, col), tile pixels
    sizes: np.ndarray                     # int32 [S] window side, tile pixels
    references: np.ndarray | None = None  # int32 [S, 3] (row, col, side) reference square ("crop_area")

    def scales(self, crop_size: int) -> np.ndarray:
        """float32 [S]: tile pixels per view pixel (1 without resizing)."""
        return (self.sizes / float(crop_size)).astype(np.float32)


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def validate_region_config(selection: str, reading: str, overlap_range: Sequence[float]) -> tuple[float, float]:
    """Checks the names and the range (tile-independent part); returns (lo, hi)."""
    if selection not in REGION_SELECTIONS:
        raise ValueError(f"config.data.region_selection must be one of {REGION_SELECTIONS}, got {selection!r}")
    if reading not in REGION_READINGS:
        raise ValueError(f"config.data.region_reading must be one of {REGION_READINGS}, got {reading!r}")
    lo, hi = (float(v) for v in overlap_range)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"config.data.overlap_range must satisfy 0 <= lo <= hi <= 1, got {tuple(overlap_range)}")
    if reading == "crop_area" and hi <= 0.0:
        raise ValueError(f"region_reading='crop_area' needs overlap_range hi > 0 (crop area), got {tuple(overlap_range)}")
    return lo, hi


def overlap_ratio(offset_a: np.ndarray, offset_b: np.ndarray, crop_size: int) -> float:
    """Area of the intersection of two crop_size windows / crop_size**2.

    Args:
      offset_a, offset_b: int [2] window origins (row, col).
    """
    dy = abs(int(offset_a[0]) - int(offset_b[0]))
    dx = abs(int(offset_a[1]) - int(offset_b[1]))
    return max(0, crop_size - dy) * max(0, crop_size - dx) / float(crop_size * crop_size)


def pairwise_overlaps(offsets: np.ndarray, sizes: np.ndarray | int) -> np.ndarray:
    """float64 [S, S]: |A ∩ B| / max(|A|, |B|) for square windows (origin, side)."""
    offsets = np.asarray(offsets, np.int64)
    sizes = np.broadcast_to(np.asarray(sizes, np.int64), offsets.shape[:1])
    lo = offsets
    hi = offsets + sizes[:, None]
    inter = np.clip(np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None]), 0, None).prod(-1)
    area = sizes.astype(np.float64) ** 2
    return inter / np.maximum(area[:, None], area[None])


def min_feasible_overlap(tile_size: int | Sequence[int], crop_size: int) -> float:
    """Smallest overlap ratio two crop_size windows inside the tile can have."""
    height, width = _as_hw(tile_size)
    max_dy, max_dx = height - crop_size, width - crop_size
    return max(0, crop_size - max_dy) * max(0, crop_size - max_dx) / float(crop_size * crop_size)


def _check_fits(height: int, width: int, crop_size: int) -> None:
    if crop_size > height or crop_size > width:
        raise ValueError(f"crop_size {crop_size} larger than tile {height}x{width}")


# ---- reading "overlap": equal crop_size windows ----

def _displacement_for_overlap(rng: np.random.Generator, ratio: float, crop_size: int, max_dy: int,
                              max_dx: int) -> tuple[int, int]:
    """|dy|, |dx| (ints) with max(0,c-|dy|) max(0,c-|dx|) ~= ratio c^2, |dy| <= max_dy, |dx| <= max_dx."""
    c = float(crop_size)
    if ratio <= 0.0:  # no overlap: separate along an axis the tile allows
        limits = (max_dy, max_dx)
        axis = int(rng.choice([a for a in (0, 1) if limits[a] >= crop_size]))
        delta = [int(rng.integers(0, max_dy + 1)), int(rng.integers(0, max_dx + 1))]
        delta[axis] = int(rng.integers(crop_size, limits[axis] + 1))
        return delta[0], delta[1]
    area = ratio * c * c
    # Intersection height h in [c - max_dy, c]; its width area / h must lie in [c - max_dx, c].
    h_lo = max(c - max_dy, area / c)
    h_hi = c if max_dx >= c else min(c, area / (c - max_dx))
    inter_h = rng.uniform(h_lo, max(h_lo, h_hi))
    inter_w = min(c, area / inter_h)
    return min(max_dy, int(round(c - inter_h))), min(max_dx, int(round(c - inter_w)))


def _too_little_room(height: int, width: int, crop_size: int, lo: float) -> str:
    lowest = min_feasible_overlap((height, width), crop_size)
    need_tile = math.ceil(crop_size * (2.0 - math.sqrt(lo)) - _EPS)
    need_crop = math.floor(min(height, width) / (2.0 - math.sqrt(lo)) + _EPS)
    return (f"region_selection='partial', region_reading='overlap': overlap_range low end {lo} is below the lowest "
            f"overlap {lowest:.4f} two {crop_size}px windows can have in a {height}x{width} tile; reaching {lo} "
            f"needs tiles of >= {need_tile}x{need_tile} px for {crop_size}px crops, or crops of <= {need_crop} px "
            f"in this tile (or start the range at >= {lowest:.4f}, or use region_reading='crop_area')")


def _partial_overlap_windows(rng, height, width, crop_size, num_seasons, lo, hi) -> np.ndarray:
    range_y, range_x = height - crop_size, width - crop_size
    if num_seasons == 1:
        return np.array([[rng.integers(0, range_y + 1), rng.integers(0, range_x + 1)]], np.int32)
    if lo < min_feasible_overlap((height, width), crop_size) - _EPS:
        raise ValueError(_too_little_room(height, width, crop_size, lo))
    for _ in range(_MAX_TRIES):
        target = rng.uniform(lo, hi)
        dy, dx = _displacement_for_overlap(rng, target, crop_size, range_y, range_x)
        y0, x0 = int(rng.integers(0, range_y - dy + 1)), int(rng.integers(0, range_x - dx + 1))
        if rng.integers(2):  # main or anti diagonal of the displacement box
            origins = [(y0, x0), (y0 + dy, x0 + dx)]
        else:
            origins = [(y0, x0 + dx), (y0 + dy, x0)]
        if not lo - _EPS <= overlap_ratio(origins[0], origins[1], crop_size) <= hi + _EPS:
            continue  # whole-pixel rounding left the range
        for _ in range(num_seasons - 2):
            for _ in range(_MAX_TRIES):
                candidate = (y0 + int(rng.integers(0, dy + 1)), x0 + int(rng.integers(0, dx + 1)))
                if all(overlap_ratio(candidate, o, crop_size) <= hi + _EPS for o in origins):
                    origins.append(candidate)
                    break
            else:
                break
        if len(origins) == num_seasons:
            return np.asarray(origins, np.int32)[rng.permutation(num_seasons)]
    raise ValueError(f"could not place {num_seasons} {crop_size}px windows in a {height}x{width} tile with every "
                     f"pairwise overlap in {(lo, hi)} (range too narrow for this many seasons?)")


def _sorted_gaps(rng: np.random.Generator, count: int, size: int, length: int) -> np.ndarray:
    """Origins of `count` disjoint segments of `size` in [0, length), random gaps (ints [count])."""
    slack = length - count * size
    return np.arange(count) * size + np.sort(rng.integers(0, slack + 1, size=count))


def _grid_layouts(num_seasons: int, max_rows: int, max_cols: int) -> list[tuple[int, int]]:
    """(rows, cols) grids with >= num_seasons cells and the fewest cells."""
    options = [(r, c) for r in range(1, max_rows + 1) for c in range(1, max_cols + 1) if r * c >= num_seasons]
    if not options:
        return []
    fewest = min(r * c for r, c in options)
    return [(r, c) for r, c in options if r * c == fewest]


def _disjoint_overlap_windows(rng, height, width, crop_size, num_seasons) -> np.ndarray:
    layouts = _grid_layouts(num_seasons, height // crop_size, width // crop_size)
    if not layouts:
        fits = (height // crop_size) * (width // crop_size)
        rows = math.ceil(math.sqrt(num_seasons))
        cols = math.ceil(num_seasons / rows)
        raise ValueError(
            f"region_selection='disjoint', region_reading='overlap' needs {num_seasons} non-overlapping "
            f"{crop_size}px windows, but a {height}x{width} tile fits {fits}: use tiles of >= "
            f"{rows * crop_size}x{cols * crop_size} px (2 seasons: one side >= {2 * crop_size} px), crops of <= "
            f"{min(height // rows, width // cols)} px, or region_reading='crop_area'")
    rows, cols = layouts[int(rng.integers(len(layouts)))]
    row_origins = _sorted_gaps(rng, rows, crop_size, height)
    origins = [(row_origins[r], x) for r in range(rows) for x in _sorted_gaps(rng, cols, crop_size, width)]
    chosen = rng.permutation(len(origins))[:num_seasons]
    return np.asarray([origins[i] for i in chosen], np.int32)


# ---- reading "crop_area": square crops of the reference, resized ----

def _side_bounds(ref_side: int, lo: float, hi: float) -> tuple[int, int]:
    side_lo = max(1, math.ceil(math.sqrt(lo) * ref_side - _EPS))
    side_hi = min(ref_side, math.floor(math.sqrt(hi) * ref_side + _EPS))
    if side_lo > side_hi:
        raise ValueError(f"region_reading='crop_area': no whole-pixel square of a {ref_side}px reference has an "
                         f"area ratio in {(lo, hi)} (range narrower than one pixel step)")
    return side_lo, side_hi


def _square_overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """`pairwise_overlaps` of two (row, col, side) squares, in plain Python: the windows are drawn per
    sample in a rejection loop, where numpy's per-call overhead on 2-element arrays cost ~0.5 ms a sample."""
    inter_h = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_w = max(0, min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1]))
    return (inter_h * inter_w) / float(max(a[2], b[2])) ** 2


def _draw_crop(rng, ref: tuple[int, int, int], lo: float, hi: float) -> tuple[int, int, int]:
    """(row, col, side) of a square inside the reference square, area ratio uniform in [lo, hi]."""
    ry, rx, ref_side = ref
    side_lo, side_hi = _side_bounds(ref_side, lo, hi)
    side = min(max(round(math.sqrt(rng.uniform(lo, hi)) * ref_side), side_lo), side_hi)
    return ry + int(rng.integers(0, ref_side - side + 1)), rx + int(rng.integers(0, ref_side - side + 1)), side


def _crop_area_windows(rng, height, width, num_seasons, selection, lo, hi):
    if selection == "disjoint":
        layouts = [(r, c) for r in range(1, num_seasons + 1) for c in range(1, num_seasons + 1)
                   if r * c >= num_seasons and r <= height and c <= width]
        best = max(min(height // r, width // c) for r, c in layouts)
        layouts = [(r, c) for r, c in layouts if min(height // r, width // c) == best]
        fewest = min(r * c for r, c in layouts)
        layouts = [(r, c) for r, c in layouts if r * c == fewest]
        rows, cols = layouts[int(rng.integers(len(layouts)))]
        cell_h, cell_w = height // rows, width // cols
        grid_y, grid_x = int(rng.integers(0, height - rows * cell_h + 1)), int(rng.integers(0, width - cols * cell_w + 1))
        cells = list(itertools.product(range(rows), range(cols)))
        refs = []
        for i in rng.permutation(len(cells))[:num_seasons]:
            r, c = cells[i]
            refs.append((grid_y + r * cell_h + int(rng.integers(0, cell_h - best + 1)),
                         grid_x + c * cell_w + int(rng.integers(0, cell_w - best + 1)), best))
        windows = [_draw_crop(rng, ref, lo, hi) for ref in refs]
    else:
        side = min(height, width)
        ref = (int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1)), side)
        refs = [ref] * num_seasons
        if selection == "same":
            windows = [_draw_crop(rng, ref, lo, hi)] * num_seasons
        else:
            windows = None
            for _ in range(_MAX_TRIES):
                placed = []
                for _ in range(num_seasons):
                    for _ in range(_MAX_TRIES):
                        candidate = _draw_crop(rng, ref, lo, hi)
                        ok = all(lo - _EPS <= _square_overlap(candidate, w) <= hi + _EPS for w in placed)
                        if ok:
                            placed.append(candidate)
                            break
                    else:
                        break
                if len(placed) == num_seasons:
                    windows = placed
                    break
            if windows is None:
                raise ValueError(f"region_reading='crop_area': could not draw {num_seasons} crops of a "
                                 f"{side}px reference with area ratios and pairwise overlaps in {(lo, hi)}")
    windows = np.asarray(windows, np.int32)
    return SeasonWindows(windows[:, :2].copy(), windows[:, 2].copy(), np.asarray(refs, np.int32))


def sample_season_windows(
    rng: np.random.Generator,
    tile_size: int | Sequence[int],
    crop_size: int,
    num_seasons: int,
    *,
    selection: str = "partial",
    reading: str = "overlap",
    overlap_range: Sequence[float] = (0.5, 1.0),
) -> SeasonWindows:
    """Draws every season's window of one sample (module docstring).

    Args:
      rng: numpy generator (Grain's per-record RNG in the pipeline).
      tile_size: tile height/width in pixels (int or (H, W)).
      crop_size: side of the square view the model sees.
      num_seasons: S.
      selection: "same" | "partial" | "disjoint".
      reading: "overlap" | "crop_area".
      overlap_range: (lo, hi), read as the module docstring says.

    Returns:
      SeasonWindows: offsets int32 [S, 2], sizes int32 [S] (crop_size for
      "overlap"), references int32 [S, 3] for "crop_area" (else None).
    """
    height, width = _as_hw(tile_size)
    lo, hi = validate_region_config(selection, reading, overlap_range)
    if reading == "crop_area":
        return _crop_area_windows(rng, height, width, int(num_seasons), selection, lo, hi)
    _check_fits(height, width, crop_size)
    if selection == "same":
        origin = (rng.integers(0, height - crop_size + 1), rng.integers(0, width - crop_size + 1))
        offsets = np.tile(np.asarray(origin, np.int32), (num_seasons, 1))
    elif selection == "partial":
        offsets = _partial_overlap_windows(rng, height, width, crop_size, int(num_seasons), lo, hi)
    else:
        offsets = _disjoint_overlap_windows(rng, height, width, crop_size, int(num_seasons))
    return SeasonWindows(offsets.astype(np.int32), np.full(num_seasons, crop_size, np.int32))


def sample_crop_offsets(
    rng: np.random.Generator,
    tile_size: int | Sequence[int],
    crop_size: int,
    num_seasons: int,
    overlap_range: Sequence[float] = (0.5, 1.0),
) -> np.ndarray:
    """int32 [S, 2]: "partial" windows of the "overlap" reading (`sample_season_windows`)."""
    return sample_season_windows(rng, tile_size, crop_size, num_seasons, overlap_range=overlap_range).offsets


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
