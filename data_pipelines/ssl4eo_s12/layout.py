"""SSL4EO-S12 GeoTIFF releases on disk: listing locations and reading one (no TFDS import).

Layout of the mediaTUM release (zhu-xlab/SSL4EO-S12; TorchGeo `SSL4EOS12`):

    <root>/s1/<location>/<season>/VV.tif, VH.tif             S1 GRD, float32 dB, 264 px
    <root>/s2c/<location>/<season>/B1.tif ... B12.tif, B8A.tif   S2 L1C, 13 bands, uint16
    <root>/s2a/<location>/<season>/B1.tif ... (no B10)           S2 L2A, 12 bands, uint16

`<location>` is a zero-padded index ("0000000"), `<season>` the Earth Engine
product id, e.g. `20200604T100559_20200604T100559_T32TQM` (S2) or
`S1A_IW_GRDH_1SDV_20200607T010800_..._A4DE` (S1), one folder per timestamp
(4 in most locations; some real locations have fewer), optionally with a
`metadata.json` holding `system:time_start` (ms). Bands are one GeoTIFF each
at native resolution: 264 px (10 m), 132 px (20 m), 44 px (60 m). Every band
is resampled to the 10 m grid whatever its stored size, as the release's
reference loader does (`cv2.resize(band, (264, 264), INTER_LINEAR_EXACT)` on
every file, src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py);
`geotiff.resample` is that grid (bilinear, half-pixel centres). A band whose
stored size is not its native size is noted (`notes`), not refused. A season
folder holding one multi-band `all_bands.tif` instead is read too.

`s2_layout="native"` (native_layout.py) keeps the bands as stored instead: one array per
resolution group (`seamo_jax.data.band_groups`, s2_10m / s2_20m / s2_60m),
no interpolation; a band stored off its native size (tile / factor) is
resampled to its native size (not to 10 m) and noted. Skips and
`nodata_pixels` are those of the grid layout (counted on `to_grid` of the
groups, bitwise the grid build's array).

The 8-bit compressed release (same layout, JPEG-compressed uint8 GeoTIFFs,
values 255 * (x - (m - 2s)) / (4s) clipped; zhu-xlab/SSL4EO-S12 README) is
read by the `*_uint8` sensor specs (`seamo_jax.sensors.S2_L1C_UINT8`, ...):
its files are decoded with tifffile + imagecodecs and kept as uint8.

Timestamps are ordered by acquisition time (parsed from the folder name,
else from metadata.json); S1 timestamp i is paired with S2 timestamp i. A
location with fewer timestamps than `num_seasons` is skipped; with more, an
evenly spread subset is kept (`select_timestamps`) and noted.

Outcomes per location (what the builder does with them):

* record: returned, with `nodata_pixels` (per season, 10 m pixels with a 0
  in any S2 band: Sentinel-2's NO_DATA value) and `s1_nodata_pixels` (VV or
  VH exactly 0.0) for the 16-bit / dB releases, and an annotation dict
  (`writer.ANNOTATIONS_KEY`) with notes;
* `LocationSkipped` (a BadRecordError with a short `kind`): fewer
  timestamps, missing S1 folder, missing band files, non-finite S1, values
  out of range -- the build skips, counts and lists it;
* `ReleaseFormatError`: the files are another product than the config reads
  (8-bit files for a 16-bit config or the reverse, float S2, integer or
  linear-power S1, a missing codec) -- the build stops with one line saying
  what and which config to use.
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
from data_pipelines.ssl4eo_s12.tile_fields import MULTIBAND_FILE, nodata_per_season, tile_latlon
from data_pipelines.writer import ANNOTATIONS_KEY
from seamo_jax.data import band_groups
from seamo_jax.sensors import S2_L1C, S2_L2A, BadRecordError, SensorSpec, get_sensor, validate_array

S2_DIRS = {"L1C": "s2c", "L2A": "s2a"}
S1_DIR = "s1"
_TIME_IN_NAME = re.compile(r"(\d{8}T\d{6})")


class ReleaseFormatError(ValueError):
    """The files hold another product than the config reads (bit depth, units, codec): the build stops."""


class LocationSkipped(BadRecordError):
    """One location cannot become a record; the build skips it and lists it under `kind`.

    Args are (message, kind) so the exception pickles across writer
    processes; `str()` is the message.
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message, kind)

    def __str__(self) -> str:
        return str(self.args[0])

    @property
    def kind(self) -> str:
        return str(self.args[1])


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    """How to turn one location into a record (picklable, passed to worker processes)."""

    s2_sensor: str = "s2_l1c"     # seamo_jax.sensors name: s2_l1c | s2_l2a | s2_l1c_uint8 | s2_l2a_uint8 | *_v11
    with_s1: bool = True
    tile_size: int = 264          # 10 m pixels per side
    num_seasons: int = 4
    resample: str = "bilinear"    # for bands not stored at tile_size: bilinear | nearest
    s1_sensor: str = "s1_grd"     # s1_grd (float dB) | s1_grd_uint8 | s1_grd_v11
    s2_layout: str = "grid"       # grid (10 m) | native (bands as stored, band_groups.native_groups)

    @property
    def is_uint8(self) -> bool:
        return get_sensor(self.s2_sensor).dtype == "uint8"

    @property
    def count_nodata(self) -> bool:
        """0 marks nodata in the 16-bit / dB releases; in the 8-bit one 0 is also a clipped value."""
        return not self.is_uint8


