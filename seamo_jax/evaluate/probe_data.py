"""Labelled evaluation arrays for a probe: registry -> Grain eval arrays, sensor checks, resplits.

The probe reads labelled sets (EuroSAT-MS, BigEarthNet, the synthetic
seasons) through `data_pipelines.registry` and turns them into deterministic
numpy arrays with `seamo_jax.data.pipeline.make_eval_arrays` (centre crop or
full tile, no flips, no masks), normalised with the sensor specs of the
*evaluation data*, which must match the checkpoint's: a model trained on
13-band L1C is never silently fed 12-band L2A (`sensors.check_compatible`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import ml_collections
import numpy as np

from seamo_jax import sensors
from seamo_jax.data.pipeline import make_eval_arrays
from seamo_jax.evaluate import splits


@dataclasses.dataclass
class ProbeData:
    """Train / test arrays (make_eval_arrays dicts) and what the labels mean.

    Attributes:
      train, test: dicts with views[m] [N, S, h, w, C_m], raw_views[m], offsets
        [N, S, 2], and label [N] (single-label) or labels [N, K] (multi-label).
      task: "single_label" or "multi_label".
      num_classes: K.
      sensor_specs: modality -> SensorSpec of the evaluation data.
      description: builder / splits / sizes, for the report.
    """

    train: dict
    test: dict
    task: str
    num_classes: int
    sensor_specs: dict[str, sensors.SensorSpec]
    description: dict

    def targets(self, split: str) -> np.ndarray:
        arrays = self.train if split == "train" else self.test
        return arrays["label"] if self.task == "single_label" else arrays["labels"]


def data_dir(config: Any) -> str:
    """config.probe.data_dir, else config.data.data_dir, else $SEAMO_DATA_DIR, else ~/tensorflow_datasets."""
    for candidate in (config.probe.data_dir, config.data.data_dir,
                      os.environ.get("SEAMO_DATA_DIR", "")):
        if candidate:
            return str(candidate)
    return os.path.expanduser("~/tensorflow_datasets")


def eval_config(config: Any, *, modalities: tuple[str, ...], seasons: int, sensor_names: Mapping[str, str],
                crop_size: int, patch_size: int) -> ml_collections.ConfigDict:
    """The base config with the data fields `make_eval_arrays` reads set for the evaluation arrays."""
    from seamo_jax.configs import base_config

    cfg = base_config()
    cfg.data.modalities = tuple(modalities)
    cfg.data.seasons = int(seasons)
    cfg.data.sensors = ml_collections.ConfigDict(dict(sensor_names))
    cfg.data.crop_size = int(crop_size)
    cfg.data.season_subsample = False
    cfg.data.flip = False
    cfg.data.skip_bad_records = bool(config.probe.skip_bad_records)
    cfg.mask.ratio = 0.0
    cfg.model.patch_size = int(patch_size)
    return cfg


def _registry_sources(config: Any, builder: str, splits_needed: tuple[str, ...]) -> tuple[dict, dict]:
    """split -> random-access source, and the builder's info, through data_pipelines.registry."""
    from data_pipelines import registry  # data_pipelines is optional at import time of seamo_jax

    directory = data_dir(config)
    kwargs = dict(config.probe.builder_kwargs)
    if config.probe.build_dataset:  # `seamo demo` (one process); `seamo probe` opens what `seamo data build` made
        registry.prepare(builder, directory, manual_dir=config.probe.manual_dir or None, **kwargs)
    sources = {split: registry.load_source(builder, split, directory, **kwargs) for split in splits_needed}
    return sources, registry.builder_info(builder, directory, **kwargs)


def _info_get(info: Any, key: str, default: Any = None) -> Any:
    if isinstance(info, Mapping):
        return info.get(key, default)
    return getattr(info, key, default)


def load_for_input_sets(config: Any, input_sets: list[dict], source: Any, *,
                        sources: Mapping[str, Any] | None = None, num_classes: int | None = None) -> ProbeData:
    """`load_probe_data` for what the input sets need (modalities, seasons), at the encoder's patch
    size and (config.probe.crop_size or) training view size; `source` is an `encoders.EncoderSource`."""
    modalities = tuple(dict.fromkeys(m for s in input_sets for m in s["modalities"]))
    return load_probe_data(
        config, modalities=modalities, seasons=max(max(s["seasons"]) for s in input_sets) + 1,
        patch_size=int(source.model.patch_size), crop_size=int(config.probe.crop_size or source.image_size),
        trained_specs=source.sensor_specs, sources=sources, num_classes=num_classes)


