"""Dataset names -> TFDS builders: prepare, open and describe a dataset by name.

The rest of the framework (training loop, probes, CLI) knows datasets only by
name and talks to them through three functions:

    prepare("synthetic_seasons", data_dir, num_train=64, num_test=32)   # builds once
    source = load_source("synthetic_seasons", "train", data_dir, num_train=64, num_test=32)
    len(source), source[0]   # -> {"s2": uint16 [S,H,W,C], "s1": ..., "label": ...}
    builder_info("synthetic_seasons", data_dir, num_train=64, num_test=32)

`builder_kwargs` are the builder's constructor arguments (for
synthetic_seasons: tile_size, num_train, num_test, seed, labels; for the real sets:
config, ...). They must be the same in all three calls: they select the
builder config, i.e. the directory the dataset lives in.

A builder module is imported only when its name is used, so a dataset with
heavy or missing dependencies does not slow down or break the others.
"""

from __future__ import annotations

import importlib
import os
import shlex
from typing import Any

import tensorflow_datasets as tfds

from seamo_jax.sensors import SENSORS

# name -> "module:Class". Add a dataset by adding a line here.
BUILDERS: dict[str, str] = {
    "synthetic_seasons": "data_pipelines.synthetic_seasons.builder:SyntheticSeasons",
    "eurosat_ms": "data_pipelines.eurosat_ms.builder:EurosatMs",
    "ssl4eo_s12": "data_pipelines.ssl4eo_s12.builder:Ssl4eoS12",
    "bigearthnet": "data_pipelines.bigearthnet.builder:Bigearthnet",
}


class DatasetNotPreparedError(FileNotFoundError):
    """A dataset was opened before `prepare` built it in that data_dir."""


def builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
    """Imports and returns the builder class registered under `name`."""
    try:
        target = BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(BUILDERS)}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_builder(name: str, data_dir: str | os.PathLike, *, num_workers: int | None = None,
                **builder_kwargs: Any) -> tfds.core.DatasetBuilder:
    """Instantiates the builder of `name` rooted at `data_dir` (nothing is built).

    Args:
      num_workers: writer processes, forwarded only when given (not every
        builder takes it; it does not change the data).
      **builder_kwargs: the builder's constructor arguments.
    """
    if num_workers is not None:
        builder_kwargs["num_workers"] = num_workers
    return builder_class(name)(data_dir=os.fspath(data_dir), **builder_kwargs)


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    # TFDS writes dataset_info.json last, after renaming the complete directory.
    return (builder.data_path / "dataset_info.json").exists()


def prepare(name: str, data_dir: str | os.PathLike, *, manual_dir: str | None = None,
            num_workers: int | None = None, beam_pipeline_options: str | None = None,
            **builder_kwargs: Any) -> None:
    """Builds dataset `name` in `data_dir` unless it is already there.

    Args:
      name: registered dataset name (see BUILDERS).
      data_dir: TFDS data_dir; the dataset lands in <data_dir>/<name>/<config>/<version>.
      manual_dir: where downloaded source files are (real datasets).
      num_workers: writer processes of the local path (None = all cores).
      beam_pipeline_options: build through Apache Beam instead of the local
        writer, with these options ("runner=DirectRunner,direct_num_workers=2",
        as `tfds build --beam_pipeline_options`; see data_pipelines/beam_build.py).
        The records are the same either way.
      **builder_kwargs: the builder's constructor arguments.
    """
    builder = get_builder(name, data_dir, num_workers=num_workers, **builder_kwargs)
    if is_prepared(builder):
        return
    options: dict[str, Any] = {"manual_dir": manual_dir} if manual_dir else {}
    if beam_pipeline_options is not None:
        from data_pipelines import beam_build  # local: apache_beam is the optional `beam` extra

        options["beam_options"] = beam_build.pipeline_options(beam_pipeline_options)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**options) if options else None)


def needs_manual_dir(name: str) -> bool:
    """Real datasets are read from a downloaded release; only the synthetic one is generated."""
    return BUILDERS.get(name, "").split(":")[0] != "data_pipelines.synthetic_seasons.builder"


def build_command(name: str, data_dir: str | os.PathLike, **builder_kwargs: Any) -> str:
    """The `seamo data build` command line that prepares exactly this dataset (shell-quoted)."""
    words = ["seamo", "data", "build", "--builder", name, "--data-dir", os.fspath(data_dir)]
    for key, value in sorted(builder_kwargs.items()):
        words += ["--builder-arg", f"{key}={value}"]
    if needs_manual_dir(name):
        words += ["--manual-dir", "<folder of the downloaded release>"]
    return shlex.join(words)


def _prepared_builder(name: str, data_dir: str | os.PathLike, builder_kwargs: dict) -> tfds.core.DatasetBuilder:
    builder = get_builder(name, data_dir, **builder_kwargs)
    if not is_prepared(builder):
        raise DatasetNotPreparedError(
            f"dataset {name!r} ({builder.builder_config.name if builder.builder_config else 'default'}) is not "
            f"prepared in {builder.data_path}; build it once, on one machine, before training: "
            f"{build_command(name, data_dir, **builder_kwargs)}")
    return builder