@dataclasses.dataclass(frozen=True)
class LocationRef:
    """One location: its id and folders (s1_dir is None without S1, or when its S1 folder is missing)."""

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
    """Locations in `root/s2_dirname`, sorted by id.

    With `with_s1`, a location without a `root/s1/<id>` folder gets
    `s1_dir=None`; loading it raises LocationSkipped ("s1_missing"), so the
    build lists it instead of stopping.
    """
    s2_root = os.path.join(root, s2_dirname)
    names = sorted(d for d in os.listdir(s2_root) if os.path.isdir(os.path.join(s2_root, d)))
    if not names:
        raise FileNotFoundError(f"no location folders in {s2_root}")
    if with_s1 and not os.path.isdir(os.path.join(root, S1_DIR)):
        raise FileNotFoundError(f"no '{S1_DIR}/' folder next to {s2_root} (use an s2-only config)")
    refs = []
    for name in names:
        s1_dir = None
        if with_s1 and os.path.isdir(os.path.join(root, S1_DIR, name)):
            s1_dir = os.path.join(root, S1_DIR, name)
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


def select_timestamps(count: int, num_seasons: int) -> list[int]:
    """Indices of `num_seasons` of `count` time-ordered timestamps, evenly spread (all when equal).

    floor(i * count / num_seasons): 4 -> 2 keeps [0, 2], 5 -> 4 keeps [0, 1, 2, 3].
    """
    return [i * count // num_seasons for i in range(num_seasons)]


def season_folders(location_dir: str, num_seasons: int, *, product: str = "s2",
                   notes: list[str] | None = None) -> list[tuple[int, str]]:
    """[(unix time, folder)] of `num_seasons` timestamps sorted by time then name.

    Raises LocationSkipped (kind "timestamps:<n>", "s1_timestamps:<n>" for S1)
    when the location has fewer; with more, keeps `select_timestamps` and
    appends a note to `notes`.
    """
    folders = [os.path.join(location_dir, d) for d in os.listdir(location_dir)
               if os.path.isdir(os.path.join(location_dir, d))]
    seasons = sorted((season_time(f), f) for f in folders)
    prefix = "" if product == "s2" else f"{product}_"
    if len(seasons) < num_seasons:
        raise LocationSkipped(f"{location_dir}: {len(seasons)} timestamps, expected num_seasons={num_seasons}",
                              kind=f"{prefix}timestamps:{len(seasons)}")
    if len(seasons) > num_seasons:
        keep = select_timestamps(len(seasons), num_seasons)
        if notes is not None:
            notes.append(f"{product}: {len(seasons)} timestamps, kept {keep}")
        seasons = [seasons[i] for i in keep]
    return seasons


def _native_size(tile_size: int, gsd_m: float) -> int:
    return int(round(tile_size * 10.0 / gsd_m))


def _level_mixup_message(folder: str, present: set[str], spec: SensorSpec) -> str | None:
    """Names the other S2 level when the folder's band files are exactly that level's bands."""
    for other in (S2_L1C, S2_L2A):
        if other.level != spec.level and present == set(other.bands):
            return (f"{folder}: holds the {other.num_bands} bands of {other.level} ({sorted(present)}), but the "
                    f"config reads {spec.level} ({spec.num_bands} bands{', incl. B10' if spec.level == 'L1C' else ''})"
                    f"; check the s2c (L1C) / s2a (L2A) folder and the builder config")
    return None


def _other_config(spec: SensorSpec, want_uint8: bool) -> str:
    """The builder config that reads `spec`'s level in the other bit depth."""
    return ("l1c" if spec.level == "L1C" else "l2a") + ("_uint8" if want_uint8 else "")


def _read_s2_file(path: str, spec: SensorSpec) -> np.ndarray:
    """One S2 file in `spec.dtype`; other bit depths / float stop the build (ReleaseFormatError)."""
    try:
        return geotiff.read_band(path, dtype=spec.dtype) if not path.endswith(MULTIBAND_FILE) \
            else geotiff.read_multiband(path, num_bands=spec.num_bands, dtype=spec.dtype)
    except geotiff.BitDepthError as err:
        if spec.dtype == "uint8":
            raise ReleaseFormatError(f"{err}: config reads the 8-bit compressed release ({spec.name}); "
                                     f"for 16-bit files use config {_other_config(spec, False)}") from err
        if "8-bit" in str(err):
            raise ReleaseFormatError(f"{err}: 8-bit S2 (the compressed release, rescaled, not reflectance*10000) "
                                     f"declared as 16-bit {spec.name}; build it with config "
                                     f"{_other_config(spec, True)}") from err
        raise ReleaseFormatError(f"{err}: S2 of {spec.name} is integer {spec.units}, not float reflectance; "
                                 "convert the files (x * 10000, rounded) or use the release's files") from err
    except geotiff.CodecError as err:
        raise ReleaseFormatError(str(err)) from err
    except geotiff.GeoTiffError as err:
        raise LocationSkipped(f"field 's2': {err}", kind="bad_file") from err


def read_s2_season(folder: str, spec: SensorSpec, config: LoadConfig,
                   notes: list[str] | None = None) -> np.ndarray:
    """One S2 season folder -> [H, W, C] in `spec` band order and dtype on the 10 m grid.

    Bands of any stored size are resampled to `config.tile_size`; a band not
    at its native size (tile * 10 / gsd) is noted in `notes`.
    """
    size = config.tile_size
    multiband = os.path.join(folder, MULTIBAND_FILE)
    if os.path.isfile(multiband):
        values = _read_s2_file(multiband, spec)
        if values.shape[:2] != (size, size):
            if notes is not None:
                notes.append(f"{MULTIBAND_FILE} {values.shape[0]}x{values.shape[1]} resampled to {size}")
            values = geotiff.resample_stack([values[..., c] for c in range(values.shape[-1])], (size, size),
                                            config.resample)
        return values
    read_s2_season_check_files(folder, spec)
    bands = []
    for band, gsd in zip(spec.bands, spec.gsd_m):
        values = _read_s2_file(os.path.join(folder, f"{band}.tif"), spec)
        native = _native_size(size, gsd)
        if values.shape != (native, native) and notes is not None:
            notes.append(f"{os.path.basename(folder)}/{band}.tif {values.shape[0]}x{values.shape[1]} "
                         f"(native {native}x{native}) resampled to {size}")
        bands.append(values)
    return geotiff.resample_stack(bands, (size, size), config.resample)


def read_s2_season_check_files(folder: str, spec: SensorSpec) -> None:
    """LocationSkipped unless the folder holds exactly `spec`'s band files (level mix-up named)."""
    present = {os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".tif") and f.startswith("B")}
    if present != set(spec.bands):
        mixup = _level_mixup_message(folder, present, spec)
        if mixup:
            raise LocationSkipped(f"field 's2': {mixup}", kind="level_mixup")
        missing = sorted(set(spec.bands) - present)
        extra = sorted(present - set(spec.bands))
        raise LocationSkipped(f"{folder}, field 's2' ({spec.name}): {len(present)} band files, expected "
                              f"{spec.num_bands}; missing {[b + '.tif' for b in missing]}, unexpected {extra}",
                              kind="missing_bands")


