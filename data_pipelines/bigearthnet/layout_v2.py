"""BigEarthNet v2.0 (reBEN, Clasen et al. 2025) on disk (no TFDS import).

    <root>/BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif ... _B12.tif, _B8A.tif   12 bands L2A, uint16
    <root>/BigEarthNet-S1/<scene>/<s1_name>/<s1_name>_VV.tif, _VH.tif                   float32 dB, 120 px
    <root>/Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif               (not read)
    <root>/metadata.parquet   patch_id, labels (19-class names), split, country, s1_name,
                              s2v1_name, contains_seasonal_snow, contains_cloud_or_shadow
    <root>/metadata_for_patches_with_snow_cloud_or_shadow.parquet   (optional, same columns)

`<tile>` is the patch_id without its trailing `_<col>_<row>`
(S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57 ->
S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP); `<scene>` is the s1_name
without its trailing `_<tile>_<col>_<row>` (S1A_IW_GRDH_1SDV_20170613T165043).
Bands are stored as in v1 (120 / 60 / 20 px for 10 / 20 / 60 m).

What is read from metadata.parquet: the labels (already in the 19-class
nomenclature, spelled as `layout.LABELS_19`), the split (`train`,
`validation`, `test`: the reBEN geographic split) and the S1 partner
(`s1_name`). Only patch_id, labels and split are required; TorchGeo's test
file has only those and s1_name.

Exclusions follow reBEN's reference loader (ConfigILM `BENv2DataSet`,
`include_cloudy=False, include_snowy=False` by default): a row with
`contains_seasonal_snow` or `contains_cloud_or_shadow` true is left out (a
missing column or a null counts as false). The release keeps those patches in
the separate `metadata_for_patches_with_snow_cloud_or_shadow.parquet`,
which is never read for records (TorchGeo's `BigEarthNetV2` does not read it
either); when present, its patches are only counted as excluded. Rows whose
S2 folder (or, for the S1 config, S1 folder) is not on disk are left out
and counted, so a partial download builds what it has.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os

import pyarrow.parquet as pq

from data_pipelines import splits
from data_pipelines.bigearthnet.layout import PatchRef

S2_DIR = "BigEarthNet-S2"
S1_DIR = "BigEarthNet-S1"
METADATA_FILE = "metadata.parquet"
SNOW_CLOUD_FILE = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
REQUIRED_COLUMNS = ("patch_id", "labels", "split")
FLAG_COLUMNS = {"seasonal_snow": "contains_seasonal_snow", "cloud_or_shadow": "contains_cloud_or_shadow"}
# metadata.parquet split value -> our split name ("val" also accepted).
SPLIT_VALUES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
DOWNLOAD_HINT = "https://bigearth.net (Zenodo record 10891137)"


@dataclasses.dataclass
class Listing:
    """Refs per split, and reason -> names of the patches left out (sorted)."""

    refs: dict[str, list[PatchRef]]
    excluded: dict[str, list[str]]


def s2_patch_dir(s2_root: str, patch_id: str) -> str:
    return os.path.join(s2_root, patch_id.rsplit("_", 2)[0], patch_id)


def s1_patch_dir(s1_root: str, s1_name: str) -> str:
    return os.path.join(s1_root, s1_name.rsplit("_", 3)[0], s1_name)


def has_v2_tree(manual_dir: str) -> bool:
    """Whether `manual_dir/BigEarthNet-S2` is laid out as `<tile>/<tile>_<col>_<row>/` (a few entries are checked)."""
    s2_root = os.path.join(manual_dir, S2_DIR)
    if not os.path.isdir(s2_root):
        return False
    with os.scandir(s2_root) as tiles:
        for tile in itertools.islice((t for t in tiles if t.is_dir()), 8):
            with os.scandir(tile.path) as patches:
                if any(p.is_dir() and p.name.startswith(tile.name + "_") for p in itertools.islice(patches, 8)):
                    return True
    return False


def read_metadata(path: str, columns: tuple[str, ...]) -> dict[str, list]:
    """column -> values of a metadata parquet; `columns` must exist, FLAG_COLUMNS are read when present."""
    names = pq.read_schema(path).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (columns: {names}); is this BigEarthNet v2's "
                         f"{METADATA_FILE}? Download it from {DOWNLOAD_HINT}")
    wanted = list(columns) + [c for c in FLAG_COLUMNS.values() if c in names and c not in columns]
    table = pq.read_table(path, columns=wanted)
    return {c: table.column(c).to_pylist() for c in wanted}


def _flag_reason(rows: dict[str, list], i: int) -> str | None:
    """First exclusion flag set on row i (snow before cloud), or None."""
    for reason, column in FLAG_COLUMNS.items():
        if column in rows and rows[column][i]:
            return reason
    return None


def list_patches(manual_dir: str, with_s1: bool) -> Listing:
    """Refs per split from `manual_dir/metadata.parquet`, each split sorted by patch_id."""
    metadata = os.path.join(manual_dir, METADATA_FILE)
    s2_root, s1_root = os.path.join(manual_dir, S2_DIR), os.path.join(manual_dir, S1_DIR)
    if with_s1 and not os.path.isdir(s1_root):
        raise FileNotFoundError(f"config s2_s1 needs the S1 patches: no {S1_DIR}/ in {manual_dir} "
                                f"(extract BigEarthNet-S1 from {DOWNLOAD_HINT} there, or build config s2)")
    rows = read_metadata(metadata, REQUIRED_COLUMNS + (("s1_name",) if with_s1 else ()))
    ids = rows["patch_id"]
    dupes = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"{metadata}: {len(dupes)} patch_id values appear more than once, e.g. {dupes[:3]}")
    bad_splits = sorted({str(s) for s in rows["split"]} - set(SPLIT_VALUES))
    if bad_splits:
        raise ValueError(f"{metadata}: unknown split value(s) {bad_splits}; expected train, validation, test")

    refs: dict[str, list[PatchRef]] = {s: [] for s in splits.SPLIT_NAMES}
    excluded: dict[str, list[str]] = {}
    for i, patch_id in enumerate(ids):
        reason = _flag_reason(rows, i)
        s2_dir = s2_patch_dir(s2_root, patch_id)
        s1_dir = None
        if reason is None and not os.path.isdir(s2_dir):
            reason = "s2_not_on_disk"
        if reason is None and with_s1:
            s1_name = rows["s1_name"][i]
            s1_dir = s1_patch_dir(s1_root, s1_name) if s1_name else None
            if s1_dir is None or not os.path.isdir(s1_dir):
                reason = "s1_not_on_disk"
        if reason is not None:
            excluded.setdefault(reason, []).append(patch_id)
            continue
        refs[SPLIT_VALUES[rows["split"][i]]].append(
            PatchRef(patch_id, s2_dir, s1_dir, labels19=tuple(rows["labels"][i] or ()), source=metadata))

    unflagged = sum(_flag_reason(rows, i) is None for i in range(len(ids)))
    if unflagged and len(excluded.get("s2_not_on_disk", ())) == unflagged:
        example = s2_patch_dir(s2_root, ids[0])
        raise FileNotFoundError(f"none of the patches in {metadata} is on disk as {S2_DIR}/<tile>/<patch_id>/ "
                                f"(e.g. {example}); extract BigEarthNet-S2 into {manual_dir}")

    snow_cloud = os.path.join(manual_dir, SNOW_CLOUD_FILE)
    if os.path.isfile(snow_cloud):  # counted only: these patches are never read
        listed = set(ids)
        extra = read_metadata(snow_cloud, ("patch_id",))
        for i, patch_id in enumerate(extra["patch_id"]):
            if patch_id not in listed:
                excluded.setdefault(_flag_reason(extra, i) or "snow_cloud_file", []).append(patch_id)

    for split_refs in refs.values():
        split_refs.sort(key=lambda r: r.name)
    return Listing(refs, {reason: sorted(names) for reason, names in sorted(excluded.items())})
