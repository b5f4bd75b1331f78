"""Writers of tiny datasets in the real on-disk layouts (EuroSAT-MS, SSL4EO-S12, BigEarthNet).

Same folder and file names, band files, dtypes and GeoTIFF georeferencing
conventions as the releases, with random content from a seeded generator.
Each writer returns what it wrote so tests can compare records against it:
arrays are in `seamo_jax.sensors` band order, channels last, at native
resolution where the layout stores bands at native resolution.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from typing import Sequence

import numpy as np
import tifffile

from data_pipelines.bigearthnet import layout as ben_layout
from data_pipelines.eurosat_ms import layout as eurosat_layout
from seamo_jax.sensors import S2_L1C, S2_L2A

# GeoKey directory entries (key id, location, count, value).
_MODEL_TYPE, _RASTER_TYPE, _GEOGRAPHIC_TYPE, _PROJECTED_TYPE = 1024, 1025, 2048, 3072


def geo_tags(*, x0: float, y0: float, pixel: float, epsg: int) -> list[tuple]:
    """tifffile `extratags` georeferencing a north-up raster whose top-left corner is (x0, y0).

    epsg 4326 writes a geographic (lon/lat degrees) file, as SSL4EO-S12's
    `+proj=latlong`; 326zz/327zz write WGS 84 / UTM, as EuroSAT and BigEarthNet.
    """
    geographic = epsg == 4326
    keys = [1, 1, 0, 3,
            _MODEL_TYPE, 0, 1, 2 if geographic else 1,
            _RASTER_TYPE, 0, 1, 1,
            _GEOGRAPHIC_TYPE if geographic else _PROJECTED_TYPE, 0, 1, epsg]
    return [(33550, "d", 3, (pixel, pixel, 0.0), True),            # ModelPixelScale
            (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),     # ModelTiepoint
            (34735, "H", len(keys), tuple(keys), True)]              # GeoKeyDirectory


def _s2_values(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    return rng.integers(0, 10000, size=shape, dtype=np.uint16)


# ----------------------------------------------------------------- EuroSAT-MS

def write_eurosat_ms(root: str, *, per_class: int = 3, seed: int = 0,
                     classes: Sequence[str] = eurosat_layout.CLASS_NAMES, split_files: bool = False) -> dict:
    """`<root>/<Class>/<Class>_<n>.tif`: 64x64x13 uint16, file band order B1..B12, B8A (B8A last).

    Returns stem -> {"s2": uint16 [64, 64, 13] in S2_L1C order, "label": int}.
    With `split_files`, also writes eurosat-{train,val,test}.txt listing `.jpg`
    names (as TorchGeo's lists do) with the first tile of each class in test,
    the second in val and the rest in train.
    """
    rng = np.random.default_rng(seed)
    file_order = [S2_L1C.bands.index(b) for b in eurosat_layout.FILE_BAND_ORDER]
    written, lists = {}, {"train": [], "val": [], "test": []}
    for name in classes:
        label = eurosat_layout.CLASS_NAMES.index(name)
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for n in range(1, per_class + 1):
            spec_order = _s2_values(rng, (64, 64, 13))
            stem = f"{name}_{n}"
            tifffile.imwrite(os.path.join(root, name, stem + ".tif"), spec_order[:, :, file_order],
                             planarconfig="contig",
                             extratags=geo_tags(x0=500000.0 + 640 * n, y0=5500000.0, pixel=10.0, epsg=32632))
            written[stem] = {"s2": spec_order, "label": label}
            lists["test" if n == 1 else "val" if n == 2 else "train"].append(stem + ".jpg")
    if split_files:
        for split, names in lists.items():
            with open(os.path.join(root, f"eurosat-{split}.txt"), "w") as f:
                f.write("\n".join(names) + "\n")
    return written


# ----------------------------------------------------------------- SSL4EO-S12

S2_SEASON_NAMES = ("20200305T100021_20200305T100021_T32UPU", "20200614T101031_20200614T101031_T32UPU",
                   "20200912T101029_20200912T101029_T32UPU", "20201211T102421_20201211T102421_T32UPU")
S1_SEASON_NAMES = ("S1A_IW_GRDH_1SDV_20200307T052513_20200307T052538_031569_03A3F1_8A1B",
                   "S1B_IW_GRDH_1SDV_20200612T052440_20200612T052505_021995_029BE6_0C1D",
                   "S1A_IW_GRDH_1SDV_20200910T052520_20200910T052545_034294_03FC5B_5C7E",
                   "S1B_IW_GRDH_1SDV_20201209T052447_20201209T052512_024620_02ED6A_3A9B")


S2_SEASON_TIMES = (1583402421, 1592129431, 1599905429, 1607682261)  # unix s of S2_SEASON_NAMES


def write_ssl4eo_s12(root: str, *, num_locations: int = 2, tile_size: int = 24, seed: int = 0,
                     products: Sequence[str] = ("s2c", "s2a", "s1"), seasons: int = 4,
                     first_location: int = 0, eight_bit: bool = False) -> dict:
    """`<root>/{s2c,s2a,s1}/<loc:07d>/<season>/<band>.tif`, bands at native resolution.

    S2 band files are uint16 at tile_size * 10 / gsd px (264/132/44 for the
    real 264); S1 `VV.tif`/`VH.tif` are float32 dB at tile_size. Files are
    georeferenced in lon/lat (EPSG:4326). Season folders are written in
    reverse time order so the builder must sort them. With `eight_bit`, every
    file is uint8 and JPEG-compressed (tifffile + imagecodecs), as in the
    8-bit compressed release; the returned arrays are then the decoded values.

    Returns location id -> product -> list over seasons of band -> array
    ([h, w] at native size), plus "latlon" (centre); the S2 seasons' unix
    times are S2_SEASON_TIMES.
    """
    rng = np.random.default_rng(seed)
    specs = {"s2c": S2_L1C, "s2a": S2_L2A}
    out = {}
    for index in range(first_location, first_location + num_locations):
        loc = f"{index:07d}"
        lon0, lat0, deg = 11.0 + index * 0.1, 48.0, 10.0 / 111_320.0
        entry = {"latlon": (lat0 - deg * tile_size / 2, lon0 + deg * tile_size / 2)}
        for product in products:
            names = S1_SEASON_NAMES if product == "s1" else S2_SEASON_NAMES
            per_season = []
            for season in reversed(range(seasons)):
                folder = os.path.join(root, product, loc, names[season])
                os.makedirs(folder, exist_ok=True)
                bands = {}
                if product == "s1":
                    for band in ("VV", "VH"):
                        bands[band] = rng.normal(-15.0, 5.0, (tile_size, tile_size)).astype(np.float32)
                else:
                    for band, gsd in zip(specs[product].bands, specs[product].gsd_m):
                        size = int(round(tile_size * 10 / gsd))
                        bands[band] = _s2_values(rng, (size, size))
                if eight_bit:  # smooth content: JPEG keeps it close; random noise would be mush
                    bands = {band: _smooth_uint8(rng, values.shape) for band, values in bands.items()}
                for band, values in bands.items():
                    pixel = deg * tile_size / values.shape[0]
                    path = os.path.join(folder, f"{band}.tif")
                    tifffile.imwrite(path, values, extratags=geo_tags(x0=lon0, y0=lat0, pixel=pixel, epsg=4326),
                                     **({"compression": "jpeg"} if eight_bit else {}))
                    if eight_bit:
                        bands[band] = tifffile.imread(path)  # what the lossy codec kept
                with open(os.path.join(folder, "metadata.json"), "w") as f:
                    json.dump({"system:index": names[season]}, f)
                per_season.insert(0, bands)
            entry[product] = per_season
        out[loc] = entry
    return out


def _smooth_uint8(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    a, b, c = rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(60, 190)
    return np.clip(c + a * y + b * x, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------- SSL4EO-S12 v1.1 (zarr.zip)

V11_L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
V11_L2A_BANDS = tuple(b for b in V11_L1C_BANDS if b != "B10")
V11_TIME_UNITS = {"S2L1C": "seconds since 2020-03-05 10:00:21", "S2L2A": "seconds since 2020-03-05 10:00:21",
                  "S1GRD": "nanoseconds since 1970-01-01"}


def _zarr_array(group, name: str, data: np.ndarray, dims: Sequence[str], chunks=None, attrs=None,
                fill_value=0) -> None:
    """One xarray-convention array (`_ARRAY_DIMENSIONS`) in a zarr format-2 group, zarr 3 or 2.

    xarray reads a zarr fill_value as `_FillValue` (masked); it writes None
    for times without NaT, so pass fill_value=None there.
    """
    attributes = {"_ARRAY_DIMENSIONS": list(dims), **(attrs or {})}
    chunks = chunks or data.shape
    if data.dtype.kind == "U":
        fill_value = ""
    if hasattr(group, "create_array"):  # zarr 3
        array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, attributes=attributes,
                                   fill_value=fill_value)
        array[...] = data
    else:  # zarr 2
        array = group.create_dataset(name, data=data, chunks=chunks, fill_value=fill_value)
        array.attrs.update(attributes)


def write_zarr_shard(path: str, modality: str, samples: dict[str, dict], *, tile_size: int,
                     band_names: Sequence[str] | None = None) -> None:
    """One SSL4EO-S12 v1.1 shard `<modality>/....zarr.zip` (zarr format 2, consolidated) of `samples`.

    `samples`: id -> {"bands": [T, C, H, W] (int16 S2 / float16 S1), "times":
    unix s [T], "latlon": (lat, lon), "cloud_mask": uint8 [T, H, W] (S2)};
    `band_names`: the `band` coordinate (default: the release's order).
    Variables, dims, dtypes and coordinates as in the release README's xarray
    listing; time_ CF-encoded like xarray (`V11_TIME_UNITS`).
    """
    import zarr  # pylint: disable=import-outside-toplevel

    ids = list(samples)
    names = band_names or {"S2L1C": V11_L1C_BANDS, "S2L2A": V11_L2A_BANDS, "S1GRD": ("vv", "vh")}[modality]
    bands = np.stack([samples[i]["bands"] for i in ids])
    count, times = len(ids), bands.shape[1]
    unit, _, reference = V11_TIME_UNITS[modality].partition(" since ")
    epoch = int((np.datetime64(reference.replace(" ", "T"), "s") - np.datetime64("1970-01-01T00:00:00", "s"))
                / np.timedelta64(1, "s"))
    seconds = np.stack([np.asarray(samples[i]["times"], np.int64) for i in ids]) - epoch
    encoded = seconds * (10**9 if unit == "nanoseconds" else 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kwargs = {"mode": "w", "zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {"mode": "w"}
    # A directory store zipped afterwards: ZipStore appends, so rewritten metadata would leave duplicate entries.
    folder = tempfile.mkdtemp(suffix=".zarr")
    store = zarr.storage.LocalStore(folder) if hasattr(zarr.storage, "LocalStore") else zarr.DirectoryStore(folder)
    group = zarr.open_group(store=store, **kwargs)
    _zarr_array(group, "bands", bands, ("sample", "time", "band", "y", "x"),
                chunks=(1, 1) + bands.shape[2:])  # "the timestamps are chunked separately"
    _zarr_array(group, "band", np.asarray(names), ("band",))
    _zarr_array(group, "sample", np.asarray(ids), ("sample",))
    _zarr_array(group, "time", np.arange(times, dtype=np.int64), ("time",))
    _zarr_array(group, "x", np.arange(tile_size, dtype=np.int64), ("x",))
    _zarr_array(group, "y", np.arange(tile_size, dtype=np.int64), ("y",))
    _zarr_array(group, "center_lat", np.asarray([samples[i]["latlon"][0] for i in ids], np.float64), ("sample",))
    _zarr_array(group, "center_lon", np.asarray([samples[i]["latlon"][1] for i in ids], np.float64), ("sample",))
    _zarr_array(group, "crs", np.full(count, 32632, np.int64), ("sample",))
    _zarr_array(group, "time_", encoded, ("sample", "time"),
                attrs={"units": V11_TIME_UNITS[modality], "calendar": "proleptic_gregorian"}, fill_value=None)
    _zarr_array(group, "sample_id", np.asarray([[f"{i}_{t}" for t in range(times)] for i in ids]), ("sample", "time"))
    if modality != "S1GRD":
        _zarr_array(group, "cloud_mask", np.stack([samples[i]["cloud_mask"] for i in ids]),
                    ("sample", "time", "y", "x"), chunks=(1, 1, tile_size, tile_size))
    zarr.consolidate_metadata(store)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for directory, _, files in os.walk(folder):
            for name in files:
                full = os.path.join(directory, name)
                archive.write(full, os.path.relpath(full, folder))
    shutil.rmtree(folder)


def write_ssl4eo_s12_v11(root: str, *, shards: dict[str, list[list[str]]], tile_size: int = 16, seed: int = 0,
                         modalities: Sequence[str] = ("S2L1C", "S2L2A", "S1GRD"), split_files: bool = True) -> dict:
    """`<root>/{train,val}/<modality>/ssl4eos12_<split>_seasonal_data_<n>.zarr.zip` (+ splits/*.txt).

    `shards`: release split folder ("train" / "val") -> list of shards, each
    a list of sample ids. S2 values are int16 reflectance*10000 + 1000 (the
    release's offset), S1 float16 dB, 4 timestamps; the last sample of each
    shard has its timestamps stored out of time order (the reader sorts).

    Returns id -> modality -> {"bands", "times", "latlon", "cloud_mask"} as written.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for folder, shard_ids in shards.items():
        names = [f"ssl4eos12_{folder}_seasonal_data_{n + 1:06d}.zarr.zip" for n in range(len(shard_ids))]
        for name, ids in zip(names, shard_ids):
            for modality in modalities:
                samples = {}
                for k, sample_id in enumerate(ids):
                    times = np.asarray(S2_SEASON_TIMES, np.int64) + (3600 if modality == "S1GRD" else 0)
                    if k == len(ids) - 1:
                        times = times[[2, 0, 3, 1]]
                    shape = (4, tile_size, tile_size)
                    if modality == "S1GRD":
                        bands = rng.normal(-15.0, 5.0, (4, 2) + shape[1:]).astype(np.float16)
                    else:
                        channels = len(V11_L1C_BANDS if modality == "S2L1C" else V11_L2A_BANDS)
                        bands = rng.integers(1000, 11000, (4, channels) + shape[1:]).astype(np.int16)
                    entry = {"bands": bands, "times": times, "latlon": (48.0 + k, 11.0 + k),
                             "cloud_mask": rng.integers(0, 4, shape).astype(np.uint8)}
                    samples[sample_id] = entry
                    out.setdefault(sample_id, {})[modality] = entry
                write_zarr_shard(os.path.join(root, folder, modality, name), modality, samples, tile_size=tile_size)
        if split_files:
            os.makedirs(os.path.join(root, "splits"), exist_ok=True)
            with open(os.path.join(root, "splits", f"ssl4eos12_{folder}.txt"), "w") as f:
                f.write("\n".join(names) + "\n")
    return out


# ----------------------------------------------------------------- BigEarthNet

BEN_LABEL_SETS = (
    ["Non-irrigated arable land", "Pastures"],
    ["Coniferous forest", "Mixed forest", "Water bodies"],
    ["Discontinuous urban fabric", "Road and rail networks and associated land"],   # road has no 19-class label
    ["Sea and ocean"],
)


def write_bigearthnet(root: str, *, num_patches: int = 4, seed: int = 0, with_s1: bool = True,
                      split_files: bool = False) -> dict:
    """`<root>/BigEarthNet-v1.0/<patch>/<patch>_B01.tif...` + json, and BigEarthNet-S1-v1.0 partners.

    S2 bands uint16 at 120/60/20 px for 10/20/60 m; S1 VV/VH float32 at 120 px.
    Returns S2 patch name -> {"s2": band -> array (S2_L2A names), "s1": band ->
    array or absent, "labels43": [...], "s1_name": str, "time": unix s}.
    """
    rng = np.random.default_rng(seed)
    s2_root = os.path.join(root, "BigEarthNet-v1.0")
    s1_root = os.path.join(root, "BigEarthNet-S1-v1.0")
    out = {}
    for i in range(num_patches):
        name = f"S2A_MSIL2A_20170613T101031_{i}_{45 + i}"
        s1_name = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{i}_{45 + i}"
        labels = BEN_LABEL_SETS[i % len(BEN_LABEL_SETS)]
        folder = os.path.join(s2_root, name)
        os.makedirs(folder)
        bands = {}
        for band, file_band, gsd in zip(S2_L2A.bands, ben_layout.S2_FILE_BANDS, S2_L2A.gsd_m):
            size = 120 * 10 // int(gsd)
            bands[band] = _s2_values(rng, (size, size))
            tifffile.imwrite(os.path.join(folder, f"{name}_{file_band}.tif"), bands[band],
                             extratags=geo_tags(x0=600000.0 + 1200 * i, y0=5800000.0, pixel=1200 / size,
                                                epsg=32633))
        meta = {"labels": labels, "coordinates": {"ulx": 600000 + 1200 * i, "uly": 5800000,
                                                  "lrx": 601200 + 1200 * i, "lry": 5798800},
                "projection": "WGS 84 / UTM zone 33N", "tile_source": "S2A_MSIL1C_20170613T101031_N0205_R022",
                "acquisition_date": "2017-06-13 10:10:31"}
        with open(os.path.join(folder, name + ben_layout.METADATA_SUFFIX), "w") as f:
            json.dump(meta, f)
        entry = {"s2": bands, "labels43": labels, "s1_name": s1_name, "time": 1497348631}
        if with_s1:
            s1_folder = os.path.join(s1_root, s1_name)
            os.makedirs(s1_folder)
            entry["s1"] = {}
            for band in ("VV", "VH"):
                entry["s1"][band] = rng.normal(-15.0, 5.0, (120, 120)).astype(np.float32)
                tifffile.imwrite(os.path.join(s1_folder, f"{s1_name}_{band}.tif"), entry["s1"][band])
            with open(os.path.join(s1_folder, s1_name + ben_layout.METADATA_SUFFIX), "w") as f:
                json.dump({"labels": labels, "corresponding_s2_patch": name,
                           "acquisition_time": "2017-06-13T16:50:43"}, f)
        out[name] = entry
    if split_files:
        names = sorted(out)
        parts = {"train": names[2:], "val": names[1:2], "test": names[:1]}
        for split, members in parts.items():
            with open(os.path.join(root, f"{split}.csv"), "w") as f:
                f.write("".join(f"{n},{out[n]['s1_name']}\n" for n in members))
    return out


def write_bigearthnet_exclusions(root: str, *, snow: Sequence[str] = (), cloud: Sequence[str] = ()) -> None:
    """The v1.0 exclusion lists in `root`: one S2 patch name per line, as published."""
    for filename, names in ((ben_layout.EXCLUSION_FILES["seasonal_snow"], snow),
                            (ben_layout.EXCLUSION_FILES["cloud_or_shadow"], cloud)):
        with open(os.path.join(root, filename), "w") as f:
            f.write("".join(f"{n}\n" for n in names))