def _check_s2_values(s2: np.ndarray, spec: SensorSpec, where: str) -> None:
    """A 16-bit S2 stack whose bands never exceed 255 is 8-bit data in 16-bit files: skip it, naming why."""
    if spec.dtype != "uint8":
        peak = int(s2.max()) if s2.size else 0
        if 0 < peak <= 255:
            raise LocationSkipped(f"{where}: every band <= {peak} in every season: 8-bit values stored as "
                                  f"{s2.dtype} (the compressed release re-encoded?); 8-bit data needs config "
                                  f"{_other_config(spec, True)}", kind="8bit_values")


def read_s1_season(folder: str, config: LoadConfig, notes: list[str] | None = None) -> np.ndarray:
    """One S1 season folder -> [H, W, 2] (VV, VH): float32 dB, or uint8 for the 8-bit release.

    Integer files under a dB config, float files under the 8-bit config and
    linear-power values (no negative value in VV and VH) stop the build
    (ReleaseFormatError); NaN/Inf skip the location.
    """
    size = config.tile_size
    spec = get_sensor(config.s1_sensor)
    bands = []
    for band in spec.bands:
        path = os.path.join(folder, f"{band}.tif")
        try:
            values = geotiff.read_band(path, dtype=np.float64 if spec.dtype != "uint8" else np.uint8)
        except geotiff.BitDepthError as err:
            if spec.dtype == "uint8":
                raise ReleaseFormatError(f"{err}: config reads the 8-bit compressed release ({spec.name}); "
                                         "float dB S1 belongs to the 16-bit configs (l1c, l2a)") from err
            raise ReleaseFormatError(f"{err}: S1 of SSL4EO-S12 is float32 dB; integer S1 is another product (the "
                                     "8-bit release: config l1c_uint8 / l2a_uint8)") from err
        except geotiff.CodecError as err:
            raise ReleaseFormatError(str(err)) from err
        except geotiff.GeoTiffError as err:
            raise LocationSkipped(f"field 's1': {err}", kind="bad_file") from err
        if spec.dtype != "uint8":
            bad = ~np.isfinite(values)
            if bad.any():
                raise LocationSkipped(f"{path}, field 's1': {int(bad.sum())} non-finite values (NaN/Inf)",
                                      kind="s1_nonfinite")
            values = values.astype(np.float32)
        if values.shape != (size, size) and notes is not None:
            notes.append(f"s1 {os.path.basename(folder)}/{band}.tif {values.shape[0]}x{values.shape[1]} "
                         f"resampled to {size}")
        bands.append(values)
    if spec.dtype != "uint8":
        nonzero = np.concatenate([b[b != 0] for b in bands])
        if nonzero.size and nonzero.min() >= 0:
            raise ReleaseFormatError(
                f"{folder}: VV and VH have no negative value (range [{nonzero.min():.4g}, {nonzero.max():.4g}]): "
                "linear backscatter, not dB; SSL4EO-S12 stores dB: convert with 10*log10(x) (0 stays nodata)")
    return geotiff.resample_stack(bands, (size, size), config.resample)


