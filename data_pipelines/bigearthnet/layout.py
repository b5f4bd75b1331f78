"""BigEarthNet v1.0 (S2, optionally S1 = BigEarthNet-MM) on disk, and the patch loader v1 and v2 share (no TFDS import).

    <s2_root>/<patch>/<patch>_B01.tif ... _B12.tif, _B8A.tif     12 bands L2A, uint16
    <s2_root>/<patch>/<patch>_labels_metadata.json   {"labels": [43-class names], "acquisition_date", ...}
    <s1_root>/<s1patch>/<s1patch>_VV.tif, _VH.tif                float32 dB, 120 px
    <s1_root>/<s1patch>/<s1patch>_labels_metadata.json  {"corresponding_s2_patch": <patch>, ...}

`s2_root` is `BigEarthNet-v1.0/` (or `BigEarthNet-S2-v1.0/`, `BigEarthNet-S2/`, or
the manual dir itself), `s1_root` is `BigEarthNet-S1-v1.0/` (or `BigEarthNet-S1/`).
Patches are 120 x 120 px at 10 m; 20 m bands are stored at 60 px and 60 m
bands at 20 px, resampled to 120 px (bilinear by default).

Labels: the 43 CORINE names of the json are mapped to the 19-class
nomenclature of Sumbul et al. 2021 ("BigEarthNet-19"); 11 of the 43 classes
have no 19-class counterpart and are dropped, so a patch can have an
all-zero `labels` vector.

Cloud / snow exclusions (v1): when the manual dir holds the lists published
with v1.0, `patches_with_cloud_and_shadow.csv` and
`patches_with_seasonal_snow.csv` (one S2 patch name per line, first column;
what TU Berlin's `eliminate_snowy_cloudy_patches.py` reads), the patches they
name are left out of every split, as the BigEarthNet authors recommend.

BigEarthNet v2.0 (reBEN) is listed by `layout_v2.py`; its refs carry the
19-class names from metadata.parquet, and `load_patch` reads both releases
into the same record.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import json
import os
import re
import time

import numpy as np

from data_pipelines import geotiff
from seamo_jax.sensors import S1_GRD, S2_L2A, BadRecordError, validate_array

TILE_SIZE = 120
S2_ROOT_NAMES = ("BigEarthNet-v1.0", "BigEarthNet-S2-v1.0", "BigEarthNet-S2")
S1_ROOT_NAMES = ("BigEarthNet-S1-v1.0", "BigEarthNet-S1")
METADATA_SUFFIX = "_labels_metadata.json"

# CORINE level-3 names as written in the v1.0 json files, in the original 43-class order.
LABELS_43 = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities",
    "Non-irrigated arable land", "Permanently irrigated land", "Rice fields", "Vineyards",
    "Fruit trees and berry plantations", "Olive groves", "Pastures", "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Natural grassland",
    "Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub", "Beaches, dunes, sands",
    "Bare rock", "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes", "Salines",
    "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons", "Estuaries", "Sea and ocean",
)
LABELS_19 = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops", "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas", "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
    "Inland waters", "Marine waters",
)
# 43-class index -> 19-class index (Sumbul et al. 2021, Table 1); absent = dropped class.
_43_TO_19 = {0: 0, 1: 0, 2: 1, 11: 2, 12: 2, 13: 2, 14: 3, 15: 3, 16: 3, 18: 3, 17: 4, 19: 5, 20: 6, 21: 7,
             22: 8, 23: 9, 24: 10, 25: 11, 31: 11, 26: 12, 27: 12, 28: 13, 29: 14, 33: 15, 34: 15, 35: 16,
             36: 16, 38: 17, 39: 17, 40: 18, 41: 18, 42: 18}
NAME_TO_19 = {LABELS_43[i]: j for i, j in _43_TO_19.items()}
DROPPED_43 = frozenset(n for i, n in enumerate(LABELS_43) if i not in _43_TO_19)

# S2_L2A band name -> BigEarthNet file suffix (zero-padded band numbers).
S2_FILE_BANDS = tuple(b if b == "B8A" else f"B{int(b[1:]):02d}" for b in S2_L2A.bands)
S1_FILE_BANDS = S1_GRD.bands  # VV, VH

# v1.0 exclusion lists: reason -> file name (in the manual dir or the S2 root).
EXCLUSION_FILES = {"seasonal_snow": "patches_with_seasonal_snow.csv",
                   "cloud_or_shadow": "patches_with_cloud_and_shadow.csv"}
# S2 product names start with the sensing time: S2A_MSIL2A_20170613T101031_...
_NAME_TIME = re.compile(r"^S2[AB]_MSI(?:L2A|L1C)_(\d{8}T\d{6})(?:_|$)")


@dataclasses.dataclass(frozen=True)
class PatchRef:
    """One patch: S2 folder, its S1 partner folder (multimodal config), and for v2 its labels.

    `labels19` None = v1 (43-class names read from the patch json); a tuple =
    v2, the 19-class names of metadata.parquet (`source` names that file).
    """

    name: str
    s2_dir: str
    s1_dir: str | None
    labels19: tuple[str, ...] | None = None
    source: str = ""


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    with_s1: bool = False
    resample: str = "bilinear"


def _first_existing(manual_dir: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.path.isdir(os.path.join(manual_dir, name)):
            return os.path.join(manual_dir, name)
    return None


def find_roots(manual_dir: str, with_s1: bool) -> tuple[str, str | None]:
    """(s2_root, s1_root or None) under `manual_dir`."""
    s2_root = _first_existing(manual_dir, S2_ROOT_NAMES) or manual_dir
    s1_root = _first_existing(manual_dir, S1_ROOT_NAMES)
    if with_s1 and s1_root is None:
        raise FileNotFoundError(f"no BigEarthNet-S1 folder {S1_ROOT_NAMES} in {manual_dir}")
    return s2_root, s1_root


def _patch_dirs(root: str) -> list[str]:
    """Patch folder names in `root` (folders holding `<name>_labels_metadata.json`), sorted."""
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, d + METADATA_SUFFIX)))


def s2_to_s1_map(s1_root: str) -> dict[str, str]:
    """S2 patch name -> S1 patch folder, from each S1 json's `corresponding_s2_patch`."""
    mapping = {}
    for name in _patch_dirs(s1_root):
        meta = os.path.join(s1_root, name, name + METADATA_SUFFIX)
        with open(meta, encoding="utf-8") as f:
            partner = json.load(f).get("corresponding_s2_patch")
        if partner is None:
            raise BadRecordError(f"{meta}: no 'corresponding_s2_patch' key; is this a BigEarthNet-S1 json?")
        mapping[partner] = os.path.join(s1_root, name)
    return mapping


