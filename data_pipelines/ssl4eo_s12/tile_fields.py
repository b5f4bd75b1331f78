"""Per-location record fields read off the files: the tile's centre (lat, lon) and NO_DATA counts."""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import geotiff

MULTIBAND_FILE = "all_bands.tif"  # one multi-band GeoTIFF per season folder instead of per-band files


def tile_latlon(s2_season_folder: str) -> np.ndarray:
    """Centre (lat, lon) float32 [2] from a 10 m band (or the multi-band file); NaN if not georeferenced."""
    for name in ("B4.tif", "B2.tif", MULTIBAND_FILE):
        path = os.path.join(s2_season_folder, name)
        if os.path.isfile(path):
            try:
                latlon = geotiff.center_latlon(path)
            except geotiff.GeoTiffError:
                latlon = None
            if latlon is not None:
                return np.asarray(latlon, np.float32)
    return np.full((2,), np.nan, np.float32)


def nodata_per_season(values: np.ndarray) -> np.ndarray:
    """int32 [S]: pixels of each season with a 0 in any band (the release's NO_DATA)."""
    return (values == 0).any(axis=-1).sum(axis=(1, 2)).astype(np.int32)