def load_location(ref: LocationRef, config: LoadConfig) -> tuple[str, dict]:
    """Reads `config.num_seasons` timestamps of one location into a record (contracts.md section 1).

    Returns (location_id, record): s2 [S, H, W, C] (uint16, or uint8 for
    the 8-bit release), s1 [S, H, W, 2] (float32 dB, or uint8) when
    `config.with_s1`, timestamps int64 [S] (S2 acquisition, unix s),
    location_id, latlon float32 [2], nodata_pixels / s1_nodata_pixels int32
    [S] (not for the 8-bit release), and `ANNOTATIONS_KEY`: {"notes": [...],
    "nodata_pixels": total}. Raises LocationSkipped or ReleaseFormatError
    (module docstring) naming the folder or file.
    """
    spec = get_sensor(config.s2_sensor)
    notes: list[str] = []
    s2_seasons = season_folders(ref.s2_dir, config.num_seasons, notes=notes)
    shape = (config.tile_size, config.tile_size)
    if config.s2_layout == "native":
        from data_pipelines.ssl4eo_s12 import native_layout  # pylint: disable=g-import-not-at-top (imports this)

        images = native_layout.read_s2_native(ref.s2_dir, [folder for _, folder in s2_seasons], spec, config, notes)
        # Skip rules and nodata counts on the grid the grid layout stores: same outcomes in both layouts.
        s2 = band_groups.to_grid(images, "s2", spec, method=config.resample)
    else:
        s2 = np.stack([read_s2_season(folder, spec, config, notes) for _, folder in s2_seasons])
        images = {"s2": s2}
    _check_s2_values(s2, spec, ref.s2_dir)
    validate_array(s2, spec, record_id=ref.s2_dir, field="s2", num_seasons=config.num_seasons, spatial_shape=shape)
    record = {
        **images,
        "timestamps": np.asarray([t for t, _ in s2_seasons], np.int64),
        "location_id": ref.location_id,
        "latlon": tile_latlon(s2_seasons[0][1]),
    }
    nodata_total = 0
    if config.count_nodata:
        record["nodata_pixels"] = nodata_per_season(s2)
        nodata_total += int(record["nodata_pixels"].sum())
    if config.with_s1:
        if ref.s1_dir is None:
            raise LocationSkipped(f"location {ref.location_id}: no S1 folder ({S1_DIR}/{ref.location_id}) next to "
                                  f"{ref.s2_dir}", kind="s1_missing")
        s1_seasons = season_folders(ref.s1_dir, config.num_seasons, product="s1", notes=notes)
        s1 = np.stack([read_s1_season(folder, config, notes) for _, folder in s1_seasons])
        validate_array(s1, get_sensor(config.s1_sensor), record_id=ref.s1_dir, field="s1",
                       num_seasons=config.num_seasons, spatial_shape=shape)
        record["s1"] = s1
        if config.count_nodata:
            record["s1_nodata_pixels"] = nodata_per_season(s1)
            nodata_total += int(record["s1_nodata_pixels"].sum())
    record[ANNOTATIONS_KEY] = {"notes": notes, "nodata_pixels": nodata_total}
    return ref.location_id, record
