"""TFDS builder `ssl4eo_s12`: SSL4EO-S12 (S1 + S2, 4 timestamps) from a manual dir, three releases.

    v1 GeoTIFF release      manual_dir/{s1,s2c,s2a}/<location>/<timestamp>/<band>.tif   (layout.py)
    v1 8-bit compressed     same layout, uint8 JPEG-compressed GeoTIFFs                   (layout.py)
    v1.1 zarr.zip shards    manual_dir/{train,val}/{S2L1C,S2L2A,S1GRD}/*.zarr.zip        (zarr_layout.py)

Configs (`ssl4eo_s12/<name>`):
  l1c (default)   v1: s2 = L1C (s2c/, 13 bands, uint16) + s1 (VV, VH float32 dB)
  l2a             v1: s2 = L2A (s2a/, 12 bands) + s1
  l1c_s2only, l2a_s2only           v1 without s1
  l1c_uint8, l2a_uint8 (+ _s2only)  the 8-bit compressed release: s2 and s1 uint8, sensor specs
                                    s2_l1c_uint8 / s2_l2a_uint8 / s1_grd_uint8 (their scaling, seamo_jax.sensors)
  v1_1_l1c, v1_1_l2a (+ _s2only)    v1.1: S2 with the +1000 offset (s2_l1c_v11 / s2_l2a_v11, the
                                    release's statistics), S1 float32 dB (s1_grd_v11), cloud_mask

Builder arguments (`--builder-arg key=value`, or `builder_kwargs` in a training
config) override a config's fields: `num_seasons`, `tile_size`, `resample`,
`s2_layout` ("grid" | "native": S2 bands at the resolution the GeoTIFFs store,
s2_10m / s2_20m / s2_60m, v1 releases only: v1.1 stores every band at 10 m and
going back to 20 / 60 m would lose information), `codec` ("none" | "blosc2":
S2 and S1 as lossless blosc2 frames; S1 then stored as the S1 spec's uint16
codes, dB = code * 0.002 - 80, instead of float32: 5.2 MB -> 2.9 MB per
4-season location with native + blosc2),
e.g. `num_seasons=2` keeps locations with 2 timestamps (and 2 of 4 elsewhere,
`layout.select_timestamps`); the overridden config gets its own name
(`l1c_seasons2`), so it never shares a directory with the default one.

Splits: v1 has one, `train` (unlabelled pretraining data); v1.1 has `train`
and `validation` from its train/ and val/ folders (shard lists in splits/
when present). Records: s2 [S, H, W, C], s1 [S, H, W, 2], timestamps [S],
location_id, latlon (the training pipeline reads these, as before), plus
`nodata_pixels` / `s1_nodata_pixels` int32 [S] (pixels with a 0 in any band,
not for the 8-bit release, where 0 is also a clipped value) and, for v1.1,
`cloud_mask` uint8 [S, H, W] as stored.

A location that cannot be read as configured -- fewer timestamps than
`num_seasons`, no S1 folder / sample, missing or unreadable band files,
non-finite S1 -- is skipped, counted and listed by id in the dataset's
`metadata.json` and in `seamo data build`'s summary; the build goes on.
Files of another product than the config reads (8-bit S2 under a 16-bit
config, integer or linear-power S1, another modality's zarr) stop the build
with one line naming the config to use. If every location is skipped the
build stops too (nothing is written) and says what to change.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.features import check_storage, record_features
from data_pipelines.real_builder import ManualDirBuilder
from data_pipelines.ssl4eo_s12 import layout, zarr_layout
from seamo_jax.data import band_groups
from seamo_jax.sensors import S1_STORAGE_DTYPE, BadRecordError, get_sensor

RELEASES = ("v1", "v1_uint8", "v1_1")
OVERRIDABLE = ("num_seasons", "tile_size", "resample", "s2_layout", "codec")
_HOMEPAGES = {"v1": "https://github.com/zhu-xlab/SSL4EO-S12", "v1_uint8": "https://github.com/zhu-xlab/SSL4EO-S12",
              "v1_1": "https://github.com/DLR-MF-DAS/SSL4EO-S12-v1.1"}


@dataclasses.dataclass(kw_only=True)
class Ssl4eoS12Config(tfds.core.BuilderConfig):
    """Which release and S2 level to read, whether to add S1, and the 10 m tile size / resampling."""

    s2_sensor: str = "s2_l1c"
    with_s1: bool = True
    tile_size: int = 264
    num_seasons: int = 4
    resample: str = "bilinear"
    release: str = "v1"           # v1 (GeoTIFF) | v1_uint8 (8-bit compressed GeoTIFF) | v1_1 (zarr.zip)
    s1_sensor: str = "s1_grd"
    s2_layout: str = "grid"       # grid | native (v1 releases)
    codec: str = "none"           # none | blosc2

    def load_config(self) -> layout.LoadConfig:
        return layout.LoadConfig(s2_sensor=self.s2_sensor, with_s1=self.with_s1, tile_size=self.tile_size,
                                 num_seasons=self.num_seasons, resample=self.resample, s1_sensor=self.s1_sensor,
                                 s2_layout=self.s2_layout)

    def check_storage(self) -> None:
        """ValueError (one line) for a layout / codec this release cannot be stored in."""
        check_storage(self.s2_layout, self.codec)
        if self.s2_layout == "native" and self.release == "v1_1":
            raise ValueError(f"ssl4eo_s12/{self.name}: s2_layout='native' is not supported for the v1.1 zarr release "
                             "(it stores every band at 10 m; downsampling to 20 / 60 m would be lossy); use "
                             "s2_layout='grid'")
        if self.s2_layout == "native":
            band_groups.check_divisible(self.tile_size, self.tile_size, get_sensor(self.s2_sensor), "s2")


def _configs() -> list[Ssl4eoS12Config]:
    out = []
    for release, prefix, suffix, s2_suffix, s1_sensor, what in (
            ("v1", "", "", "", "s1_grd", "GeoTIFF release"),
            ("v1_uint8", "", "_uint8", "_uint8", "s1_grd_uint8", "8-bit compressed release (uint8)"),
            ("v1_1", "v1_1_", "", "_v11", "s1_grd_v11", "v1.1 zarr.zip release")):
        for level, bands in (("l1c", "13"), ("l2a", "12")):
            for with_s1 in (True, False):
                name = f"{prefix}{level}{suffix}{'' if with_s1 else '_s2only'}"
                out.append(Ssl4eoS12Config(
                    name=name, release=release, s2_sensor=f"s2_{level}{s2_suffix}", s1_sensor=s1_sensor,
                    with_s1=with_s1,
                    description=f"{what}: S2 {level.upper()} ({bands} bands){' + S1 GRD' if with_s1 else ' only'}"))
    return out


class Ssl4eoS12(ManualDirBuilder):
    """SSL4EO-S12 -> ArrayRecord, one record per location with `num_seasons` timestamps."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "GeoTIFF release; 4 seasons; L1C or L2A; optional S1 (dB).",
        "1.1.0": "Locations that cannot be read as configured are skipped and listed (metadata.json); bands of any "
                 "stored size resampled to the 10 m grid; nodata_pixels fields; 8-bit and v1.1 (zarr) releases.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "l1c"
    SKIP_ERRORS = (BadRecordError,)
    SAMPLE_NOUN = "locations"

    def __init__(self, *, num_seasons: int | None = None, tile_size: int | None = None, resample: str | None = None,
                 s2_layout: str | None = None, codec: str | None = None,
                 config: str | Ssl4eoS12Config | None = None, **kwargs):
        """Args:
          num_seasons, tile_size, resample, s2_layout, codec: override the
            config's fields (the result is a config named e.g.
            `l1c_seasons2`, `l1c_seasons2_native_blosc2`).
          config: a config or the name of one (default `l1c`).
          **kwargs: ManualDirBuilder / DatasetBuilder arguments.
        """
        overrides = {k: v for k, v in dict(num_seasons=num_seasons, tile_size=tile_size, resample=resample,
                                           s2_layout=s2_layout, codec=codec).items() if v is not None}
        resolved = config if isinstance(config, Ssl4eoS12Config) else None
        if overrides:
            config = resolved = _derived_config(self._base_config(config), overrides)
            if any(config is known for known in self.BUILDER_CONFIGS):
                config = config.name  # TFDS refuses a custom config named like a registered one
        if resolved is not None:  # registered configs are grid / none
            resolved.check_storage()
        super().__init__(config=config, **kwargs)

    @classmethod
    def _base_config(cls, config: str | Ssl4eoS12Config | None) -> Ssl4eoS12Config:
        if isinstance(config, Ssl4eoS12Config):
            return config
        name = config or cls.DEFAULT_CONFIG_NAME
        for known in cls.BUILDER_CONFIGS:
            if known.name == name:
                return known
        known = ", ".join(c.name for c in cls.BUILDER_CONFIGS)
        raise ValueError(f"ssl4eo_s12 has no config {name!r}; configs: {known}")

    @property
    def sensors(self) -> dict:
        """modality -> SensorSpec of the records this config writes."""
        cfg = self.builder_config
        out = {"s2": get_sensor(cfg.s2_sensor)}
        if cfg.with_s1:
            out["s1"] = get_sensor(cfg.s1_sensor)
        return out

    def _features(self) -> tfds.features.FeaturesDict:
        cfg = self.builder_config
        s1_spec = get_sensor(cfg.s1_sensor)
        # blosc2 builds store S1 as the spec's uint16 codes (float32 dB noise compresses to ~76%, codes to ~43%);
        # the 8-bit release has no other encoding than its uint8.
        s1_storage = S1_STORAGE_DTYPE if S1_STORAGE_DTYPE in s1_spec.storage_dtypes else s1_spec.dtype
        base = record_features(num_seasons=cfg.num_seasons, tile_size=cfg.tile_size,
                               s2_sensor=get_sensor(cfg.s2_sensor), with_s1=cfg.with_s1, s1_sensor=s1_spec,
                               s1_storage=s1_storage, s2_layout=cfg.s2_layout, codec=cfg.codec)
        features = {key: base[key] for key in base.keys()}
        seasons, size = cfg.num_seasons, cfg.tile_size
        if cfg.with_s1 and cfg.codec == "none":  # as before the codec option: float32 dB (uint8: 8-bit release)
            s1 = get_sensor(cfg.s1_sensor)
            features["s1"] = tfds.features.Tensor(shape=(seasons, size, size, s1.num_bands), dtype=np.dtype(s1.dtype),
                                                  encoding=tfds.features.Encoding.BYTES,
                                                  doc=f"{s1.name} {s1.units}, bands {','.join(s1.bands)}")
        if cfg.release != "v1_uint8":
            features["nodata_pixels"] = tfds.features.Tensor(
                shape=(seasons,), dtype=np.int32, doc="per season: 10 m pixels with a 0 in any S2 band (nodata)")
            if cfg.with_s1:
                features["s1_nodata_pixels"] = tfds.features.Tensor(
                    shape=(seasons,), dtype=np.int32, doc="per season: pixels with VV or VH exactly 0 (nodata)")
        if cfg.release == "v1_1":
            features["cloud_mask"] = tfds.features.Tensor(shape=(seasons, size, size), dtype=np.uint8,
                                                          encoding=tfds.features.Encoding.BYTES,
                                                          doc="the release's cloud_mask per season, as stored")
        return tfds.features.FeaturesDict(features)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg.release not in RELEASES:
            raise ValueError(f"ssl4eo_s12 config {cfg.name!r}: release {cfg.release!r}, expected one of {RELEASES}")
        return tfds.core.DatasetInfo(
            builder=self,
            disable_shuffling=True,  # index order on every path (local, TFDS, Beam): readers shuffle
            description="SSL4EO-S12: 251k locations x 4 seasons of Sentinel-1 GRD + Sentinel-2 L1C/L2A.",
            features=self._features(),
            homepage=_HOMEPAGES[cfg.release],
            citation="Wang et al., SSL4EO-S12, IEEE GRSM 2023." + (
                " Blumenstiel et al., SSL4EOS12 v1.1, arXiv:2503.00168, 2025." if cfg.release == "v1_1" else ""),
            metadata=tfds.core.MetadataDict(
                sensors={m: s.name for m, s in self.sensors.items()}, resample=cfg.resample, release=cfg.release,
                num_seasons=cfg.num_seasons, s1_units=get_sensor(cfg.s1_sensor).units,
                s2_layout=cfg.s2_layout, codec=cfg.codec),
        )

    def split_refs(self, manual_dir: str) -> dict[str, list]:
        cfg = self.builder_config
        level = get_sensor(cfg.s2_sensor).level
        if cfg.release == "v1_1":
            s2_dirname = zarr_layout.S2_DIRS[level]
            root = zarr_layout.find_root(manual_dir, s2_dirname)
            refs, listing = zarr_layout.list_samples(root, s2_dirname, cfg.with_s1)
            self.split_method = "release folders: " + ", ".join(
                f"{split} = {zarr_layout.SPLIT_DIRS[split]}/{s2_dirname} ({source})"
                for split, source in listing["shard_lists"].items())
            self.info.metadata["missing_shards"] = listing["missing_shards"]
            self.info.metadata["unreadable_shards"] = listing["unreadable_shards"]
            return refs
        s2_dirname = layout.S2_DIRS[level]
        root = layout.find_root(manual_dir, s2_dirname)
        self.split_method = f"all locations of {s2_dirname}/ in one train split"
        return {"train": layout.list_locations(root, s2_dirname, cfg.with_s1)}

    @property
    def load_fn(self):
        cfg = self.builder_config
        loader = zarr_layout.load_sample if cfg.release == "v1_1" else layout.load_location
        return functools.partial(loader, config=cfg.load_config())

    def empty_split_hint(self, kinds: collections.Counter) -> str:
        found = [int(m.group(1)) for kind in kinds for m in [re.fullmatch(r"(?:s1_)?timestamps:(\d+)", kind)] if m]
        if found and len(found) == len(kinds) and max(found) > 0:
            most = max(found)
            return f"pass --builder-arg num_seasons={most} to keep locations with {most} timestamps"
        if "s1_missing" in kinds and len(kinds) == 1:
            return "no location has S1: use an s2-only config (e.g. --builder-arg config=l1c_s2only)"
        return ""


