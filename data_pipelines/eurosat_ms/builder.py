"""TFDS builder `eurosat_ms`: EuroSAT-MS (13-band Sentinel-2 L1C, 10 classes) from a manual dir.

    manual_dir/                       (or any sub-folder holding the class folders)
      AnnualCrop/AnnualCrop_1.tif ... SeaLake/SeaLake_3000.tif
      [eurosat-train.txt, eurosat-val.txt, eurosat-test.txt]   optional split lists

Splits train / validation / test: the published lists when present (TorchGeo's
`eurosat-{train,val,test}.txt`, names matched by stem so their `.jpg` names
work), else a class-stratified 60/20/20 split by hashed file name
(`data_pipelines.splits`). `metadata.json` records which one was used.

Records: s2 uint16 [1, 64, 64, 13] (S2_L1C order), timestamps [1] = 0
(unknown), location_id = file stem (e.g. "Forest_12"), latlon, label.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from data_pipelines import splits
from data_pipelines.eurosat_ms import layout
from data_pipelines.features import record_features
from data_pipelines.real_builder import ManualDirBuilder
from seamo_jax.sensors import S2_L1C

SPLIT_FILE_PATTERNS = ("eurosat-{split}.txt", "eurosat-ms-{split}.txt", "{split}.txt")


class EurosatMs(ManualDirBuilder):
    """EuroSAT-MS all-bands GeoTIFFs -> ArrayRecord (`file_format="array_record"`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "EuroSAT-MS 13 bands, S2_L1C order, fixed splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
    sensors = {"s2": S2_L1C}

    def __init__(self, *, split_salt: str = splits.DEFAULT_SALT, **kwargs):
        self.split_salt = split_salt
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            disable_shuffling=True,  # index order on every path (local, TFDS, Beam): readers shuffle
            description="EuroSAT-MS: 27k Sentinel-2 L1C tiles, 13 bands, 64x64 px, 10 land-cover classes.",
            features=record_features(num_seasons=1, tile_size=layout.TILE_SIZE, s2_sensor=S2_L1C, with_s1=False,
                                     class_names=layout.CLASS_NAMES),
            homepage="https://github.com/phelber/EuroSAT",
            citation="Helber et al., EuroSAT, IEEE JSTARS 2019.",
            metadata=tfds.core.MetadataDict(sensors={"s2": S2_L1C.name}),
        )

    def split_refs(self, manual_dir: str) -> dict[str, list[layout.TileRef]]:
        """split -> tiles, from the published lists in `manual_dir`/root or a hashed stratified split."""
        root = layout.find_root(manual_dir)
        tiles = layout.list_tiles(root)
        by_stem = {os.path.splitext(os.path.basename(t.path))[0]: t for t in tiles}
        files = None
        for folder in dict.fromkeys((manual_dir, root)):
            files = splits.find_split_files(folder, SPLIT_FILE_PATTERNS)
            if files:
                break
        if files:
            names = splits.splits_from_files(files, by_stem)
            self.split_method = "files: " + ", ".join(os.path.basename(files[s]) for s in splits.SPLIT_NAMES)
        else:
            stems = list(by_stem)
            names = splits.hashed_stratified_split(stems, [by_stem[s].label for s in stems], salt=self.split_salt)
            self.split_method = f"hashed-stratified 60/20/20 by file stem, salt={self.split_salt!r}"
        return {split: [by_stem[n] for n in names[split]] for split in splits.SPLIT_NAMES}

    @property
    def load_fn(self):
        return layout.load_record
