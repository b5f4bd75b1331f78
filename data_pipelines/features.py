"""The TFDS feature dict of a record (docs/contracts.md section 1), for every builder.

All builders (synthetic_seasons, eurosat_ms, ssl4eo_s12, bigearthnet) call
`record_features` so that their records have the same keys, dtypes and
shapes, and one Grain pipeline reads them all:

  s2          uint16  [S, H, W, C]   C from the S2 sensor spec (13 L1C / 12 L2A)
  s1          float32 [S, H, W, 2]   VV, VH in dB (only when `with_s1`)
  timestamps  int64   [S]            unix seconds
  location_id Text    []
  latlon      float32 [2]            degrees
  label       ClassLabel []          single-label sets
  labels      int64 [K] multi-hot    multi-label sets

Image tensors are stored as raw bytes (`Encoding.BYTES`) rather than the
tf.Example default of one int64/float per value: serialising a uint16 array as
int64 varints costs ~4x the space and most of the write/read time, and bytes
decode with numpy alone (no TensorFlow). Readers see the same uint16 / float32
arrays either way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from seamo_jax.sensors import S1_GRD, S2_L1C, SensorSpec

IMAGE_ENCODING = tfds.features.Encoding.BYTES


def _image_shape(num_seasons: int, tile_size: int | tuple[int, int] | None, num_bands: int
                 ) -> tuple[int | None, ...]:
    if tile_size is None:  # variable-size tiles: TFDS stores each record's shape
        return (num_seasons, None, None, num_bands)
    height, width = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    return (num_seasons, height, width, num_bands)


def record_features(
    *,
    num_seasons: int,
    tile_size: int | tuple[int, int] | None,
    s2_sensor: SensorSpec = S2_L1C,
    with_s1: bool = True,
    class_names: Sequence[str] | None = None,
    multi_label: bool = False,
    image_encoding: tfds.features.Encoding | str = IMAGE_ENCODING,
) -> tfds.features.FeaturesDict:
    """TFDS features of one record.

    Args:
      num_seasons: S, acquisitions per location (1 for single-date sets).
      tile_size: H = W in pixels, (H, W), or None for variable-size tiles.
      s2_sensor: Sentinel-2 spec (`S2_L1C` or `S2_L2A`); fixes C and band order.
      with_s1: whether records carry Sentinel-1 (`s1`).
      class_names: label names; None = unlabelled (e.g. SSL4EO-S12).
      multi_label: store `labels` (int64 multi-hot [K]) instead of `label`.
      image_encoding: storage of `s2` / `s1`; keep the default unless a reader
        needs tf.Example int64/float lists.
    Returns:
      tfds.features.FeaturesDict with the keys above.
    """
    if s2_sensor.modality != "s2":
        raise ValueError(f"s2_sensor must be a Sentinel-2 spec, got {s2_sensor.name} ({s2_sensor.modality})")
    if multi_label and not class_names:
        raise ValueError("multi_label=True needs class_names")
    features: dict[str, tfds.features.FeatureConnector] = {
        "s2": tfds.features.Tensor(
            shape=_image_shape(num_seasons, tile_size, s2_sensor.num_bands),
            dtype=np.dtype(s2_sensor.dtype), encoding=image_encoding,
            doc=f"{s2_sensor.name} {s2_sensor.units}, bands {','.join(s2_sensor.bands)}"),
        "timestamps": tfds.features.Tensor(shape=(num_seasons,), dtype=np.int64,
                                           doc="acquisition time per season, unix seconds"),
        "location_id": tfds.features.Text(),
        "latlon": tfds.features.Tensor(shape=(2,), dtype=np.float32, doc="latitude, longitude in degrees"),
    }
    if with_s1:
        features["s1"] = tfds.features.Tensor(
            shape=_image_shape(num_seasons, tile_size, S1_GRD.num_bands),
            dtype=np.dtype(S1_GRD.dtype), encoding=image_encoding,
            doc=f"{S1_GRD.name} {S1_GRD.units}, bands {','.join(S1_GRD.bands)}")
    if class_names and multi_label:
        features["labels"] = tfds.features.Tensor(shape=(len(class_names),), dtype=np.int64,
                                                  doc="multi-hot: " + ",".join(class_names))
    elif class_names:
        features["label"] = tfds.features.ClassLabel(names=list(class_names))
    return tfds.features.FeaturesDict(features)


def describe_features(features: tfds.features.FeaturesDict) -> dict:
    """What a record holds, from its feature dict (what `registry.builder_info` reports).

    Returns:
      dict: seasons, tile_size ((H, W) or None), modalities {"s2": C, "s1": 2},
      class_names (list, [] if unlabelled), multi_label (bool).
    """
    s2_shape = features["s2"].shape
    class_names: list[str] = []
    multi_label = False
    if "label" in features:
        class_names = list(features["label"].names)
    elif "labels" in features:
        multi_label = True
        doc = features["labels"].doc.desc or ""
        class_names = doc.split(": ", 1)[1].split(",") if ": " in doc else []
    modalities = {"s2": s2_shape[-1]}
    if "s1" in features:
        modalities["s1"] = features["s1"].shape[-1]
    return {
        "seasons": s2_shape[0],
        "tile_size": None if s2_shape[1] is None else (s2_shape[1], s2_shape[2]),
        "modalities": modalities,
        "class_names": class_names,
        "multi_label": multi_label,
    }
