"""SSL4EO-S12 release on disk: listing locations and reading one (no TFDS import).

Layout of the mediaTUM release (zhu-xlab/SSL4EO-S12; TorchGeo `SSL4EOS12`):

    <root>/s1/<location>/<season>/VV.tif, VH.tif             S1 GRD, float32 dB, 264 px
    <root>/s2c/<location>/<season>/B1.tif ... B12.tif, B8A.tif   S2 L1C, 13 bands, uint16
    <root>/s2a/<location>/<season>/B1.tif ... (no B10)           S2 L2A, 12 bands, uint16

`<location>` is a zero-padded index ("0000000"), `<season>` the Earth Engine
product id, e.g. `20200604T100559_20200604T100559_T32TQM` (S2) or
`S1A_IW_GRDH_1SDV_20200607T010800_..._A4DE` (S1), one folder per season (4),
optionally with a `metadata.json` holding `system:time_start` (ms). Bands are
one GeoTIFF each at native resolution: 264 px (10 m), 132 px (20 m), 44 px
(60 m); they are resampled to 264 px (`geotiff.resample`, bilinear by
default as in the SSL4EO-S12 loader). A season folder holding one
multi-band `all_bands.tif` instead is read too.

Seasons are ordered by acquisition time (parsed from the folder name, else
from metadata.json); S1 season i is paired with S2 season i.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import re
import time

import numpy as np

from data_pipelines import geotiff
from seamo_jax.sensors import S1_GRD, S2_L1C, S2_L2A, BadRecordError, SensorSpec, get_sensor, validate_array

S2_DIRS = {"L1C": "s2c", "L2A": "s2a"}
S1_DIR = "s1"
MULTIBAND_FILE = "all_bands.tif"
_TIME_IN_NAME = re.compile(r"(\d{8}T\d{6})")


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    """How to turn one location into a record (picklable, passed to worker processes)."""

    s2_sensor: str = "s2_l1c"     # seamo_jax.sensors name: s2_l1c | s2_l2a
    with_s1: bool = True
    tile_size: int = 264          # 10 m pixels per side
    num_seasons: int = 4
    resample: str = "bilinear"    # for 20 m / 60 m bands: bilinear | nearest


@dataclasses.dataclass(frozen=True)
class LocationRef:
    """One location: its id and folders (s1_dir is None without S1)."""

    location_id: str
    s2_dir: str
    s1_dir: str | None


def find_root(manual_dir: str, s2_dirname: str) -> str:
    """`manual_dir`, or its first sub-folder (2 levels deep) that contains `s2_dirname/`."""
    for candidate in [manual_dir] + sorted(
            os.path.join(manual_dir, d) for d in os.listdir(manual_dir) if os.path.isdir(os.path.join(manual_dir, d))):
        if os.path.isdir(os.path.join(candidate, s2_dirname)):
            return candidate
    raise FileNotFoundError(f"no SSL4EO-S12 '{s2_dirname}/' folder in {manual_dir} or its sub-folders")


def list_locations(root: str, s2_dirname: str, with_s1: bool) -> list[LocationRef]:
    """Locations in `root/s2_dirname`, sorted by id; each must also exist in `root/s1` when `with_s1`."""
    s2_root = os.path.join(root, s2_dirname)
    names = sorted(d for d in os.listdir(s2_root) if os.path.isdir(os.path.join(s2_root, d)))
    if not names:
        raise FileNotFoundError(f"no location folders in {s2_root}")
    refs = []
    for name in names:
        s1_dir = None
        if with_s1:
            s1_dir = os.path.join(root, S1_DIR, name)
            if not os.path.isdir(s1_dir):
                raise FileNotFoundError(f"{s1_dir}: S1 folder of location {name} missing (use an s2-only config)")
        refs.append(LocationRef(name, os.path.join(s2_root, name), s1_dir))
    return refs


def season_time(folder: str) -> int:
    """Acquisition time of a season folder, unix seconds (0 when unknown)."""
    match = _TIME_IN_NAME.search(os.path.basename(folder))
    if match:
        return calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S"))
    meta = os.path.join(folder, "metadata.json")
    if os.path.isfile(meta):
        with open(meta, encoding="utf-8") as f:
            start_ms = json.load(f).get("system:time_start")
        if start_ms is not None:
            return int(start_ms) // 1000
    return 0


def season_folders(location_dir: str, num_seasons: int) -> list[tuple[int, str]]:
    """[(unix time, folder)] sorted by time then name; exactly `num_seasons` or BadRecordError."""
    folders = [os.path.join(location_dir, d) for d in os.listdir(location_dir)
               if os.path.isdir(os.path.join(location_dir, d))]
    seasons = sorted((season_time(f), f) for f in folders)
    if len(seasons) != num_seasons:
        raise BadRecordError(f"{location_dir}: {len(seasons)} season folders, expected {num_seasons}")
    return seasons


def _native_size(tile_size: int, gsd_m: float) -> int:
    return int(round(tile_size * 10.0 / gsd_m))


def _level_mixup_message(folder: str, present: set[str], spec: SensorSpec) -> str | None:
    """Names the other S2 level when the folder's band files are exactly that level's bands."""
    for other in (S2_L1C, S2_L2A):
        if other.name != spec.name and present == set(other.bands):
            return (f"{folder}: holds the {other.num_bands} bands of {other.level} ({sorted(present)}), but the "
                    f"config reads {spec.level} ({spec.num_bands} bands{', incl. B10' if spec.level == 'L1C' else ''})"
                    f"; check the s2c (L1C) / s2a (L2A) folder and the builder config")
    return None


def read_s2_season(folder: str, spec: SensorSpec, config: LoadConfig) -> np.ndarray:
    """One S2 season folder -> uint16 [H, W, C] in `spec` band order on the 10 m grid."""
    size = config.tile_size
    multiband = os.path.join(folder, MULTIBAND_FILE)
    if os.path.isfile(multiband):
        values = geotiff.read_multiband(multiband)
        validate_array(values[None], spec, record_id=multiband, field="s2", spatial_shape=(size, size))
        return values
    present = {os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".tif") and f.startswith("B")}
    if present != set(spec.bands):
        mixup = _level_mixup_message(folder, present, spec)
        if mixup:
            raise BadRecordError(f"field 's2': {mixup}")
        missing = sorted(set(spec.bands) - present)
        extra = sorted(present - set(spec.bands))
        raise BadRecordError(f"{folder}, field 's2' ({spec.name}): {len(present)} band files, expected "
                             f"{spec.num_bands}; missing {[b + '.tif' for b in missing]}, unexpected {extra}")
    paths = [os.path.join(folder, f"{band}.tif") for band in spec.bands]
    native = {i: (_native_size(size, g),) * 2 for i, g in enumerate(spec.gsd_m)}
    try:
        return geotiff.read_band_stack(paths, out_hw=(size, size), dtype=spec.dtype, method=config.resample,
                                       native_hw=native)
    except geotiff.GeoTiffError as err:
        raise BadRecordError(f"field 's2': {err}") from err


def read_s1_season(folder: str, config: LoadConfig) -> np.ndarray:
    """One S1 season folder -> float32 dB [H, W, 2] (VV, VH); non-finite values name the file."""
    size = config.tile_size
    out = np.empty((size, size, S1_GRD.num_bands), np.float32)
    for channel, band in enumerate(S1_GRD.bands):
        path = os.path.join(folder, f"{band}.tif")
        try:
            values = geotiff.read_band(path, dtype=np.float32)
        except geotiff.GeoTiffError as err:
            raise BadRecordError(f"field 's1': {err}") from err
        if values.shape != (size, size):
            raise BadRecordError(f"{path}, field 's1': shape {values.shape}, expected {(size, size)}")
        bad = ~np.isfinite(values)
        if bad.any():
            raise BadRecordError(f"{path}, field 's1': {int(bad.sum())} non-finite values (NaN/Inf)")
        out[:, :, channel] = values
    return out


def _tile_latlon(s2_season_folder: str) -> np.ndarray:
    """Centre (lat, lon) float32 [2] from a 10 m band (or the multi-band file); NaN if not georeferenced."""
    for name in ("B4.tif", "B2.tif", MULTIBAND_FILE):
        path = os.path.join(s2_season_folder, name)
        if os.path.isfile(path):
            latlon = geotiff.center_latlon(path)
            if latlon is not None:
                return np.asarray(latlon, np.float32)
    return np.full((2,), np.nan, np.float32)


def load_location(ref: LocationRef, config: LoadConfig) -> tuple[str, dict]:
    """Reads all seasons of one location into a record (contracts.md section 1).

    Returns (location_id, record): s2 uint16 [S, H, W, C], s1 float32
    [S, H, W, 2] (when `config.with_s1`), timestamps int64 [S] (S2 acquisition,
    unix s), location_id, latlon float32 [2]. Raises BadRecordError naming
    the folder or file and the field.
    """
    spec = get_sensor(config.s2_sensor)
    s2_seasons = season_folders(ref.s2_dir, config.num_seasons)
    s2 = np.stack([read_s2_season(folder, spec, config) for _, folder in s2_seasons])
    shape = (config.tile_size, config.tile_size)
    validate_array(s2, spec, record_id=ref.s2_dir, field="s2", num_seasons=config.num_seasons, spatial_shape=shape)
    record = {
        "s2": s2,
        "timestamps": np.asarray([t for t, _ in s2_seasons], np.int64),
        "location_id": ref.location_id,
        "latlon": _tile_latlon(s2_seasons[0][1]),
    }
    if config.with_s1:
        s1_seasons = season_folders(ref.s1_dir, config.num_seasons)
        s1 = np.stack([read_s1_season(folder, config) for _, folder in s1_seasons])
        validate_array(s1, S1_GRD, record_id=ref.s1_dir, field="s1", num_seasons=config.num_seasons,
                       spatial_shape=shape)
        record["s1"] = s1
    return ref.location_id, record
