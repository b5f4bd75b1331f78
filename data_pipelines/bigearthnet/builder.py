"""TFDS builder `bigearthnet`: BigEarthNet v1.0 or v2.0 (reBEN), S2 L2A (+ S1), 19-class multi-labels.

The release is told from the manual dir's layout (no flag):

v2.0 (reBEN, https://bigearth.net, Zenodo 10891137), when `metadata.parquet` is there:
    manual_dir/metadata.parquet                              labels, split, S1 partner (see layout_v2.py)
    manual_dir/BigEarthNet-S2/<tile>/<patch_id>/...          S2
    manual_dir/BigEarthNet-S1/<scene>/<s1_name>/...          S1, config `s2_s1` only
  Splits: the parquet's `split` column (train / validation / test). Patches
  flagged contains_seasonal_snow or contains_cloud_or_shadow are left out
  (reBEN's loader default).

v1.0, when the S2 root holds `<patch>/<patch>_labels_metadata.json`:
    manual_dir/BigEarthNet-v1.0/<patch>/...          S2 (see layout.py)
    manual_dir/BigEarthNet-S1-v1.0/<s1patch>/...     S1, config `s2_s1` only
    manual_dir/[train.csv, val.csv, test.csv]        optional published split lists
                (bigearthnet-19-models names; `bigearthnet-{train,val,test}.csv` also accepted)
    manual_dir/[patches_with_cloud_and_shadow.csv, patches_with_seasonal_snow.csv]
                optional published exclusion lists: their patches are left out
  Splits from the lists when present (patches not listed are left out), else
  60/20/20 by hashed patch name.

Configs: `s2` (default) and `s2_s1` (BigEarthNet-MM; v1: S1 partner linked by
the S1 json's `corresponding_s2_patch`, v2: by the parquet's `s1_name`; a
patch without its S1 folder on disk is left out). What was left out, and why,
is counted in the dataset metadata (`excluded`, `excluded_examples`), with
`release` and `split_method`. Build one release per data dir: both write
`bigearthnet/<config>/<version>`. Records (both releases): s2 uint16
[1, 120, 120, 12], s1 float32 [1, 120, 120, 2], timestamps [1], location_id
(patch name), latlon, labels int64 multi-hot [19] in `layout.LABELS_19` order.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os

import tensorflow_datasets as tfds

from data_pipelines import splits
from data_pipelines.bigearthnet import layout, layout_v2
from data_pipelines.features import record_features
from data_pipelines.real_builder import ManualDirBuilder
from seamo_jax.sensors import S1_GRD, S2_L2A

SPLIT_FILE_PATTERNS = ("{split}.csv", "bigearthnet-{split}.csv")
RELEASES = {"v1": "BigEarthNet v1.0", "v2": "BigEarthNet v2.0 (reBEN)"}
NUM_EXAMPLES_KEPT = 10  # names per exclusion reason written to the metadata

_log = logging.getLogger(__name__)
_INSTRUCTIONS = __doc__  # the module docstring (inside the class body `__doc__` is the class's)


def detect_release(manual_dir: str) -> str:
    """"v2" or "v1" from the folder layout; FileNotFoundError (one line: what, and what to do) otherwise."""
    if os.path.isfile(os.path.join(manual_dir, layout_v2.METADATA_FILE)):
        return "v2"
    if layout.has_v1_patches(manual_dir):
        return "v1"
    if layout_v2.has_v2_tree(manual_dir):
        raise FileNotFoundError(
            f"BigEarthNet v2 patches are in {os.path.join(manual_dir, layout_v2.S2_DIR)} but there is no "
            f"{layout_v2.METADATA_FILE} in {manual_dir} (it holds the labels, splits and S1 partners): "
            f"download it from {layout_v2.DOWNLOAD_HINT} into {manual_dir}")
    raise FileNotFoundError(
        f"no BigEarthNet release in {manual_dir}: expected v2 ({layout_v2.METADATA_FILE} + "
        f"{layout_v2.S2_DIR}/<tile>/<patch_id>/) or v1 ({layout.S2_ROOT_NAMES[0]}/<patch>/<patch>"
        f"{layout.METADATA_SUFFIX}); pass the folder holding them as --manual-dir")


@dataclasses.dataclass(kw_only=True)
class BigearthnetConfig(tfds.core.BuilderConfig):
    with_s1: bool = False
    resample: str = "bilinear"


class Bigearthnet(ManualDirBuilder):
    """BigEarthNet v1.0 or v2.0 patches -> ArrayRecord, 19-class multi-hot labels."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "BigEarthNet v1.0 S2 (+S1), 19-class labels.",
        "1.1.0": "BigEarthNet v2.0 (reBEN) read from metadata.parquet; v1.0 cloud/snow lists honoured; "
                 "patches without an S1 partner left out and counted; bands stored at 120 px accepted.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [
        BigearthnetConfig(name="s2", description="Sentinel-2 L2A, 12 bands"),
        BigearthnetConfig(name="s2_s1", with_s1=True, description="Sentinel-2 L2A + Sentinel-1 (BigEarthNet-MM)"),
    ]
    DEFAULT_CONFIG_NAME = "s2"
    class_names = layout.LABELS_19

    def __init__(self, *, split_salt: str = splits.DEFAULT_SALT, **kwargs):
        self.split_salt = split_salt
        super().__init__(**kwargs)

    @property
    def sensors(self) -> dict:
        return {"s2": S2_L2A, "s1": S1_GRD} if self.builder_config.with_s1 else {"s2": S2_L2A}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            disable_shuffling=True,  # index order on every path (local, TFDS, Beam): readers shuffle
            description="BigEarthNet v1.0 (590k) or v2.0 / reBEN (549k) Sentinel-2 patches (120x120 px, "
                        "+ Sentinel-1), 19-class multi-label.",
            features=record_features(num_seasons=1, tile_size=layout.TILE_SIZE, s2_sensor=S2_L2A,
                                     with_s1=self.builder_config.with_s1, class_names=layout.LABELS_19,
                                     multi_label=True),
            homepage="https://bigearth.net",
            citation="Sumbul et al., BigEarthNet-MM, IEEE GRSM 2021; Clasen et al., reBEN, IGARSS 2025.",
            metadata=tfds.core.MetadataDict(sensors={m: s.name for m, s in self.sensors.items()},
                                            class_names=list(layout.LABELS_19),
                                            resample=self.builder_config.resample),
        )

    def split_refs(self, manual_dir: str) -> dict[str, list[layout.PatchRef]]:
        release = detect_release(manual_dir)
        if release == "v2":
            listing = layout_v2.list_patches(manual_dir, self.builder_config.with_s1)
            refs, excluded = listing.refs, listing.excluded
            self.split_method = f"{layout_v2.METADATA_FILE} split column (reBEN geographic split)"
        else:
            refs, excluded = self._v1_split_refs(manual_dir)
        self.info.metadata["release"] = RELEASES[release]
        self.info.metadata["excluded"] = {reason: len(names) for reason, names in excluded.items()}
        self.info.metadata["excluded_examples"] = {r: names[:NUM_EXAMPLES_KEPT] for r, names in excluded.items()}
        if excluded:
            _log.warning("bigearthnet (%s): left out %s", RELEASES[release],
                         ", ".join(f"{len(n)} {r}" for r, n in excluded.items()))
        return refs

    def _v1_split_refs(self, manual_dir: str) -> tuple[dict[str, list[layout.PatchRef]], dict[str, list[str]]]:
        with_s1 = self.builder_config.with_s1
        patches = {p.name: p for p in layout.list_patches(manual_dir, with_s1)}
        s2_root, _ = layout.find_roots(manual_dir, with_s1)
        excluded: dict[str, list[str]] = {}
        left_out: set[str] = set()
        for reason, names in layout.read_exclusions(list(dict.fromkeys([manual_dir, s2_root]))).items():
            hits = sorted(n for n in names if n in patches and n not in left_out)
            excluded[reason] = hits
            left_out.update(hits)
        if with_s1:
            excluded["no_s1_partner"] = sorted(n for n, p in patches.items() if p.s1_dir is None and n not in left_out)
            left_out.update(excluded["no_s1_partner"])
        excluded = {reason: names for reason, names in excluded.items() if names}
        kept = sorted(n for n in patches if n not in left_out)
        files = splits.find_split_files(manual_dir, SPLIT_FILE_PATTERNS)
        if files:
            listed = splits.splits_from_files(files, patches)
            names = {split: [n for n in listed[split] if n not in left_out] for split in splits.SPLIT_NAMES}
            self.split_method = "files: " + ", ".join(os.path.basename(files[s]) for s in splits.SPLIT_NAMES)
        else:
            # Multi-label: no single class to stratify on, so one stratum.
            names = splits.hashed_stratified_split(kept, [0] * len(kept), salt=self.split_salt)
            self.split_method = f"hashed 60/20/20 by patch name, salt={self.split_salt!r}"
        return {split: [patches[n] for n in names[split]] for split in splits.SPLIT_NAMES}, excluded

    @property
    def load_fn(self):
        cfg = self.builder_config
        return functools.partial(layout.load_patch, config=layout.LoadConfig(cfg.with_s1, cfg.resample))
