"""TFDS builder `ssl4eo_s12`: the SSL4EO-S12 release (4 seasons, S1 + S2) from a manual dir.

    manual_dir/{s1,s2c,s2a}/<location>/<season>/<band>.tif   (see layout.py)

Configs (`ssl4eo_s12/<name>`):
  l1c (default)  s2 = L1C (s2c/, 13 bands) + s1 (VV, VH dB)
  l2a            s2 = L2A (s2a/, 12 bands) + s1
  l1c_s2only, l2a_s2only   without s1

One split, `train` (SSL4EO-S12 is unlabelled pretraining data). Records:
s2 uint16 [4, 264, 264, C], s1 float32 [4, 264, 264, 2], timestamps [4],
location_id (folder name), latlon. Only the GeoTIFF release is read; the
zarr re-release (SSL4EO-S12 v1.1) is not supported yet.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow_datasets as tfds

from data_pipelines.features import record_features
from data_pipelines.real_builder import ManualDirBuilder
from data_pipelines.ssl4eo_s12 import layout
from seamo_jax.sensors import S1_GRD, get_sensor


@dataclasses.dataclass(kw_only=True)
class Ssl4eoS12Config(tfds.core.BuilderConfig):
    """Which S2 level to read, whether to add S1, and the 10 m tile size / resampling."""

    s2_sensor: str = "s2_l1c"
    with_s1: bool = True
    tile_size: int = 264
    num_seasons: int = 4
    resample: str = "bilinear"

    def load_config(self) -> layout.LoadConfig:
        return layout.LoadConfig(s2_sensor=self.s2_sensor, with_s1=self.with_s1, tile_size=self.tile_size,
                                 num_seasons=self.num_seasons, resample=self.resample)


class Ssl4eoS12(ManualDirBuilder):
    """SSL4EO-S12 GeoTIFF release -> ArrayRecord, one record per location with all seasons."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "GeoTIFF release; 4 seasons; L1C or L2A; optional S1 (dB)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
    BUILDER_CONFIGS = [
        Ssl4eoS12Config(name="l1c", description="S2 L1C (13 bands) + S1 GRD"),
        Ssl4eoS12Config(name="l2a", s2_sensor="s2_l2a", description="S2 L2A (12 bands) + S1 GRD"),
        Ssl4eoS12Config(name="l1c_s2only", with_s1=False, description="S2 L1C only"),
        Ssl4eoS12Config(name="l2a_s2only", s2_sensor="s2_l2a", with_s1=False, description="S2 L2A only"),
    ]
    DEFAULT_CONFIG_NAME = "l1c"

    @property
    def sensors(self) -> dict:
        """modality -> SensorSpec of the records this config writes."""
        out = {"s2": get_sensor(self.builder_config.s2_sensor)}
        if self.builder_config.with_s1:
            out["s1"] = S1_GRD
        return out

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="SSL4EO-S12: 251k locations x 4 seasons of Sentinel-1 GRD + Sentinel-2 L1C/L2A.",
            features=record_features(num_seasons=cfg.num_seasons, tile_size=cfg.tile_size,
                                     s2_sensor=get_sensor(cfg.s2_sensor), with_s1=cfg.with_s1),
            homepage="https://github.com/zhu-xlab/SSL4EO-S12",
            citation="Wang et al., SSL4EO-S12, IEEE GRSM 2023.",
            metadata=tfds.core.MetadataDict(
                sensors={m: s.name for m, s in self.sensors.items()}, resample=cfg.resample,
                s1_units=S1_GRD.units),
        )

    def split_refs(self, manual_dir: str) -> dict[str, list[layout.LocationRef]]:
        cfg = self.builder_config
        s2_dirname = layout.S2_DIRS[get_sensor(cfg.s2_sensor).level]
        root = layout.find_root(manual_dir, s2_dirname)
        self.split_method = f"all locations of {s2_dirname}/ in one train split"
        return {"train": layout.list_locations(root, s2_dirname, cfg.with_s1)}

    @property
    def load_fn(self):
        return functools.partial(layout.load_location, config=self.builder_config.load_config())
