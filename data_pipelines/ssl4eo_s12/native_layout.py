"""SSL4EO-S12 v1 GeoTIFFs read at native resolution (`s2_layout="native"`; layout.py reads the grid).

One array per resolution group (`seamo_jax.data.band_groups.native_groups`):
s2_10m [S, 264, 264, 4], s2_20m [S, 132, 132, 6], s2_60m [S, 44, 44, 3 / 2]
for the release's 264 px tiles, the files' values unchanged. A band stored at
another size than tile / factor is resampled to that size (not to 10 m) with
the config's method and noted; `all_bands.tif` (one size for every band) is
resampled per group the same way. Missing / unreadable files raise what the
grid reader raises (layout.LocationSkipped, layout.ReleaseFormatError).
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import geotiff
from data_pipelines.ssl4eo_s12.layout import (MULTIBAND_FILE, LoadConfig, _read_s2_file,
                                              read_s2_season_check_files)
from seamo_jax.data import band_groups
from seamo_jax.sensors import SensorSpec, validate_array


def read_s2_native(location_dir: str, folders: list[str], spec: SensorSpec, config: LoadConfig,
                   notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Season folders (time order) -> {group key: [S, H/f, W/f, n]}, each group validated against `spec`."""
    per_season = [read_s2_season_native(folder, spec, config, notes) for folder in folders]
    images = {key: np.stack([season[key] for season in per_season]) for key in per_season[0]}
    size = config.tile_size
    for group in band_groups.native_groups(spec, "s2"):
        validate_array(images[group.key], band_groups.group_spec(spec, group), record_id=location_dir,
                       field=group.key, num_seasons=len(folders),
                       spatial_shape=(size // group.factor, size // group.factor))
    return images


def read_s2_season_native(folder: str, spec: SensorSpec, config: LoadConfig,
                          notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """One S2 season folder -> {group key: [H/f, W/f, n]} at native resolution, in `spec` band order and dtype.

    A band stored at another size than tile / factor is resampled to that
    size with `config.resample` and noted; `all_bands.tif` (one size for all
    bands) is resampled per group the same way.
    """
    size = config.tile_size
    groups = band_groups.native_groups(spec, "s2")
    multiband = os.path.join(folder, MULTIBAND_FILE)
    multiband_file = os.path.isfile(multiband)
    if multiband_file:
        values = _read_s2_file(multiband, spec)
        bands = [values[..., c] for c in range(values.shape[-1])]
        if notes is not None:
            notes.append(f"{MULTIBAND_FILE} {values.shape[0]}x{values.shape[1]}: bands resampled to their native sizes")
    else:
        read_s2_season_check_files(folder, spec)
        bands = [_read_s2_file(os.path.join(folder, f"{band}.tif"), spec) for band in spec.bands]
    out = {}
    for group in groups:
        native = size // group.factor
        stack = np.empty((native, native, len(group.band_indices)), np.dtype(spec.dtype))
        for j, c in enumerate(group.band_indices):
            if bands[c].shape != (native, native) and notes is not None and not multiband_file:
                notes.append(f"{os.path.basename(folder)}/{spec.bands[c]}.tif {bands[c].shape[0]}x{bands[c].shape[1]} "
                             f"(native {native}x{native}) resampled to {native}")
            stack[..., j] = geotiff.resample(bands[c], (native, native), config.resample)
        out[group.key] = stack
    return out
