"""SSL4EO-S12 v1.1 (zarr.zip shards) on disk: listing samples and reading one (no TFDS import).

Layout (DLR-MF-DAS/SSL4EO-S12-v1.1: README "Data" / "Download" sections,
zarr_dataset.py, terratorch_ssl4eos12.yaml; HuggingFace embed2scale/SSL4EO-S12-v1.1):

    <root>/splits/ssl4eos12_train.txt, ssl4eos12_val.txt     shard names per split (optional)
    <root>/train/{S2L1C,S2L2A,S1GRD,S2RGB}/ssl4eos12_train_seasonal_data_003812.zarr.zip
    <root>/val/{S2L1C,S2L2A,S1GRD,S2RGB}/ssl4eos12_val_seasonal_data_000034.zarr.zip

* Each `.zarr.zip` is a Zarr *format 2* zip store of an xarray dataset with
  consolidated metadata (README: "Zarr Zip files (zarr version 2)"; the
  loader opens them with `zarr.open_consolidated` / `xr.open_zarr`), 64
  samples (unique locations) per file; the same file name holds the same
  samples in every modality folder (the loader concatenates modalities file
  by file). Samples are still matched by id here.
* Variables: `bands` (sample, time, band, y, x): S2L1C / S2L2A int16, S1GRD
  float16; `cloud_mask` (sample, time, y, x) uint8 (optical modalities);
  `center_lat`, `center_lon` (sample) float64; `time_` (sample, time)
  datetime64[ns] (CF-encoded by xarray: integers + "<unit> since <date>");
  coordinates `band` ('B01' ... 'B12', 'B8A' / 'vv', 'vh'), `sample`
  ('0080717', ...), `time` (0..3), `x`, `y`. Every band is at 10 m, 264 x 264.
* S2 values carry the +1000 offset of ESA processing baseline 04.00
  (zarr_dataset.py), hence the `s2_l1c_v11` / `s2_l2a_v11` sensor specs with
  the release's own statistics; they are stored as uint16 unchanged.

Reading works with zarr 2.18 and zarr 3 alike: `zarr.storage.ZipStore(path,
mode="r")` + `zarr.open_consolidated(store, mode="r")` exist in both (zarr 3
reads format-2 stores; its default *writes* are format 3, so writers of v1.1
files must pass zarr_format=2). Shards are opened once per process and the
chunk block holding a sample is cached, so consecutive samples of a shard
(what a writer shard reads) decode each chunk once.

Outcomes per sample are those of `layout.load_location`: a record,
`LocationSkipped` (fewer valid timestamps, S1 sample missing, negative S2,
non-finite S1) or `ReleaseFormatError` (another modality or encoding in the
folder, e.g. S2RGB uint8 where S2L1C is read, integer or linear S1, no zarr).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from data_pipelines import geotiff
from data_pipelines.ssl4eo_s12.cf_time import decode_times
from data_pipelines.ssl4eo_s12.layout import LoadConfig, LocationSkipped, ReleaseFormatError
from data_pipelines.ssl4eo_s12.tile_fields import nodata_per_season
from data_pipelines.writer import ANNOTATIONS_KEY
from seamo_jax.sensors import SensorSpec, get_sensor, validate_array

S2_DIRS = {"L1C": "S2L1C", "L2A": "S2L2A"}
S1_DIR = "S1GRD"
SPLIT_DIRS = {"train": "train", "validation": "val"}  # TFDS split -> release folder
SPLIT_LIST = os.path.join("splits", "ssl4eos12_{folder}.txt")
SHARD_SUFFIX = ".zarr.zip"
BANDS_DIMS = ("sample", "time", "band", "y", "x")


class MissingDependencyError(ValueError):
    """zarr is not installed (one line: what to install)."""


@dataclasses.dataclass(frozen=True)
class ZarrSampleRef:
    """One sample: its id and where it is (S1 shard / index None when the S1 sample is missing)."""

    location_id: str
    s2_path: str
    s2_index: int
    s1_path: str | None = None
    s1_index: int | None = None


def _zarr():
    try:
        import zarr  # pylint: disable=import-outside-toplevel
    except ModuleNotFoundError as err:
        raise MissingDependencyError("SSL4EO-S12 v1.1 (.zarr.zip) needs the zarr package: "
                                     "pip install zarr (or the seamo_jax[ssl4eo] extra)") from err
    return zarr


def open_shard(path: str):
    """The zarr group of one `.zarr.zip` (read-only), consolidated metadata when present."""
    zarr = _zarr()
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        return zarr.open_consolidated(store, mode="r")
    except Exception:  # pylint: disable=broad-except  # no .zmetadata: read the per-array metadata
        return zarr.open_group(store, mode="r")


# ------------------------------------------------------------------ shard metadata and blocks

@dataclasses.dataclass(frozen=True)
class ShardMeta:
    """The small per-shard arrays: ids, band names, times, centres, bands layout."""

    sample_ids: tuple[str, ...]
    band_names: tuple[str, ...]
    times: np.ndarray | None          # int64 [sample, time] unix s (-1 missing); None without time_
    latlon: np.ndarray                # float32 [sample, 2] (NaN when absent)
    bands_dtype: np.dtype
    bands_shape: tuple[int, ...]
    has_cloud_mask: bool


def _as_str(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def read_meta(group, path: str) -> ShardMeta:
    """Reads a shard's metadata arrays; ReleaseFormatError when it is not a v1.1 shard."""
    names = set(group.array_keys())
    if "bands" not in names:
        raise ReleaseFormatError(f"{path}: no 'bands' array (has {sorted(names)}): not an SSL4EO-S12 v1.1 shard")
    bands = group["bands"]
    dims = bands.attrs.get("_ARRAY_DIMENSIONS")
    if dims is not None and tuple(dims) != BANDS_DIMS:
        raise ReleaseFormatError(f"{path}: 'bands' dims {tuple(dims)}, expected {BANDS_DIMS}")
    if len(bands.shape) != 5:
        raise ReleaseFormatError(f"{path}: 'bands' shape {bands.shape}, expected [sample, time, band, y, x]")
    count = bands.shape[0]
    if "sample" in names:
        ids = _as_str(group["sample"][...])
    elif "sample_id" in names:  # '<id>_<t>' per (sample, time)
        ids = [s.rsplit("_", 1)[0] for s in _as_str(group["sample_id"][:, 0])]
    else:
        raise ReleaseFormatError(f"{path}: neither a 'sample' coordinate nor 'sample_id'")
    if len(ids) != count:
        raise ReleaseFormatError(f"{path}: {len(ids)} sample ids for {count} samples")
    band_names = _as_str(group["band"][...]) if "band" in names else []
    times = None
    if "time_" in names:
        array = group["time_"]
        times = decode_times(array[...], dict(array.attrs), getattr(array, "fill_value", None))
    latlon = np.full((count, 2), np.nan, np.float32)
    if "center_lat" in names and "center_lon" in names:
        latlon[:, 0] = group["center_lat"][...]
        latlon[:, 1] = group["center_lon"][...]
    return ShardMeta(tuple(ids), tuple(band_names), times, latlon, np.dtype(bands.dtype), tuple(bands.shape),
                     "cloud_mask" in names)