def load_source(name: str, split: str, data_dir: str | os.PathLike, *, lazy_decode: bool = False,
                record_reader: str = "pread", **builder_kwargs: Any):
    """Random-access record source of one split (what Grain reads).

    Args:
      lazy_decode: blosc2-stored S2 arrays come back undecoded
        (`seamo_jax.data.encoded.EncodedArray`), for the device-views training
        pipeline, which decodes them into the batch (`encoded.stack_samples`).
      record_reader: "pread": local shards read by `record_files.RecordFiles`
        (one preadv per record into a reused buffer; array_record's hashes
        not checked); "array_record": array_record's reader. Bucket paths
        always use array_record's (`config.data.record_reader`).

    Returns:
      a random-access source: `len(source)`, `source[i]` -> record dict of
      numpy arrays (docs/contracts.md section 1), `source.__getitems__([i, j])`: TFDS's
      ArrayRecord data source read as raw bytes and parsed by
      `example_reader.ParsedSource` (the same records as TFDS's parser gives),
      or TFDS's own for features that parser does not cover.
    Raises:
      DatasetNotPreparedError: `prepare` was not run for these arguments.
    """
    builder = _prepared_builder(name, data_dir, builder_kwargs)
    if split not in builder.info.splits:
        raise KeyError(f"dataset {name!r} has no split {split!r}; splits: {sorted(builder.info.splits)}")
    return open_split(tfds.builder_from_directory(builder.data_dir), split, lazy_decode=lazy_decode,
                      record_reader=record_reader)


RECORD_READERS = ("pread", "array_record")


def open_split(stored: tfds.core.DatasetBuilder, split: str, *, lazy_decode: bool = False,
               record_reader: str = "pread"):
    """`load_source` of a builder read from its directory (`tfds.builder_from_directory`).

    Decodes with the features stored beside the records (features.json), not
    the builder code's: records of older builds keep their storage dtypes
    (float32 S1 before 2026-12-01; docs/contracts.md section 1).
    """
    if record_reader not in RECORD_READERS:
        raise ValueError(f"record_reader {record_reader!r}: use one of {RECORD_READERS}")
    decoders = None
    if lazy_decode:
        from data_pipelines import features as features_lib  # pylint: disable=g-import-not-at-top

        decoders = features_lib.lazy_decoders(stored.info.features)
    from data_pipelines import example_reader  # pylint: disable=g-import-not-at-top

    if example_reader.supports(stored.info.features):  # same records, parsed without copying the payloads
        raw = stored.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        records = None
        if record_reader == "pread":
            from data_pipelines import record_files  # pylint: disable=g-import-not-at-top

            records = record_files.open_records(stored.info.splits[split].file_instructions)
        return example_reader.ParsedSource(raw, stored.info.features, decoders, records)
    return stored.as_data_source(split=split, decoders=decoders)


def _sensor_names(info: tfds.core.DatasetInfo, modalities: dict[str, int]) -> dict[str, str]:
    """modality -> seamo_jax.sensors name, from the builder's metadata or the band counts."""
    if info.metadata and "sensors" in info.metadata:
        return dict(info.metadata["sensors"])
    names = {}
    for modality, num_bands in modalities.items():
        matches = [spec.name for spec in SENSORS.values() if spec.modality == modality and spec.num_bands == num_bands]
        if len(matches) != 1:
            raise ValueError(f"cannot tell the {modality} sensor of {info.name} from {num_bands} bands: {matches}")
        names[modality] = matches[0]
    return names


def builder_info(name: str, data_dir: str | os.PathLike, **builder_kwargs: Any) -> dict[str, Any]:
    """What dataset `name` holds (works before `prepare`; split sizes need it).

    Returns:
      dict: name, config, version, num_classes, class_names, multi_label,
      sensors (modality -> sensor name, e.g. {"s2": "s2_l1c", "s1": "s1_grd"}),
      seasons, tile_size ((H, W) or None), s2_layout ("grid" / "native": `s2` or
      s2_10m / s2_20m / s2_60m, seamo_jax.data.band_groups), codec ("none" /
      "blosc2"), splits (split -> num examples; {}
      before prepare), prepared (bool), data_path.
    """
    from data_pipelines.features import describe_features  # local: keeps registry import light

    builder = get_builder(name, data_dir, **builder_kwargs)
    prepared = is_prepared(builder)
    info = builder.info
    described = describe_features(info.features)
    return {
        "name": name,
        "config": builder.builder_config.name if builder.builder_config else None,
        "version": str(builder.version),
        "num_classes": len(described["class_names"]),
        "class_names": described["class_names"],
        "multi_label": described["multi_label"],
        "sensors": _sensor_names(info, described["modalities"]),
        "seasons": described["seasons"],
        "tile_size": described["tile_size"],
        "s2_layout": described["s2_layout"],
        "codec": described["codec"],
        "splits": {split: split_info.num_examples for split, split_info in info.splits.items()} if prepared else {},
        "prepared": prepared,
        "data_path": os.fspath(builder.data_path),
    }
