"""Per-sample augmentations and normalisation, numpy only (runs in Grain workers).

All geometric augmentations act on the whole tile and identically on every
season and modality *before* cropping: crop offsets are then expressed in the
augmented tile's frame and S1/S2 of a season stay pixel-aligned. They return
numpy views (no copy); the crop that follows copies only the window.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np

from seamo_jax.data import native_resize, resize
from seamo_jax.sensors import SensorSpec


def sample_dihedral(rng: np.random.Generator, square: bool) -> tuple[int, bool]:
    """Draws one of the 8 flips/rotations of a square tile (4 if not square).

    Returns:
      (k, flip): rotate by k*90 degrees (k in {0, 2} for non-square tiles, so
      the tile shape is kept), then mirror left-right if flip.
    """
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    flip = bool(rng.integers(2))
    return k, flip


def apply_dihedral(values: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotates/mirrors the spatial axes of [S, H, W, C] (a view, no copy)."""
    out = np.rot90(values, k=k, axes=(1, 2)) if k % 4 else values
    return out[:, :, ::-1, :] if flip else out


def normaliser_constants(spec: SensorSpec, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """float32 [C] mean and std of the sensor spec, for values in `spec.units` (dtype None or
    `spec.dtype`), or folded with the dequantisation of a quantised storage dtype
    (`SensorSpec.normaliser`), so (code - mean) / std normalises stored codes directly."""
    if dtype is None or np.dtype(dtype).name == spec.dtype or np.dtype(dtype).kind == "f":
        return np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    return spec.normaliser(dtype)


def normalise(values: np.ndarray, spec: SensorSpec, *, in_place: bool = False) -> np.ndarray:
    """(x - mean) / std per band, channels last; float32, bitwise equal to
    `spec.normalise` but with one float32 buffer instead of three temporaries.

    `in_place=True` overwrites `values` (must be a float32 array we own, e.g. a
    fresh crop) to save the copy.
    """
    mean, std = normaliser_constants(spec)
    if in_place:
        if values.dtype != np.float32:
            raise TypeError(f"in-place normalisation needs float32, got {values.dtype}")
        out = values
    else:
        out = np.asarray(values).astype(np.float32)  # astype copies, so in-place ops below are safe
    out -= mean
    out /= std
    return out


def select_seasons(rng: np.random.Generator, num_record_seasons: int, num_seasons: int,
                   subsample: bool) -> np.ndarray:
    """Indices of the record seasons fed to the model, int [num_seasons].

    With `subsample`, a random subset in temporal order (so season embeddings
    and the TM cascade still see seasons in time order); otherwise the first
    `num_seasons`. A record with fewer seasons than requested is an error.
    """
    if num_record_seasons < num_seasons:
        raise ValueError(f"record has {num_record_seasons} seasons, config.data.seasons = {num_seasons}")
    if subsample and num_record_seasons > num_seasons:
        return np.sort(rng.choice(num_record_seasons, size=num_seasons, replace=False))
    return np.arange(num_seasons)


def sample_modality_dropout(rng: np.random.Generator, modalities: Sequence[str], rate: float) -> np.ndarray:
    """Which modalities of a sample are dropped, bool [M] (True = dropped).

    Semantics: with probability `rate` one modality, chosen uniformly, is
    dropped in every season of the sample; never all of them (no-op with a
    single modality). The pipeline zeroes the dropped views (= the band mean
    after normalisation), keeps the mask unchanged (so every view still masks
    exactly round(ratio*T) tokens) and reports the flags as `modality_dropped`
    so the model can exclude those views from the loss.
    """
    dropped = np.zeros(len(modalities), bool)
    if rate > 0 and len(modalities) > 1:
        # Always consume both draws so the RNG stream does not depend on the outcome.
        hit = rng.random() < rate
        which = int(rng.integers(len(modalities)))
        dropped[which] = hit
    return dropped


def drop_views(views: Mapping[str, np.ndarray], modalities: Sequence[str], dropped: np.ndarray) -> dict[str, np.ndarray]:
    """Zeroes the views of dropped modalities; views[m] float32 [S, h, w, C_m]."""
    return {m: (np.zeros_like(views[m]) if dropped[i] else views[m]) for i, m in enumerate(modalities)}


def _row_constants(spec: SensorSpec, width: int, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """mean and std tiled to one image row, float32 [width * C].

    Broadcasting a [C] vector (C = 12) makes numpy run an inner loop of 12
    elements per call; against a whole contiguous row it runs one long SIMD
    loop. The arithmetic per element is unchanged, so results are bitwise equal.
    """
    mean, std = normaliser_constants(spec, dtype)
    return np.tile(mean, width), np.tile(std, width)


def crop_normalise(values: np.ndarray, offsets: np.ndarray, crop_size: int, spec: SensorSpec,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Cuts each season's window and normalises it in one pass per season.

    `values` may be any storage dtype of `spec` (`SensorSpec.storage`): quantised
    codes are dequantised by the normalisation constants, at no extra cost.

    Equals `normalise(crops.crop_windows(values, offsets, crop_size, np.float32), spec)`
    bitwise, but reads the raw (e.g. uint16) window once, converting to float32
    inside the subtraction, and never touches pixels outside the windows.

    Args:
      values: [S, H, W, C] raw tile (any strides, e.g. a flipped view).
      offsets: int [S, 2] window origins (row, col).
      out: optional float32 [S, crop, crop, C] buffer to fill (e.g. a slice of
        a preallocated batch); allocated when None.
    Returns:
      float32 [S, crop, crop, C] normalised views (`out` when given).
    """
    num_bands = values.shape[-1]
    shape = (len(offsets), crop_size, crop_size, num_bands)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    mean, std = _row_constants(spec, crop_size, values.dtype)  # quantised storage: dequantisation folded in
    for season, (y, x) in enumerate(np.asarray(offsets)):
        rows = out[season].reshape(crop_size, crop_size * num_bands)  # a view: out is C-contiguous per season
        window = values[season, y:y + crop_size, x:x + crop_size, :]
        if window.strides[-1] == window.itemsize and window.strides[-2] == num_bands * window.itemsize:
            window = window.reshape(crop_size, crop_size * num_bands)  # rows contiguous: a view
        else:  # flipped/rotated tile: one strided copy-convert into `out` (reshape would copy first)
            out[season] = window
            window = rows
        np.subtract(window, mean, out=rows, dtype=np.float32)
        np.divide(rows, std, out=rows)
    return out


def crop_resize_normalise(values: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, crop_size: int,
                          spec: SensorSpec, out: np.ndarray | None = None, *, native: bool = True) -> np.ndarray:
    """Cuts each season's square window of side `sizes[s]`, resizes it bilinearly to
    crop_size (`resize.resize_bilinear`) and normalises it (region_reading="crop_area").

    Args:
      values: [S, H, W, C] raw tile (any strides).
      offsets: int [S, 2] window origins (row, col); sizes: int [S] window sides.
      out: optional float32 [S, crop, crop, C] buffer to fill.
      native: use the compiled resize + normalise kernel where it loads (config.data.native_resize);
        its output is bitwise the numpy path's.
    Returns:
      float32 [S, crop, crop, C] normalised views (`out` when given).
    """
    shape = (len(offsets), crop_size, crop_size, values.shape[-1])
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    if native and out.flags.c_contiguous and native_resize.supports(values.dtype):
        # One pass per season, bitwise equal to the numpy path below (native_resize.py).
        mean, std = normaliser_constants(spec, values.dtype)
        for season, ((y, x), side) in enumerate(zip(np.asarray(offsets), np.asarray(sizes))):
            native_resize.resize_normalise(values[season, y:y + side, x:x + side, :], crop_size,
                                           _taps(int(side), crop_size), mean, std, out[season])
        return out
    mean, std = _row_constants(spec, crop_size, values.dtype)  # resize is linear: dequantise after it
    for season, ((y, x), side) in enumerate(zip(np.asarray(offsets), np.asarray(sizes))):
        resize.resize_bilinear(values[season, y:y + side, x:x + side, :], crop_size, out=out[season])
        rows = out[season].reshape(crop_size, crop_size * values.shape[-1])  # a view
        rows -= mean
        rows /= std
    return out


@functools.lru_cache(maxsize=1024)
def _taps(side: int, crop_size: int) -> tuple[np.ndarray, ...]:
    """(y0, y1, wy, x0, x1, wx) of a square side -> crop_size resize (read-only, shared)."""
    i0, i1, weight = resize._bilinear_taps(side, crop_size)  # pylint: disable=protected-access
    taps = (i0.astype(np.int64), i1.astype(np.int64), weight.astype(np.float32))
    for tap in taps:
        tap.flags.writeable = False
    return taps + taps