class _ShardCache:
    """Open shards and the last chunk block read per (shard, array), per process."""

    def __init__(self, max_shards: int = 4):
        self.max_shards = max_shards
        self.shards: dict[str, tuple[Any, ShardMeta]] = {}
        self.blocks: dict[tuple[str, str], tuple[int, np.ndarray]] = {}

    def clear(self) -> None:
        """Forgets open shards and blocks (after a shard file was rewritten in this process)."""
        self.shards.clear()
        self.blocks.clear()

    def shard(self, path: str) -> tuple[Any, ShardMeta]:
        if path not in self.shards:
            if len(self.shards) >= self.max_shards:
                oldest = next(iter(self.shards))
                del self.shards[oldest]
                self.blocks = {k: v for k, v in self.blocks.items() if k[0] != oldest}
            group = open_shard(path)
            self.shards[path] = (group, read_meta(group, path))
        return self.shards[path]

    def sample(self, path: str, name: str, index: int) -> np.ndarray:
        """`group[name][index]`, reading the whole chunk block along `sample` once."""
        group, _ = self.shard(path)
        array = group[name]
        chunk = int(array.chunks[0])
        if chunk <= 1:
            return np.asarray(array[index])
        start = index // chunk * chunk
        cached = self.blocks.get((path, name))
        if cached is None or cached[0] != start:
            cached = (start, np.asarray(array[start:start + chunk]))
            self.blocks[(path, name)] = cached
        return cached[1][index - start]


