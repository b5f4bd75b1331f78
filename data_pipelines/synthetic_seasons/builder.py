"""TFDS builder of the synthetic multi-season S1 + S2 dataset (no download).

    builder = SyntheticSeasons(data_dir=d, tile_size=48, num_train=1536, num_test=512, seed=0)
    builder.download_and_prepare()
    source = builder.as_data_source(split="train")      # random access, no TensorFlow
    # or: tfds.data_source(f"synthetic_seasons/{builder.builder_config.name}", split="train", data_dir=d)

The generator parameters are the builder config; its name encodes them
("tile48_train1536_test512_seed0"), so datasets with different parameters
live side by side in one data_dir. Records are written in parallel by
`data_pipelines.writer` (`writer="parallel"`, default), by TFDS's own
single-process writer (`writer="tfds"`, kept to compare speeds), or, when
`download_and_prepare` is given Beam options
(`tfds.download.DownloadConfig(beam_options=...)`), through Apache Beam
(`data_pipelines.beam_build`: DirectRunner here, Dataflow / Spark / Flink
for large builds). All three write the same records in the same order
(index order, `disable_shuffling`) in ArrayRecord shards.

Two label sets (`labels=`), with the same record schema:

  * "scene" (default): the label is the spatial layout of two random covers
    (`generator.py`, `layouts.py`); band statistics say nothing about it.
    Config names carry no suffix, as before this option existed.
  * "land_cover": the label is the tile's dominant land cover among crop types
    with different calendars, flooded / dry vegetation, urban / bare soil and
    water (`land_cover.py`, `land_cover_spectra.py`); telling them apart needs
    the seasons, SAR, or both. Config names end in "_land_cover"
    ("tile48_train1536_test512_seed0_land_cover"), so the two sets never share a directory.

Storage (`data_pipelines.features`): `s2_layout="native"` generates the tile
on the 10 m grid as before, then stores the 20 m / 60 m bands as block means
(area average over 2x2 / 6x6 blocks, rounded: what a coarser detector sees)
in s2_10m / s2_20m / s2_60m (tile_size divisible by 6); `codec="blosc2"`
stores every image array as a blosc2 frame. Either one adds a suffix to the
config name ("..._native", "..._blosc2"); the defaults write today's records.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Iterator

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import writer as writer_lib
from data_pipelines.features import check_storage, record_features
from data_pipelines.synthetic_seasons import generator, land_cover
from seamo_jax.data import band_groups
from seamo_jax.sensors import S2_L1C

# labels -> (class names, tile function (seed, split, index, tile_size) -> record dict).
LABEL_SETS: dict[str, tuple[tuple[str, ...], Any]] = {
    "scene": (generator.SCENE_CLASSES, generator.generate_tile),
    "land_cover": (land_cover.LAND_COVER_CLASSES, land_cover.generate_land_cover_tile),
}
_CONFIG_NAME = re.compile(r"^tile(\d+)_train(\d+)_test(\d+)_seed(\d+)(?:_(land_cover))?(?:_(native))?(?:_(blosc2))?$")


@dataclasses.dataclass(eq=False)
class SyntheticSeasonsConfig(tfds.core.BuilderConfig):
    """Generator parameters; `name` is derived from them."""

    tile_size: int = 48
    num_train: int = 1536
    num_test: int = 512
    seed: int = 0
    labels: str = "scene"
    s2_layout: str = "grid"
    codec: str = "none"

    @classmethod
    def from_params(cls, tile_size: int = 48, num_train: int = 1536, num_test: int = 512, seed: int = 0,
                    labels: str = "scene", s2_layout: str = "grid", codec: str = "none") -> "SyntheticSeasonsConfig":
        if tile_size < 8 or num_train < 1 or num_test < 1 or seed < 0:
            raise ValueError(f"bad synthetic_seasons parameters: tile_size={tile_size}, num_train={num_train}, "
                             f"num_test={num_test}, seed={seed}")
        if labels not in LABEL_SETS:
            raise ValueError(f"synthetic_seasons labels must be one of {sorted(LABEL_SETS)}, got {labels!r}")
        check_storage(s2_layout, codec)
        if s2_layout == "native":
            band_groups.check_divisible(tile_size, tile_size, S2_L1C, "s2")
        # Defaults add nothing, so the names (directories) of existing datasets stay.
        suffix = ("" if labels == "scene" else f"_{labels}") + ("" if s2_layout == "grid" else f"_{s2_layout}") \
            + ("" if codec == "none" else f"_{codec}")
        return cls(name=f"tile{tile_size}_train{num_train}_test{num_test}_seed{seed}{suffix}",
                   description=f"{tile_size}px tiles, {num_train} train / {num_test} test, seed {seed}, "
                               f"{labels} labels" + (f", s2_layout {s2_layout}" if s2_layout != "grid" else "")
                               + (f", codec {codec}" if codec != "none" else ""),
                   tile_size=tile_size, num_train=num_train, num_test=num_test, seed=seed, labels=labels,
                   s2_layout=s2_layout, codec=codec)

    @classmethod
    def from_name(cls, name: str) -> "SyntheticSeasonsConfig":
        match = _CONFIG_NAME.match(name)
        if match is None:
            raise ValueError(f"synthetic_seasons config name {name!r} is not of the form "
                             "tile<T>_train<N>_test<M>_seed<S>[_land_cover][_native][_blosc2]")
        tile_size, num_train, num_test, seed = (int(group) for group in match.groups()[:4])
        return cls.from_params(tile_size, num_train, num_test, seed, labels=match.group(5) or "scene",
                               s2_layout=match.group(6) or "grid", codec=match.group(7) or "none")


class SyntheticSeasons(tfds.core.GeneratorBasedBuilder):
    """Synthetic 4-season Sentinel-1 GRD + Sentinel-2 L1C tiles with scene-layout or land-cover labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [SyntheticSeasonsConfig.from_params()]
    # TFDS derives this from the package via `importlib_resources`, which it
    # only declares as a dependency on Python < 3.9; give it directly.
    code_path = epath.Path(__file__)

    def __init__(self, *, tile_size: int | None = None, num_train: int | None = None, num_test: int | None = None,
                 seed: int | None = None, labels: str | None = None, s2_layout: str | None = None,
                 codec: str | None = None, num_workers: int | None = None,
                 writer: str = "parallel", config: str | SyntheticSeasonsConfig | None = None, **kwargs: Any):
        """Args:
          tile_size, num_train, num_test, seed: generator parameters (defaults:
            48, 1536, 512, 0); or give `config` (a config or its name) instead.
          labels: "scene" (default) or "land_cover" (see the module docstring).
          s2_layout: "grid" (default) or "native"; codec: "none" (default) or
            "blosc2" (see the module docstring).
          num_workers: writer processes (None = all cores).
          writer: "parallel" (data_pipelines.writer) or "tfds" (TFDS's writer).
          **kwargs: DatasetBuilder arguments (data_dir, version, file_format).
        """
        params = {key: value for key, value in dict(tile_size=tile_size, num_train=num_train, num_test=num_test,
                                                     seed=seed, labels=labels, s2_layout=s2_layout,
                                                     codec=codec).items() if value is not None}
        if isinstance(config, str):
            config = SyntheticSeasonsConfig.from_name(config)
        if config is not None and params:
            raise ValueError("give either config or generator parameters, not both")
        if config is None:
            config = SyntheticSeasonsConfig.from_params(**params)
        if any(config.name == known.name for known in self.BUILDER_CONFIGS):
            # TFDS refuses a custom config named like a registered one; pass the name instead.
            config = config.name
        if writer not in ("parallel", "tfds"):
            raise ValueError(f"writer must be 'parallel' or 'tfds', got {writer!r}")
        self._num_workers = num_workers
        self._writer = writer
        self._beam = False
        kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config: SyntheticSeasonsConfig = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__.split("\n")[0],
            features=record_features(num_seasons=generator.NUM_SEASONS, tile_size=config.tile_size,
                                     class_names=LABEL_SETS[config.labels][0], with_s1=True,
                                     s2_layout=config.s2_layout, codec=config.codec),
            disable_shuffling=True,  # index order on every path (local, TFDS, Beam): readers shuffle
            metadata=tfds.core.MetadataDict(
                sensors={"s2": "s2_l1c", "s1": "s1_grd"},
                generator=dict(tile_size=config.tile_size, num_train=config.num_train,
                               num_test=config.num_test, seed=config.seed, labels=config.labels),
                s2_layout=config.s2_layout, codec=config.codec),
        )

    def _split_sizes(self) -> dict[str, int]:
        config: SyntheticSeasonsConfig = self.builder_config
        return {"train": config.num_train, "test": config.num_test}

    def _make_example_fn(self, split: str) -> functools.partial:
        config: SyntheticSeasonsConfig = self.builder_config
        # A partial of a module-level function pickles to worker processes.
        return functools.partial(_example, config.seed, split, config.tile_size, config.labels,
                                 s2_layout=config.s2_layout)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        if self._beam:  # TFDS's Beam path: one PTransform per split
            from data_pipelines import beam_build

            return {split: beam_build.GenerateExamples(self._make_example_fn(split), count, split)
                    for split, count in self._split_sizes().items()}
        return {split: self._generate_examples(split, count) for split, count in self._split_sizes().items()}

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        make_example = self._make_example_fn(split)
        for index in range(num_examples):
            yield index, make_example(index)

    def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                              download_config: tfds.download.DownloadConfig) -> None:
        # TFDS's own generation: its serial writer, or Beam when given beam options.
        self._beam = writer_lib.uses_beam(download_config)
        if self._writer == "tfds" or self._beam:
            super()._download_and_prepare(dl_manager, download_config)
            if self._beam:
                from data_pipelines import beam_build

                beam_build.check_written(self.name, self._split_sizes(), self.info.splits)
            return None
        # Local path: the parallel writer (spawned processes, direct tf.Example
        # bytes), 3-4x TFDS's serial writer here (docs/performance.md, Conversion).
        plans = [writer_lib.SplitPlan(self._make_example_fn(split), count, self._get_filename_template(split))
                 for split, count in self._split_sizes().items()]
        # Speckle and sensor noise do not compress (ratio ~0.85): skipping the
        # codec saves CPU on the write and on every read.
        split_infos = writer_lib.write_splits(self.info.features, plans, num_workers=self._num_workers,
                                              compression="uncompressed")
        self.info.set_splits(tfds.core.SplitDict(split_infos))

    def _example_writer(self) -> writer_lib.ShardFileWriter:
        # TFDS's hook for its writers (serial and Beam): uncompressed shards as
        # the parallel writer writes them, bucket URLs copied up.
        return writer_lib.ShardFileWriter(compression="uncompressed")


def _example(seed: int, split: str, tile_size: int, labels: str, index: int, *, s2_layout: str = "grid") -> dict:
    record = LABEL_SETS[labels][1](seed, split, index, tile_size)
    if s2_layout == "native":  # generated on the 10 m grid, coarse bands stored as block means
        record.update(band_groups.block_means(record.pop("s2"), S2_L1C, "s2"))
    return record