def list_patches(manual_dir: str, with_s1: bool) -> list[PatchRef]:
    """All S2 patches (sorted by name); with `with_s1`, each with its S1 partner folder, or
    s1_dir None when no S1 json names it (the builder leaves those out and counts them)."""
    s2_root, s1_root = find_roots(manual_dir, with_s1)
    names = _patch_dirs(s2_root)
    if not names:
        raise FileNotFoundError(f"no BigEarthNet-S2 patch folders (<patch>/<patch>{METADATA_SUFFIX}) in {s2_root}")
    partners = s2_to_s1_map(s1_root) if with_s1 else {}
    return [PatchRef(name, os.path.join(s2_root, name), partners.get(name)) for name in names]


def has_v1_patches(manual_dir: str) -> bool:
    """Whether the v1 S2 root of `manual_dir` holds at least one `<patch>/<patch>_labels_metadata.json`."""
    s2_root = _first_existing(manual_dir, S2_ROOT_NAMES) or manual_dir
    with os.scandir(s2_root) as entries:
        return any(e.is_dir() and os.path.isfile(os.path.join(e.path, e.name + METADATA_SUFFIX)) for e in entries)


def read_exclusions(directories: list[str]) -> dict[str, set[str]]:
    """reason -> S2 patch names of the v1.0 cloud / snow lists found in `directories` (first hit per list).

    Each non-blank line's first csv column is a patch name; a header line, or a
    name of a patch not in this copy, is harmless (it matches nothing).
    """
    out = {}
    for reason, filename in EXCLUSION_FILES.items():
        for directory in directories:
            path = os.path.join(directory, filename)
            if os.path.isfile(path):
                with open(path, encoding="utf-8", newline="") as f:
                    out[reason] = {row[0].strip() for row in csv.reader(f) if row and row[0].strip()}
                break
    return out


def multi_hot_19(label_names: list[str], source: str) -> np.ndarray:
    """43-class names -> int64 multi-hot [19]; unknown names raise BadRecordError naming `source`."""
    out = np.zeros((len(LABELS_19),), np.int64)
    for name in label_names:
        if name in NAME_TO_19:
            out[NAME_TO_19[name]] = 1
        elif name not in DROPPED_43:
            raise BadRecordError(f"{source}, field 'labels': unknown BigEarthNet class {name!r}")
    return out


def multi_hot_from_19(label_names: tuple[str, ...] | list[str], source: str) -> np.ndarray:
    """19-class names (v2 metadata.parquet) -> int64 multi-hot [19]; an unknown name raises BadRecordError."""
    out = np.zeros((len(LABELS_19),), np.int64)
    for name in label_names:
        if name not in LABELS_19:
            raise BadRecordError(f"{source}, field 'labels': {name!r} is not a BigEarthNet 19-class name")
        out[LABELS_19.index(name)] = 1
    return out


def time_from_name(name: str) -> int:
    """Unix seconds of the sensing time in an S2 patch name (S2A_MSIL2A_20170613T101031_...); 0 if none."""
    match = _NAME_TIME.match(name)
    return calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S")) if match else 0