_CACHE = _ShardCache()


# ------------------------------------------------------------------ listing

def find_root(manual_dir: str, s2_dirname: str) -> str:
    """`manual_dir` or its first sub-folder (2 levels deep) holding `train/<s2_dirname>` or `val/<s2_dirname>`."""
    candidates = [manual_dir]
    for d in sorted(os.listdir(manual_dir)):
        sub = os.path.join(manual_dir, d)
        if os.path.isdir(sub):
            candidates.append(sub)
            candidates += sorted(os.path.join(sub, e) for e in os.listdir(sub) if os.path.isdir(os.path.join(sub, e)))
    for candidate in candidates:
        if any(os.path.isdir(os.path.join(candidate, folder, s2_dirname)) for folder in SPLIT_DIRS.values()):
            return candidate
    raise FileNotFoundError(f"no SSL4EO-S12 v1.1 'train/{s2_dirname}/' or 'val/{s2_dirname}/' folder in "
                            f"{manual_dir} or its sub-folders")


def _shard_names(root: str, folder: str, s2_folder: str) -> tuple[list[str], str]:
    listing = os.path.join(root, SPLIT_LIST.format(folder=folder))
    if os.path.isfile(listing):
        with open(listing, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()], os.path.relpath(listing, root)
    return sorted(f for f in os.listdir(s2_folder) if f.endswith(SHARD_SUFFIX)), f"{folder}/ listing"


def list_samples(root: str, s2_dirname: str, with_s1: bool) -> tuple[dict[str, list[ZarrSampleRef]], dict]:
    """Samples of every split present, in shard (list file) then sample order.

    Returns (split -> refs, listing info: per split the shard list used, and
    the shards that are listed but missing or unreadable; their samples are
    not in the refs).
    """
    refs: dict[str, list[ZarrSampleRef]] = {}
    info: dict[str, Any] = {"shard_lists": {}, "missing_shards": [], "unreadable_shards": []}
    for split, folder in SPLIT_DIRS.items():
        s2_folder = os.path.join(root, folder, s2_dirname)
        if not os.path.isdir(s2_folder):
            continue
        names, source = _shard_names(root, folder, s2_folder)
        info["shard_lists"][split] = source
        split_refs = []
        for name in names:
            path = os.path.join(s2_folder, name)
            if not os.path.isfile(path):
                info["missing_shards"].append(os.path.relpath(path, root))
                continue
            try:
                meta = read_meta(open_shard(path), path)
            except ReleaseFormatError:
                raise
            except Exception as err:  # pylint: disable=broad-except  # a corrupt zip: list it, go on
                info["unreadable_shards"].append(f"{os.path.relpath(path, root)}: {type(err).__name__}: {err}")
                continue
            s1_index: dict[str, int] = {}
            s1_path = os.path.join(root, folder, S1_DIR, name)
            if with_s1 and os.path.isfile(s1_path):
                try:
                    s1_index = {sid: i for i, sid in enumerate(read_meta(open_shard(s1_path), s1_path).sample_ids)}
                except ReleaseFormatError:
                    raise
                except Exception as err:  # pylint: disable=broad-except
                    info["unreadable_shards"].append(f"{os.path.relpath(s1_path, root)}: {type(err).__name__}: {err}")
            for index, sample_id in enumerate(meta.sample_ids):
                j = s1_index.get(sample_id)
                split_refs.append(ZarrSampleRef(sample_id, path, index, s1_path if j is not None else None, j))
        refs[split] = split_refs
    if not refs:
        raise FileNotFoundError(f"no {'/'.join(f + '/' + s2_dirname for f in SPLIT_DIRS.values())} in {root}")
    return refs, info


