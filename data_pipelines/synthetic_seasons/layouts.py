"""Scene layouts: the tile label is the spatial arrangement of land cover.

Each scene class draws a continuous "layout field" over the tile whose level
sets have the class's shape (parcels, a river band, a street grid, pivot
circles, a coastline, blobs, strips). The pixels with the highest field
values, exactly `fraction` of them, become the foreground role; the rest are
the background role. `fraction` and the covers filling the roles are drawn by
the caller from distributions shared by all classes, so per-band means and
standard deviations of a tile say nothing about its class: only the shapes do.

Every layout is either repetitive at a period below 20 px or passes through
the tile centre (fractions stay in [0.4, 0.6] and shorelines run within 20
degrees of a tile side), so any 32x32 crop of a 48x48 tile shows it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SCENE_CLASSES: tuple[str, ...] = (
    "agricultural_parcels",
    "river_corridor",
    "urban_grid",
    "centre_pivot_irrigation",
    "coastline",
    "natural_mosaic",
    "strip_fields",
)

LayoutFn = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def smooth_field(rng: np.random.Generator, size: int, length_scale: float) -> np.ndarray:
    """Gaussian random field, zero mean and unit std.

    White noise low-passed with a Gaussian kernel in the Fourier domain
    (periodic boundaries, which do not matter at these scales).

    Args:
      rng: random generator.
      size: tile side in pixels.
      length_scale: Gaussian kernel std in pixels; features are ~2-3x this.
    Returns:
      float32 [size, size].
    """
    noise = rng.standard_normal((size, size))
    freq_rows = np.fft.fftfreq(size)[:, None]
    freq_cols = np.fft.rfftfreq(size)[None, :]
    kernel = np.exp(-2.0 * (np.pi * length_scale) ** 2 * (freq_rows**2 + freq_cols**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(size, size))
    field -= field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def rotated_coordinates(size: int, angle: float, shift: tuple[float, float] = (0.0, 0.0)
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to the tile centre, rotated by `angle`.

    Returns:
      (along, across): float32 [size, size] each.
    """
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rows -= centre + shift[0]
    cols -= centre + shift[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return cols * cos + rows * sin, -cols * sin + rows * cos


def _parcels(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Irregular rectangular fields; each parcel is either fully in or out."""
    size = along.shape[0]
    reach = size  # rotated coordinates span at most +-size/sqrt(2)
    edges = []
    for _ in range(2):
        widths = rng.uniform(5.0, 14.0, size=2 * reach // 5 + 2)
        edges.append(-reach + np.cumsum(widths))
    cell_along = np.searchsorted(edges[0], along)
    cell_across = np.searchsorted(edges[1], across)
    parcel_value = rng.random((len(edges[0]) + 1, len(edges[1]) + 1))
    # The tiny `along` term breaks ties so the parcel at the threshold is split
    # by a straight line, like a subdivided field.
    return parcel_value[cell_along, cell_across] + 1e-4 * along / size


def _river(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """A meandering band through the tile centre."""
    wavelength = rng.uniform(28.0, 56.0)
    amplitude = rng.uniform(2.5, 7.0)
    phase = rng.uniform(0, 2 * np.pi)

    def meander(position):
        return (amplitude * np.sin(2 * np.pi * position / wavelength + phase)
                + 0.35 * amplitude * np.sin(4 * np.pi * position / wavelength + 2 * phase))

    # Subtracting the value at the centre makes the band cross the tile centre.
    return -np.abs(across - (meander(along) - meander(0.0)))


def _urban_grid(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Regular street lattice; the foreground is the streets."""
    period = rng.uniform(9.0, 14.0)
    offsets = rng.uniform(0, period, size=2)
    dist_along = np.abs((along + offsets[0]) % period - period / 2)
    dist_across = np.abs((across + offsets[1]) % period - period / 2)
    return np.maximum(dist_along, dist_across)  # large near a street


def _centre_pivots(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Circles on a jittered lattice, one irrigated disc per lattice cell."""
    size = along.shape[0]
    spacing = rng.uniform(14.0, 19.0)
    reach = int(np.ceil(size / spacing)) + 2
    jitter = rng.uniform(-1.0, 1.0, size=(2 * reach + 1, 2 * reach + 1, 2))
    radius_scale = rng.uniform(0.85, 1.0, size=(2 * reach + 1, 2 * reach + 1))
    phase = rng.uniform(0, spacing, size=2)
    cell_along = np.floor((along + phase[0]) / spacing).astype(np.int64) + reach
    cell_across = np.floor((across + phase[1]) / spacing).astype(np.int64) + reach
    # Only the own cell's disc: at fractions <= 0.6 a disc (radius <= 0.44 spacing
    # plus 1 px jitter) barely reaches the cell border, so neighbours can be ignored.
    centre_along = (cell_along - reach + 0.5) * spacing - phase[0] + jitter[cell_along, cell_across, 0]
    centre_across = (cell_across - reach + 0.5) * spacing - phase[1] + jitter[cell_along, cell_across, 1]
    distance = np.hypot(along - centre_along, across - centre_across)
    return 1.0 - distance / (radius_scale[cell_along, cell_across] * spacing / 2)


def _coastline(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """One rough shoreline through the centre; land/sea is the half-plane."""
    size = along.shape[0]
    shore = np.zeros_like(along)
    for octave in range(1, 5):  # fractal: amplitude ~ 1/frequency
        wavelength = size / octave
        shore += (2.0 / octave) * np.sin(2 * np.pi * along / wavelength + rng.uniform(0, 2 * np.pi))
    shore += 0.8 * smooth_field(rng, size, 1.5)
    return across - shore


def _natural_mosaic(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Isotropic blobs, e.g. forest with clearings."""
    return smooth_field(rng, along.shape[0], rng.uniform(2.5, 4.0))


def _strips(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Parallel, gently curving strips (strip cropping, terraces)."""
    period = rng.uniform(7.0, 12.0)
    warp = 1.5 * smooth_field(rng, along.shape[0], 8.0)
    return np.sin(2 * np.pi * (across + warp) / period + rng.uniform(0, 2 * np.pi))


_LAYOUTS: dict[str, LayoutFn] = {
    "agricultural_parcels": _parcels,
    "river_corridor": _river,
    "urban_grid": _urban_grid,
    "centre_pivot_irrigation": _centre_pivots,
    "coastline": _coastline,
    "natural_mosaic": _natural_mosaic,
    "strip_fields": _strips,
}
assert tuple(_LAYOUTS) == SCENE_CLASSES


def foreground_mask(field: np.ndarray, fraction: float) -> np.ndarray:
    """The `fraction` of pixels with the highest field value.

    Args:
      field: float [H, W].
      fraction: in [0, 1].
    Returns:
      bool [H, W] with exactly round(fraction * H * W) True pixels.
    """
    flat = field.ravel()
    count = int(round(fraction * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        mask[:] = True
    elif count > 0:
        mask[np.argpartition(-flat, count)[:count]] = True
    return mask.reshape(field.shape)


def draw_layout(rng: np.random.Generator, label: int, size: int, fraction: float) -> np.ndarray:
    """Foreground mask of scene class `label` at a random orientation.

    Args:
      rng: random generator.
      label: index into SCENE_CLASSES.
      size: tile side in pixels.
      fraction: share of foreground pixels.
    Returns:
      bool [size, size].
    """
    angle = rng.uniform(0, np.pi)
    if SCENE_CLASSES[label] == "coastline":
        # A diagonal half-plane would leave the opposite corner crop all sea or all land.
        angle = rng.integers(4) * np.pi / 2 + rng.uniform(-np.pi / 9, np.pi / 9)
    shift = tuple(rng.uniform(-1.5, 1.5, size=2))
    along, across = rotated_coordinates(size, angle, shift)
    field = _LAYOUTS[SCENE_CLASSES[label]](rng, along, across)
    return foreground_mask(field, fraction)