def load_probe_data(config: Any, *, modalities: tuple[str, ...], seasons: int, patch_size: int, crop_size: int,
                    trained_specs: Mapping[str, sensors.SensorSpec], sources: Mapping[str, Any] | None = None,
                    num_classes: int | None = None) -> ProbeData:
    """Loads train/test arrays of `config.probe.builder` and checks sensors against training.

    Args:
      modalities, seasons: what to load (the union over the probe's input sets).
      patch_size, crop_size: the encoder's patch size; the crop for
        config.probe.crop == "center".
      trained_specs: modality -> SensorSpec of the checkpoint.
      sources: split -> random-access source, bypassing the registry (tests);
        then sensors come from config.probe.sensors or config.data.sensors.
      num_classes: required with `sources`, else read from the builder info.
    Raises:
      SensorMismatchError: evaluation data of a modality differs from training.
    """
    train_split, test_split = config.probe.train_split, config.probe.test_split
    builder = config.probe.builder or config.data.builder
    if sources is None:
        sources, info = _registry_sources(config, builder, (train_split, test_split))
        sensor_map = {m: (s if isinstance(s, str) else s.name) for m, s in dict(_info_get(info, "sensors")).items()}
        num_classes = int(_info_get(info, "num_classes"))
    else:
        sensor_map = dict(config.probe.sensors or config.data.sensors)
        if num_classes is None:
            raise ValueError("load_probe_data(sources=...) needs num_classes")
    missing = [m for m in modalities if m not in sensor_map]
    if missing:
        raise ValueError(f"probe asks for modalities {missing} that builder {builder!r} does not provide "
                         f"(it has {sorted(sensor_map)})")
    eval_specs = {m: sensors.get_sensor(sensor_map[m]) for m in modalities}
    sensors.check_compatible(trained_specs, eval_specs)
    cfg = eval_config(config, modalities=modalities, seasons=seasons, sensor_names={m: sensor_map[m] for m in modalities},
                      crop_size=crop_size, patch_size=patch_size)
    crop = config.probe.crop
    limits = {train_split: int(config.probe.num_train) or None, test_split: int(config.probe.num_test) or None}
    arrays = {split: make_eval_arrays(cfg, sources[split], num_examples=limits[split], crop=crop)
              for split in (train_split, test_split)}
    task = "multi_label" if "labels" in arrays[train_split] and "label" not in arrays[train_split] else "single_label"
    if task == "single_label" and "label" not in arrays[train_split]:
        raise ValueError(f"builder {builder!r} split {train_split!r} has no labels; cannot probe")
    description = {"builder": builder, "train_split": train_split, "test_split": test_split, "crop": crop,
                   "num_train": int(len(arrays[train_split]["offsets"])),
                   "num_test": int(len(arrays[test_split]["offsets"])),
                   "sensors": {m: s.name for m, s in eval_specs.items()}}
    return ProbeData(train=arrays[train_split], test=arrays[test_split], task=task, num_classes=int(num_classes),
                     sensor_specs=eval_specs, description=description)


def take(arrays: Mapping[str, Any], indices: np.ndarray) -> dict:
    """Rows `indices` of every per-sample array (views, raw_views, offsets, labels)."""
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        if isinstance(value, Mapping):
            out[key] = {m: v[indices] for m, v in value.items()}
        elif isinstance(value, np.ndarray) and value.ndim >= 1:
            out[key] = value[indices]
    return out


def concat(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict:
    """Row-wise concatenation of two eval-array dicts with the same keys."""
    out: dict[str, Any] = {}
    for key, value in a.items():
        if isinstance(value, Mapping):
            out[key] = {m: np.concatenate([v, b[key][m]], 0) for m, v in value.items()}
        elif isinstance(value, np.ndarray) and value.ndim >= 1:
            out[key] = np.concatenate([value, b[key]], 0)
    return out


def resplit_indices(split_dir: str, labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices of pooled data for one seed, saved like label subsets.

    Small labelled sets (the 200-tile EuroSAT sample) give noisy numbers on
    one fixed split; repeating the probe over seeded stratified splits and
    reporting the spread is the honest alternative.
    """
    return splits.load_or_create_holdout(split_dir, labels, test_fraction, seed)


def split_indices(data: ProbeData, targets: np.ndarray, seed: int, split_dir: Any,
                  resplit_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices into the pooled [train; test] arrays for one seed.

    The builder's splits, or with `resplit_fraction` > 0 a fresh stratified split of the pooled
    labelled data per seed (saved under `split_dir`); the probe and `seamo finetune` split alike.
    """
    num_train = len(data.train["offsets"])
    if resplit_fraction > 0:
        return resplit_indices(str(split_dir), targets, resplit_fraction, seed)
    return np.arange(num_train), num_train + np.arange(len(data.test["offsets"]))