# ------------------------------------------------------------------ one sample

def _canonical_band(name: str) -> str:
    """'B01' -> 'B1', 'B8A' -> 'B8A', 'vv' -> 'VV'."""
    name = name.strip().upper()
    match = re.fullmatch(r"B0*(\d+)(A?)", name)
    return f"B{match.group(1)}{match.group(2)}" if match else name


def _band_order(meta: ShardMeta, spec: SensorSpec, path: str) -> list[int]:
    """Index of each `spec` band in the shard's band axis; ReleaseFormatError when the sets differ."""
    count = meta.bands_shape[2]
    if not meta.band_names:  # no coordinate: trust the release's order if the count matches
        if count != spec.num_bands:
            raise ReleaseFormatError(f"{path}: {count} bands, {spec.name} has {spec.num_bands}")
        return list(range(count))
    names = [_canonical_band(n) for n in meta.band_names]
    if sorted(names) != sorted(spec.bands):
        raise ReleaseFormatError(
            f"{path}: bands {names}, the config reads {spec.name} {list(spec.bands)}; check the modality folder "
            f"({'/'.join(S2_DIRS.values())}/{S1_DIR}) and the builder config")
    return [names.index(b) for b in spec.bands]


def _timestamp_order(meta: ShardMeta, index: int, num_seasons: int, where: str, product: str,
                     notes: list[str]) -> tuple[list[int], np.ndarray]:
    """(time indices to keep in time order, their unix times); LocationSkipped when too few are valid."""
    total = meta.bands_shape[1]
    if meta.times is None:
        times = np.zeros(total, np.int64)
        valid = list(range(total))
        notes.append(f"{product}: no time_ array, timestamps 0 in stored order")
    else:
        times = meta.times[index]
        valid = [int(t) for t in np.argsort(times, kind="stable") if times[t] >= 0]
    prefix = "" if product == "s2" else f"{product}_"
    if len(valid) < num_seasons:
        raise LocationSkipped(f"{where}: {len(valid)} valid timestamps of {total}, expected num_seasons={num_seasons}",
                              kind=f"{prefix}timestamps:{len(valid)}")
    if len(valid) > num_seasons:
        keep = [i * len(valid) // num_seasons for i in range(num_seasons)]
        notes.append(f"{product}: {len(valid)} timestamps, kept {keep}")
        valid = [valid[i] for i in keep]
    return valid, times[valid]


def _to_grid(values: np.ndarray, size: int, method: str) -> np.ndarray:
    """[S, H, W, C] or [S, H, W] resampled to [S, size, size, ...]."""
    if values.shape[1:3] == (size, size):
        return values
    squeeze = values.ndim == 3
    stack = values[..., None] if squeeze else values
    out = np.stack([geotiff.resample_stack([season[..., c] for c in range(season.shape[-1])], (size, size), method)
                    for season in stack])
    return out[..., 0] if squeeze else out


def load_sample(ref: ZarrSampleRef, config: LoadConfig) -> tuple[str, dict]:
    """Reads one v1.1 sample into a record (same fields as `layout.load_location`, plus `cloud_mask`).

    s2 uint16 [S, H, W, C] (the int16 values, offset kept), s1 float32 dB,
    timestamps (S2, unix s), location_id, latlon (centre), cloud_mask uint8
    [S, H, W] (as stored), nodata_pixels / s1_nodata_pixels int32 [S].
    """
    spec = get_sensor(config.s2_sensor)
    size = config.tile_size
    notes: list[str] = []
    where = f"{ref.s2_path}[{ref.location_id}]"
    _, meta = _CACHE.shard(ref.s2_path)
    order = _band_order(meta, spec, ref.s2_path)
    if meta.bands_dtype.kind not in "iu" or meta.bands_dtype.itemsize != 2:
        raise ReleaseFormatError(
            f"{ref.s2_path}: bands are {meta.bands_dtype}, {spec.name} is 16-bit integer {spec.units} "
            f"(int16 in the release){'; uint8 is the S2RGB modality' if meta.bands_dtype == np.uint8 else ''}")
    keep, times = _timestamp_order(meta, ref.s2_index, config.num_seasons, where, "s2", notes)
    raw = _CACHE.sample(ref.s2_path, "bands", ref.s2_index)[keep][:, order]        # [S, C, H, W]
    if raw.min() < 0:
        raise LocationSkipped(f"{where}: {int((raw < 0).sum())} negative S2 values (min {int(raw.min())})",
                              kind="negative_values")
    s2 = np.ascontiguousarray(raw.transpose(0, 2, 3, 1)).astype(np.uint16)
    if s2.shape[1:3] != (size, size):
        notes.append(f"s2 {s2.shape[1]}x{s2.shape[2]} resampled to {size}")
        s2 = _to_grid(s2, size, config.resample)
    validate_array(s2, spec, record_id=where, field="s2", num_seasons=config.num_seasons, spatial_shape=(size, size))
    if not meta.has_cloud_mask:
        raise ReleaseFormatError(f"{ref.s2_path}: no 'cloud_mask' array (every v1.1 S2 shard has one)")
    cloud = np.asarray(_CACHE.sample(ref.s2_path, "cloud_mask", ref.s2_index))[keep].astype(np.uint8)
    record = {
        "s2": s2,
        "timestamps": np.asarray(times, np.int64),
        "location_id": ref.location_id,
        "latlon": meta.latlon[ref.s2_index].astype(np.float32),
        "cloud_mask": _to_grid(cloud, size, "nearest"),
        "nodata_pixels": nodata_per_season(s2),
    }
    nodata_total = int(record["nodata_pixels"].sum())
    if config.with_s1:
        if ref.s1_path is None or ref.s1_index is None:
            raise LocationSkipped(f"sample {ref.location_id}: not in the S1GRD shard of the same name as "
                                  f"{ref.s2_path}", kind="s1_missing")
        s1_spec = get_sensor(config.s1_sensor)
        s1_where = f"{ref.s1_path}[{ref.location_id}]"
        _, s1_meta = _CACHE.shard(ref.s1_path)
        s1_order = _band_order(s1_meta, s1_spec, ref.s1_path)
        if s1_meta.bands_dtype.kind != "f":
            raise ReleaseFormatError(f"{ref.s1_path}: S1 bands are {s1_meta.bands_dtype}; SSL4EO-S12 v1.1 S1GRD is "
                                     "float16 dB: integer S1 is another product")
        s1_keep, _ = _timestamp_order(s1_meta, ref.s1_index, config.num_seasons, s1_where, "s1", notes)
        s1_raw = _CACHE.sample(ref.s1_path, "bands", ref.s1_index)[s1_keep][:, s1_order].astype(np.float32)
        bad = ~np.isfinite(s1_raw)
        if bad.any():
            raise LocationSkipped(f"{s1_where}, field 's1': {int(bad.sum())} non-finite values (NaN/Inf)",
                                  kind="s1_nonfinite")
        nonzero = s1_raw[s1_raw != 0]
        if nonzero.size and nonzero.min() >= 0:
            raise ReleaseFormatError(f"{s1_where}: VV and VH have no negative value: linear backscatter, not dB; "
                                     "SSL4EO-S12 v1.1 S1GRD is dB: convert with 10*log10(x)")
        s1 = np.ascontiguousarray(s1_raw.transpose(0, 2, 3, 1))
        if s1.shape[1:3] != (size, size):
            notes.append(f"s1 {s1.shape[1]}x{s1.shape[2]} resampled to {size}")
            s1 = _to_grid(s1, size, config.resample)
        validate_array(s1, s1_spec, record_id=s1_where, field="s1", num_seasons=config.num_seasons,
                       spatial_shape=(size, size))
        record["s1"] = s1
        record["s1_nodata_pixels"] = nodata_per_season(s1)
        nodata_total += int(record["s1_nodata_pixels"].sum())
    record[ANNOTATIONS_KEY] = {"notes": notes, "nodata_pixels": nodata_total}
    return ref.location_id, record
