"""The TFDS feature dict of a record (docs/contracts.md section 1), for every builder.

All builders (synthetic_seasons, eurosat_ms, ssl4eo_s12, bigearthnet) call
`record_features` so that their records have the same keys, dtypes and
shapes, and one Grain pipeline reads them all:

  s2          uint16  [S, H, W, C]   C from the S2 sensor spec (13 L1C / 12 L2A)
  s1          uint16  [S, H, W, 2]   VV, VH: codes of dB, dB = code * 0.002 - 80 (only when `with_s1`;
                                     the S1 spec's `storage`; older builds: float32 dB)
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

S1 is quantised on write (`s1_storage`, default `sensors.S1_STORAGE_DTYPE`):
builders hand float32 dB as before and `QuantisedTensor` stores the codes the
sensor spec declares (`SensorSpec.storage`: dtype, scale, offset). The stored
feature is a plain `tfds.features.Tensor` of that dtype, so readers need no
custom connector; the array's dtype tells the pipeline which encoding to undo
(`SensorSpec.normaliser` / `dequantise`), and float32 records of older builds
read unchanged. 2.2 MB -> 1.1 MB per 4-season 264-px record, error <= 0.001 dB
(docs/performance.md, "Record storage and decode cost").
"""

from __future__ import annotations

from typing import Sequence

import json

import numpy as np
import tensorflow_datasets as tfds

from seamo_jax.sensors import S1_GRD, S1_STORAGE_DTYPE, S2_L1C, SensorSpec

IMAGE_ENCODING = tfds.features.Encoding.BYTES


class QuantisedTensor(tfds.features.Tensor):
    """A Tensor of a sensor's storage dtype that quantises values given in the sensor's units.

    `encode_example` takes values in `sensor.units` (e.g. float32 dB) and stores
    `sensor.quantise(values, dtype)`; arrays already of the storage dtype pass
    unchanged. On disk (features.json) it is a plain `tfds.features.Tensor`,
    so reading needs neither this class nor this module.
    """

    def __init__(self, *, sensor: SensorSpec, dtype, **kwargs):
        sensor.encoding(dtype)  # KeyError when the sensor declares no such storage
        super().__init__(dtype=np.dtype(dtype), **kwargs)
        self._sensor = sensor
        self._storage = np.dtype(dtype)

    @property
    def _fully_qualified_class_name(self):
        return "tensorflow_datasets.core.features.tensor_feature.Tensor"

    def encode_example(self, example_data):
        values = np.asarray(example_data)
        if values.dtype != self._storage:
            values = self._sensor.quantise(values, self._storage)
        return super().encode_example(values)


def storage_doc(sensor: SensorSpec, dtype) -> str:
    """How `dtype` records of `sensor` decode, for the feature doc."""
    name = np.dtype(dtype).name
    if name == sensor.dtype or np.dtype(dtype).kind == "f":
        return f"stored {name}"
    scale, offset = sensor.encoding(dtype)
    top = np.iinfo(np.dtype(dtype)).max
    sign = "-" if offset < 0 else "+"
    return f"stored {name}: {sensor.units} = code * {scale:g} {sign} {abs(offset):g}, code {top} = non-finite"


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
    s1_sensor: SensorSpec = S1_GRD,
    s1_storage: str | None = S1_STORAGE_DTYPE,
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
      s1_sensor: Sentinel-1 spec (its `storage` lists the allowed encodings).
      s1_storage: dtype `s1` is stored in: one of `s1_sensor.storage_dtypes`
        (default uint16 codes of dB); None = `s1_sensor.dtype` (float32 dB, the
        storage of builds before 2026-12-01).
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
        storage = np.dtype(s1_storage or s1_sensor.dtype)
        if storage.name not in s1_sensor.storage_dtypes:
            raise ValueError(f"s1_storage {storage.name} not declared by sensor {s1_sensor.name} "
                             f"(storage dtypes {s1_sensor.storage_dtypes})")
        kwargs = dict(shape=_image_shape(num_seasons, tile_size, s1_sensor.num_bands), encoding=image_encoding,
                      doc=f"{s1_sensor.name} {s1_sensor.units}, bands {','.join(s1_sensor.bands)}, "
                          f"{storage_doc(s1_sensor, storage)}")
        features["s1"] = (tfds.features.Tensor(dtype=storage, **kwargs) if storage.name == s1_sensor.dtype
                          else QuantisedTensor(sensor=s1_sensor, dtype=storage, **kwargs))
    if class_names and multi_label:
        features["labels"] = tfds.features.Tensor(shape=(len(class_names),), dtype=np.int64,
                                                  doc="multi-hot: " + json.dumps(list(class_names)))
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
        names = doc.split(": ", 1)[1] if ": " in doc else ""
        # A JSON list (names such as "Beaches, dunes, sands" hold commas); older datasets joined with ",".
        class_names = json.loads(names) if names.startswith("[") else [n for n in names.split(",") if n]
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