def _acquisition_time(meta: dict, source: str) -> int:
    value = meta.get("acquisition_date") or meta.get("acquisition_time")
    if not value:
        return 0
    try:
        return calendar.timegm(time.strptime(value[:19], "%Y-%m-%d %H:%M:%S"))
    except ValueError as err:
        raise BadRecordError(f"{source}: cannot parse acquisition date {value!r}") from err


def _read_s2(paths: list[str], method: str) -> np.ndarray:
    """The 12 band files -> uint16 [120, 120, 12] on the 10 m grid.

    A band must be stored at its native size (120 / 60 / 20 px for 10 / 20 / 60 m)
    or already at 120 px (then it is used as is); any other size is a truncated or
    foreign file and raises BadRecordError naming it.
    """
    out = np.empty((TILE_SIZE, TILE_SIZE, len(paths)), np.dtype(S2_L2A.dtype))
    for channel, (path, gsd) in enumerate(zip(paths, S2_L2A.gsd_m)):
        try:
            band = geotiff.read_band(path, dtype=S2_L2A.dtype)
        except geotiff.GeoTiffError as err:
            raise BadRecordError(f"field 's2': {err}") from err
        native = (TILE_SIZE * 10 // int(gsd),) * 2
        if band.shape not in (native, (TILE_SIZE, TILE_SIZE)):
            raise BadRecordError(f"{path}, field 's2': shape {band.shape}, expected {native} "
                                 f"({gsd:g} m band) or {(TILE_SIZE, TILE_SIZE)}")
        out[:, :, channel] = geotiff.resample(band, (TILE_SIZE, TILE_SIZE), method)
    return out


def load_patch(ref: PatchRef, config: LoadConfig) -> tuple[str, dict]:
    """One patch (v1 or v2) -> (name, record): s2 uint16 [1, 120, 120, 12] (S2_L2A order), optional
    s1 float32 [1, 120, 120, 2] dB (VV, VH), timestamps [1], latlon, labels int64 multi-hot [19]."""
    if ref.labels19 is None:  # v1: labels and date from the patch json
        meta_path = os.path.join(ref.s2_dir, ref.name + METADATA_SUFFIX)
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        labels = multi_hot_19(list(meta.get("labels", [])), meta_path)
        timestamp = _acquisition_time(meta, meta_path)
    else:  # v2: labels from metadata.parquet, date from the patch name
        labels = multi_hot_from_19(ref.labels19, f"{ref.source}, patch_id {ref.name}")
        timestamp = time_from_name(ref.name)
    paths = [os.path.join(ref.s2_dir, f"{ref.name}_{b}.tif") for b in S2_FILE_BANDS]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        b10 = os.path.join(ref.s2_dir, f"{ref.name}_B10.tif")
        hint = " (folder has B10: L1C data? BigEarthNet-S2 is L2A, 12 bands)" if os.path.isfile(b10) else ""
        raise BadRecordError(f"{ref.s2_dir}, field 's2': missing {[os.path.basename(p) for p in missing]}{hint}")
    s2 = _read_s2(paths, config.resample)[None]
    validate_array(s2, S2_L2A, record_id=ref.s2_dir, field="s2", num_seasons=1, spatial_shape=(TILE_SIZE, TILE_SIZE))
    latlon = geotiff.center_latlon(paths[S2_L2A.band_index("B2")])
    record = {
        "s2": s2,
        "timestamps": np.asarray([timestamp], np.int64),
        "location_id": ref.name,
        "latlon": np.asarray(latlon if latlon is not None else (np.nan, np.nan), np.float32),
        "labels": labels,
    }
    if config.with_s1:
        if ref.s1_dir is None:
            raise BadRecordError(f"{ref.s2_dir}, field 's1': no S1 partner patch")
        s1_name = os.path.basename(ref.s1_dir)
        s1 = np.empty((1, TILE_SIZE, TILE_SIZE, 2), np.float32)
        for channel, band in enumerate(S1_FILE_BANDS):
            path = os.path.join(ref.s1_dir, f"{s1_name}_{band}.tif")
            try:
                values = geotiff.read_band(path, dtype=np.float32)
            except geotiff.GeoTiffError as err:
                raise BadRecordError(f"field 's1': {err}") from err
            if values.shape != (TILE_SIZE, TILE_SIZE):
                raise BadRecordError(f"{path}, field 's1': shape {values.shape}, expected {(TILE_SIZE, TILE_SIZE)}")
            if not np.isfinite(values).all():
                raise BadRecordError(f"{path}, field 's1': {int((~np.isfinite(values)).sum())} non-finite values")
            s1[0, :, :, channel] = values
        validate_array(s1, S1_GRD, record_id=ref.s1_dir, field="s1", num_seasons=1)
        record["s1"] = s1
    return ref.name, record