def _derived_config(base: Ssl4eoS12Config, overrides: dict) -> Ssl4eoS12Config:
    """`base` with `overrides` applied, named after them (`l1c_seasons2_t24_nearest`)."""
    if "resample" in overrides and overrides["resample"] not in ("bilinear", "nearest"):
        raise ValueError(f"resample must be 'bilinear' or 'nearest', got {overrides['resample']!r}")
    check_storage(overrides.get("s2_layout", base.s2_layout), overrides.get("codec", base.codec))
    for key in ("num_seasons", "tile_size"):
        if key in overrides and (not isinstance(overrides[key], int) or overrides[key] < 1):
            raise ValueError(f"{key} must be a positive integer, got {overrides[key]!r}")
    changed = {k: v for k, v in overrides.items() if getattr(base, k) != v}
    if not changed:
        return base
    suffix = "".join({"num_seasons": f"_seasons{changed.get('num_seasons')}",
                      "tile_size": f"_t{changed.get('tile_size')}",
                      "resample": f"_{changed.get('resample')}", "s2_layout": f"_{changed.get('s2_layout')}",
                      "codec": f"_{changed.get('codec')}"}[k] for k in OVERRIDABLE if k in changed)
    return dataclasses.replace(base, name=base.name + suffix, **changed,
                               description=f"{base.description}; " + ", ".join(f"{k}={v}" for k, v in changed.items()))
