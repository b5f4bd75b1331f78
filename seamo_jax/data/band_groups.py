"""Sentinel-2 bands grouped by resolution: the "native" record layout and its way back to the 10 m grid.

Two record layouts hold the same sensor (docs/contracts.md section 1):

* "grid" (default): one array `record[m]` [S, H, W, C], every band on the
  10 m grid (20 m / 60 m bands upsampled by the builder);
* "native": one array per resolution group, `record[f"{m}_{gsd}m"]`
  [S, H / factor, W / factor, n], bands at the size the release stores them
  (SSL4EO-S12 v1: 264 / 132 / 44 px). 2.1x fewer S2 values per record, and
  nothing is interpolated before the model sees it.

`to_grid` rebuilds the grid array from a native record with the resampling
the builders use (`resample`: bilinear, half-pixel centres, edge clamp,
integers rounded and clipped), so a native record and a grid record built from
the same files give bitwise the same `[S, H, W, C]` array.
`data_pipelines.geotiff.resample` is this function: one implementation, so
the two layouts cannot drift apart. This module imports numpy only (Grain
workers and builder processes load it).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Mapping, Sequence

import numpy as np

from seamo_jax.sensors import SensorSpec

LAYOUTS = ("grid", "native")
RESAMPLE_METHODS = ("bilinear", "nearest")


@dataclasses.dataclass(frozen=True)
class BandGroup:
    """The bands of one sensor that share a ground sampling distance.

    Attributes:
      key: record key, f"{modality}_{int(gsd_m)}m" (e.g. "s2_20m").
      gsd_m: ground sampling distance of the group's bands, metres.
      factor: gsd_m / grid gsd (10 m -> 1, 20 m -> 2, 60 m -> 6): grid pixels per group pixel, per axis.
      band_indices: indices into `spec.bands`, in spec band order.
    """

    key: str
    gsd_m: float
    factor: int
    band_indices: tuple[int, ...]


@functools.lru_cache(maxsize=64)
def native_groups(spec: SensorSpec, modality: str) -> tuple[BandGroup, ...]:
    """One group per distinct `spec.gsd_m`, finest first; the finest gsd is the grid.

    S2 L1C -> s2_10m (B2, B3, B4, B8), s2_20m (B5, B6, B7, B8A, B11, B12),
    s2_60m (B1, B9, B10). A sensor with one gsd (S1) has one group.
    """
    gsds = sorted(set(spec.gsd_m))
    grid = gsds[0]
    groups = []
    for gsd in gsds:
        factor = gsd / grid
        if abs(factor - round(factor)) > 1e-9:
            raise ValueError(f"sensor {spec.name}: gsd {gsd} m is not an integer multiple of the grid's {grid} m")
        groups.append(BandGroup(key=f"{modality}_{int(gsd)}m", gsd_m=float(gsd), factor=int(round(factor)),
                                band_indices=tuple(i for i, g in enumerate(spec.gsd_m) if g == gsd)))
    return tuple(groups)


def group_keys(modality: str, record: Mapping[str, Any]) -> list[str]:
    """Keys of `record` that look like native groups of `modality` ("s2_10m", ...)."""
    pattern = re.compile(rf"^{re.escape(modality)}_\d+m$")
    return sorted(key for key in record if pattern.match(key))


def record_layout(record: Mapping[str, Any], modality: str) -> str:
    """"grid" when `record[modality]` exists, "native" when its group keys do; KeyError naming both otherwise."""
    if modality in record:
        return "grid"
    if group_keys(modality, record):
        return "native"
    raise KeyError(f"record has no {modality!r} (grid layout) nor {modality}_<gsd>m keys (native layout); "
                   f"keys: {sorted(record)}")


@functools.lru_cache(maxsize=64)
def _bilinear_indices(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centred source indices and weights for one axis: (i0, i1, w1) of length dst."""
    coords = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    coords = np.clip(coords, 0.0, src - 1)
    i0 = np.floor(coords).astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (coords - i0).astype(np.float32)


