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

Two opt-in storage choices (builder args; defaults keep today's bytes):

* `s2_layout="native"`: `s2` is replaced by one array per resolution group
  (`seamo_jax.data.band_groups`): s2_10m [S, H, W, 4], s2_20m [S, H/2, W/2, 6],
  s2_60m [S, H/6, W/6, 3 (L1C) / 2 (L2A)], uint16, bands as the release
  stores them; `band_groups.to_grid` gives back the grid array bitwise.
* `codec="blosc2"`: every image array (S2 groups or `s2`, and `s1`) is one
  lossless blosc2 frame (`Blosc2Tensor`: LZ4HC level 9, byte shuffle, one
  thread; imagecodecs). SSL4EO-S12 4 seasons: 5.2 MB (grid) -> 3.0 MB (native).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from seamo_jax.data import band_groups
from seamo_jax.sensors import S1_GRD, S1_STORAGE_DTYPE, S2_L1C, SensorSpec

IMAGE_ENCODING = tfds.features.Encoding.BYTES
S2_LAYOUTS = band_groups.LAYOUTS  # ("grid", "native")
CODECS = ("none", "blosc2")
# Chosen on the real SSL4EO-S12 location (../shared/data/ssl4eo_s12_sample, docs/performance.md "Record
# storage"), per 4-season record, one thread (builders and Grain readers already run one per core). The
# decode runs every epoch, the encode once, so both take LZ4HC level 9 + byte shuffle (2026-12-02):
# S2 native groups 1.97 MB, ~1.1-1.3 ms decode on this VM, 0.25 s encode (level 5: 2.03 MB, same decode,
# 0.09 s; zstd-1 + bitshuffle 2.04 MB, 2.5 ms). S1 uint16 codes 1.01 MB, 0.5 ms decode (zstd-1: 0.92 MB,
# 0.8-1.0 ms decode). Both together stay under 3 MB a record; S1 in LZ4 with S2 at level 5 would not.
BLOSC2_S2 = dict(level=9, compressor="lz4hc", shuffle=1, numthreads=1)
BLOSC2_S1 = dict(level=9, compressor="lz4hc", shuffle=1, numthreads=1)


def check_storage(s2_layout: str, codec: str) -> None:
    """ValueError (one line) for an unknown layout or codec."""
    if s2_layout not in S2_LAYOUTS:
        raise ValueError(f"s2_layout must be one of {S2_LAYOUTS}, got {s2_layout!r}")
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")


class Blosc2Tensor(tfds.features.Tensor):
    """A Tensor stored as one lossless blosc2 frame (imagecodecs), decoded with numpy.

    features.json names this class (`data_pipelines.features.Blosc2Tensor`):
    TFDS imports this module when it reads the dataset, and the numpy decode
    (`decode_example_np`, the path of `tfds.data_source` / `as_data_source` /
    `registry.load_source`) returns the array. The TensorFlow decode
    (`as_dataset`) is not supported: this project reads records with numpy only.

    Args:
      shape, dtype: of the decoded array ([S, H, W, C]; None sides allowed).
      sensor: optional; when given, `encode_example` quantises values not
        already in `dtype` with `sensor.quantise` (as QuantisedTensor).
      settings: blosc2 encoder settings (BLOSC2_S2 / BLOSC2_S1); frames name
        their codec, so reading needs none.
    """

    def __init__(self, *, shape, dtype, sensor: SensorSpec | None = None, doc=None,
                 settings: Mapping[str, Any] | None = None, **kwargs):
        kwargs.pop("encoding", None)  # always bytes: from_json_content passes the stored one back
        super().__init__(shape=shape, dtype=np.dtype(dtype), encoding=tfds.features.Encoding.BYTES, doc=doc,
                         **kwargs)
        self._sensor = sensor
        self._settings = dict(BLOSC2_S2 if settings is None else settings)

    def encode_example(self, example_data):
        values = np.asarray(example_data)
        if self._sensor is not None and values.dtype != self._dtype:
            values = self._sensor.quantise(values, self._dtype)
        encoded = super().encode_example(values)  # dtype / shape checks, as for a plain Tensor
        frame = _blosc2_encode(values, self._settings)
        if isinstance(encoded, dict):  # variable-size tiles: TFDS keeps the shape beside the bytes
            return {**encoded, "value": frame}
        return frame

    def decode_example_np(self, example_data):
        value, shape = self._get_value_and_shape(example_data)
        if isinstance(value, np.ndarray):  # a batch of frames (Sequence features): not used by our records
            return np.stack([self._decode_one(v, shape) for v in value])
        return self._decode_one(value, shape)

    def _decode_one(self, frame: bytes, shape) -> np.ndarray:
        import imagecodecs  # pylint: disable=g-import-not-at-top  (only blosc2 datasets need it)

        out = np.empty(tuple(int(d) for d in shape), self._dtype)
        imagecodecs.blosc2_decode(frame, out=out.reshape(-1).view(np.uint8), numthreads=1)
        return out

    def decode_example(self, tfexample_data):
        raise NotImplementedError("Blosc2Tensor records decode with numpy only (tfds.data_source, "
                                  "builder.as_data_source, data_pipelines.registry.load_source), not as_dataset")


class LazyBlosc2(tfds.decode.Decoder):
    """TFDS decoder of a Blosc2Tensor that returns the frame undecoded (`seamo_jax.data.encoded.EncodedArray`).

    `registry.load_source(..., lazy_decode=True)` (the device-views training
    pipeline) reads S2 with it, so `encoded.stack_samples` decodes each frame
    straight into the batch instead of into a per-record array copied later.
    """

    def decode_example(self, serialized_example):
        raise NotImplementedError("LazyBlosc2 decodes with numpy only")

    def decode_example_np(self, example_data):
        from seamo_jax.data.encoded import EncodedArray  # pylint: disable=g-import-not-at-top

        value, shape = self.feature._get_value_and_shape(example_data)  # pylint: disable=protected-access
        if isinstance(value, np.ndarray):  # a batch of frames (Sequence features): not used by our records
            return self.feature.decode_example_np(example_data)
        return EncodedArray(value, shape, self.feature.np_dtype)


def lazy_decoders(features: tfds.features.FeaturesDict) -> dict[str, LazyBlosc2] | None:
    """`as_data_source(decoders=...)` that leave the S2 arrays (`s2` or its band groups) stored as
    Blosc2Tensor undecoded; None when there are none (everything decodes as usual)."""
    keys = [key for key in features.keys() if key == "s2" or key.startswith("s2_")] if hasattr(features, "keys") else []
    return {key: LazyBlosc2() for key in keys if isinstance(features[key], Blosc2Tensor)} or None


def _blosc2_encode(values: np.ndarray, settings: Mapping[str, Any]) -> bytes:
    import imagecodecs  # pylint: disable=g-import-not-at-top

    values = np.ascontiguousarray(values)
    return imagecodecs.blosc2_encode(values, typesize=values.dtype.itemsize, **settings)


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


def _tile_hw(tile_size: int | tuple[int, int] | None) -> tuple[int | None, int | None]:
    if tile_size is None:
        return None, None
    return (tile_size, tile_size) if isinstance(tile_size, int) else (int(tile_size[0]), int(tile_size[1]))


def s2_features(spec: SensorSpec, num_seasons: int, tile_size: int | tuple[int, int] | None, *,
                s2_layout: str = "grid", codec: str = "none",
                image_encoding: tfds.features.Encoding | str = IMAGE_ENCODING
                ) -> dict[str, tfds.features.FeatureConnector]:
    """The S2 image feature(s): {"s2": [S, H, W, C]} (grid) or {"s2_10m": ..., "s2_20m": ..., ...} (native)."""
    check_storage(s2_layout, codec)
    tensor = Blosc2Tensor if codec == "blosc2" else functools.partial(tfds.features.Tensor, encoding=image_encoding)
    codec_doc = ", blosc2 frame" if codec == "blosc2" else ""
    if s2_layout == "grid":
        return {"s2": tensor(shape=_image_shape(num_seasons, tile_size, spec.num_bands), dtype=np.dtype(spec.dtype),
                             doc=f"{spec.name} {spec.units}, bands {','.join(spec.bands)}{codec_doc}")}
    height, width = _tile_hw(tile_size)
    band_groups.check_divisible(height, width, spec, "s2")
    out = {}
    for group in band_groups.native_groups(spec, "s2"):
        shape = (num_seasons, None if height is None else height // group.factor,
                 None if width is None else width // group.factor, len(group.band_indices))
        bands = ",".join(spec.bands[i] for i in group.band_indices)
        out[group.key] = tensor(shape=shape, dtype=np.dtype(spec.dtype), doc=(
            f"{spec.name} {spec.units}, bands {bands} at native {group.gsd_m:g} m (1/{group.factor} of the 10 m grid; "
            f"native layout, seamo_jax.data.band_groups.to_grid){codec_doc}"))
    return out


def s1_feature(sensor: SensorSpec, storage, *, codec: str = "none", **kwargs) -> tfds.features.FeatureConnector:
    """The `s1` feature in `storage` dtype (quantising float dB input when it is a code dtype), raw or blosc2."""
    storage = np.dtype(storage)
    if codec == "blosc2":
        kwargs.pop("encoding", None)
        kwargs["doc"] = f"{kwargs.get('doc', '')}, blosc2 frame"
        return Blosc2Tensor(dtype=storage, sensor=None if storage.name == sensor.dtype else sensor,
                            settings=BLOSC2_S1, **kwargs)
    if storage.name == sensor.dtype:
        return tfds.features.Tensor(dtype=storage, **kwargs)
    return QuantisedTensor(sensor=sensor, dtype=storage, **kwargs)


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
    s2_layout: str = "grid",
    codec: str = "none",
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
      s2_layout: "grid" (`s2` on the 10 m grid) or "native" (one key per
        resolution group, `band_groups.native_groups`; H, W divisible by 6).
      codec: "none" (raw bytes) or "blosc2" (`Blosc2Tensor` for S2 and S1).
    Returns:
      tfds.features.FeaturesDict with the keys above.
    """
    if s2_sensor.modality != "s2":
        raise ValueError(f"s2_sensor must be a Sentinel-2 spec, got {s2_sensor.name} ({s2_sensor.modality})")
    if multi_label and not class_names:
        raise ValueError("multi_label=True needs class_names")
    check_storage(s2_layout, codec)
    features: dict[str, tfds.features.FeatureConnector] = {
        **s2_features(s2_sensor, num_seasons, tile_size, s2_layout=s2_layout, codec=codec,
                      image_encoding=image_encoding),
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
        features["s1"] = s1_feature(s1_sensor, storage, codec=codec, **kwargs)
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
      class_names (list, [] if unlabelled), multi_label (bool), s2_layout
      ("grid" / "native"), codec ("none" / "blosc2").
    """
    s2_layout = band_groups.record_layout(dict.fromkeys(features.keys()), "s2")
    if s2_layout == "grid":
        s2_shape = features["s2"].shape
        codec = "blosc2" if isinstance(features["s2"], Blosc2Tensor) else "none"
    else:  # the finest group is the 10 m grid; C = all groups' bands
        keys = sorted(band_groups.group_keys("s2", dict.fromkeys(features.keys())), key=lambda k: int(k[3:-1]))
        finest = features[keys[0]].shape
        s2_shape = finest[:3] + (sum(features[k].shape[-1] for k in keys),)
        codec = "blosc2" if isinstance(features[keys[0]], Blosc2Tensor) else "none"
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
        "s2_layout": s2_layout,
        "codec": codec,
    }
