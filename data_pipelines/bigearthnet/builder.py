"""TFDS builder `bigearthnet`: BigEarthNet v1.0 (S2 L2A, optional S1) with 19-class multi-labels.

    manual_dir/BigEarthNet-v1.0/<patch>/...          S2 (see layout.py)
    manual_dir/BigEarthNet-S1-v1.0/<s1patch>/...     S1, config `s2_s1` only
    manual_dir/[train.csv, val.csv, test.csv]        optional published split lists
                (bigearthnet-19-models names; `bigearthnet-{train,val,test}.csv` also accepted)

Configs: `s2` (default) and `s2_s1` (BigEarthNet-MM: S1 partner linked by
the S1 json's `corresponding_s2_patch`). Splits train / validation / test
from the lists when present (patches not listed, e.g. the published cloud /
snow exclusions, are left out), else 60/20/20 by hashed patch name. Records:
s2 uint16 [1, 120, 120, 12], s1 float32 [1, 120, 120, 2], timestamps [1],
location_id (patch name), latlon, labels int64 multi-hot [19].
"""

from __future__ import annotations

import dataclasses
import functools
import os

import tensorflow_datasets as tfds

from data_pipelines import splits
from data_pipelines.bigearthnet import layout
from data_pipelines.features import record_features
from data_pipelines.real_builder import ManualDirBuilder
from seamo_jax.sensors import S1_GRD, S2_L2A

SPLIT_FILE_PATTERNS = ("{split}.csv", "bigearthnet-{split}.csv")


@dataclasses.dataclass(kw_only=True)
class BigearthnetConfig(tfds.core.BuilderConfig):
    with_s1: bool = False
    resample: str = "bilinear"


class Bigearthnet(ManualDirBuilder):
    """BigEarthNet v1.0 patches -> ArrayRecord, 19-class multi-hot labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "BigEarthNet v1.0 S2 (+S1), 19-class labels."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
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
            description="BigEarthNet v1.0: 590k Sentinel-2 patches (120x120 px), 19-class multi-label.",
            features=record_features(num_seasons=1, tile_size=layout.TILE_SIZE, s2_sensor=S2_L2A,
                                     with_s1=self.builder_config.with_s1, class_names=layout.LABELS_19,
                                     multi_label=True),
            homepage="https://bigearth.net",
            citation="Sumbul et al., BigEarthNet-MM, IEEE GRSM 2021.",
            metadata=tfds.core.MetadataDict(sensors={m: s.name for m, s in self.sensors.items()},
                                            class_names=list(layout.LABELS_19),
                                            resample=self.builder_config.resample),
        )

    def split_refs(self, manual_dir: str) -> dict[str, list[layout.PatchRef]]:
        patches = {p.name: p for p in layout.list_patches(manual_dir, self.builder_config.with_s1)}
        files = splits.find_split_files(manual_dir, SPLIT_FILE_PATTERNS)
        if files:
            names = splits.splits_from_files(files, patches)
            self.split_method = "files: " + ", ".join(os.path.basename(files[s]) for s in splits.SPLIT_NAMES)
        else:
            # Multi-label: no single class to stratify on, so one stratum.
            names = splits.hashed_stratified_split(list(patches), [0] * len(patches), salt=self.split_salt)
            self.split_method = f"hashed 60/20/20 by patch name, salt={self.split_salt!r}"
        return {split: [patches[n] for n in names[split]] for split in splits.SPLIT_NAMES}

    @property
    def load_fn(self):
        cfg = self.builder_config
        return functools.partial(layout.load_patch, config=layout.LoadConfig(cfg.with_s1, cfg.resample))