def resample(band: np.ndarray, out_hw: Sequence[int], method: str = "bilinear") -> np.ndarray:
    """Resamples `[h, w, ...]` to `[H, W, ...]` keeping the dtype (integers are rounded and clipped).

    Trailing axes (seasons, bands) are carried along: every element goes
    through the same float32 operations as a 2-D `[h, w]` call, so stacking
    bands before or after resampling gives bitwise the same values.
    "bilinear": half-pixel-centred sampling with edge clamping (OpenCV
    `INTER_LINEAR`, PyTorch `align_corners=False`), what the SSL4EO-S12
    reference loader applies; "nearest": the pixel whose centre is nearest
    (plain repetition for an integer factor, keeps original values).
    """
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    if band.shape[:2] == (out_h, out_w):
        return band
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"resample method {method!r}; expected one of {RESAMPLE_METHODS}")
    in_h, in_w = band.shape[:2]
    if method == "nearest":
        rows = np.minimum(((np.arange(out_h) + 0.5) * in_h / out_h).astype(np.int64), in_h - 1)
        cols = np.minimum(((np.arange(out_w) + 0.5) * in_w / out_w).astype(np.int64), in_w - 1)
        return band[rows[:, None], cols[None, :]]
    r0, r1, rw = _bilinear_indices(in_h, out_h)
    c0, c1, cw = _bilinear_indices(in_w, out_w)
    tail = (1,) * (band.ndim - 2)
    rw, cw = rw.reshape((-1, 1) + tail), cw.reshape((1, -1) + tail)
    src = band.astype(np.float32)
    rows = src[r0] * (1.0 - rw) + src[r1] * rw               # [H, w, ...]
    out = rows[:, c0] * (1.0 - cw) + rows[:, c1] * cw       # [H, W, ...]
    if np.issubdtype(band.dtype, np.integer):
        info = np.iinfo(band.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(band.dtype)


def grid_shape(record: Mapping[str, Any], modality: str, spec: SensorSpec) -> tuple[int, int, int]:
    """(S, H, W) of the 10 m grid of a record in either layout."""
    if record_layout(record, modality) == "grid":
        shape = _shape(record[modality])
        return shape[0], shape[1], shape[2]
    group = native_groups(spec, modality)[0]  # factor 1: the grid itself
    shape = _shape(record[group.key])
    return shape[0], shape[1] * group.factor, shape[2] * group.factor


def _shape(values: Any) -> tuple[int, ...]:
    """Shape without decoding (arrays and `encoded.EncodedArray` frames have one)."""
    return tuple(values.shape) if hasattr(values, "shape") else np.asarray(values).shape


def to_grid(record: Mapping[str, Any], modality: str, spec: SensorSpec, *, method: str = "bilinear"
            ) -> np.ndarray:
    """The record's `modality` as one `[S, H, W, C]` array on the 10 m grid, in spec band order.

    Grid records: the stored array itself. Native records: each group
    `[S, H/f, W/f, n]` resampled with `resample(method)` (the builders'
    default, bilinear) and interleaved into spec band order; dtype = the
    groups' storage dtype. Raises KeyError naming a missing group.
    """
    if record_layout(record, modality) == "grid":
        return np.asarray(record[modality])
    groups = native_groups(spec, modality)
    missing = [g.key for g in groups if g.key not in record]
    if missing:
        raise KeyError(f"native record of {spec.name} lacks group(s) {missing}; keys: {sorted(record)}")
    seasons, height, width = grid_shape(record, modality, spec)
    first = np.asarray(record[groups[0].key])
    out = np.empty((seasons, height, width, spec.num_bands), first.dtype)
    for group in groups:
        values = np.asarray(record[group.key])                    # [S, h, w, n]
        moved = np.moveaxis(values, 0, 2)                          # [h, w, S, n]: resample the leading axes
        out[..., list(group.band_indices)] = np.moveaxis(resample(moved, (height, width), method), 2, 0)
    return out


def block_means(grid: np.ndarray, spec: SensorSpec, modality: str) -> dict[str, np.ndarray]:
    """Grid `[S, H, W, C]` -> native groups by area average over factor x factor blocks (rounded, same dtype).

    What a coarser detector measures of a finer scene; the synthetic builder
    makes its 20 m / 60 m bands this way. H and W must be divisible by every factor.
    """
    seasons, height, width, _ = grid.shape
    out = {}
    for group in native_groups(spec, modality):
        f = group.factor
        if height % f or width % f:
            raise ValueError(f"grid {height}x{width} is not divisible by the {group.key} factor {f}")
        values = grid[..., list(group.band_indices)]
        if f > 1:
            blocks = values.reshape(seasons, height // f, f, width // f, f, len(group.band_indices))
            means = np.rint(blocks.mean(axis=(2, 4), dtype=np.float64))
            if np.issubdtype(grid.dtype, np.integer):
                info = np.iinfo(grid.dtype)
                means = np.clip(means, info.min, info.max)
            values = means.astype(grid.dtype)
        out[group.key] = np.ascontiguousarray(values)
    return out


def check_divisible(height: int | None, width: int | None, spec: SensorSpec, modality: str) -> None:
    """ValueError unless the grid (H, W) divides by every group factor (None = variable size, checked per record)."""
    for group in native_groups(spec, modality):
        for side in (height, width):
            if side is not None and side % group.factor:
                raise ValueError(f"native layout: tile side {side} is not divisible by the {group.key} factor "
                                 f"{group.factor} (use a multiple of "
                                 f"{int(np.lcm.reduce([g.factor for g in native_groups(spec, modality)]))})")


@functools.lru_cache(maxsize=64)
def group_spec(spec: SensorSpec, group: BandGroup) -> SensorSpec:
    """`spec` restricted to one group's bands (name f"{spec.name}[{group.key}]"), to validate a group array."""
    pick = lambda values: None if values is None else tuple(values[i] for i in group.band_indices)  # noqa: E731
    return dataclasses.replace(spec, name=f"{spec.name}[{group.key}]", bands=pick(spec.bands), gsd_m=pick(spec.gsd_m),
                               mean=pick(spec.mean), std=pick(spec.std), wavelength_nm=pick(spec.wavelength_nm))
