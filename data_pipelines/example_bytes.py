"""tf.Example wire bytes written directly, for the parallel writer.

TFDS's `ExampleSerializer` builds a `tf.train.Example` protobuf and calls
`SerializeToString()`: for one SSL4EO-S12 location (~9.5 MB of image bytes)
that copies the payload into the message and out again and costs 36-80 ms,
more than reading and resampling the GeoTIFFs. The records hold a few large
`bytes` features (images, `Encoding.BYTES`) and a few tiny numeric ones, so
the wire format is simple to write with one `b"".join`:

  Example    { 1: Features }
  Features   { 1: repeated MapEntry }            (map<string, Feature>)
  MapEntry   { 1: key string, 2: Feature }
  Feature    { 1: BytesList | 2: FloatList | 3: Int64List }
  *List      { 1: repeated value }               (numeric lists packed)

Values are converted as TFDS's serializer converts them (`np.asanyarray` to
the spec dtype, shape check, bool -> int64, uint64 bitcast; `_to_array` here,
not TFDS's private helper), so TFDS's parser reads back the same arrays. Map entries are written in sorted key order (what
protobuf's deterministic serialisation does); TFDS's upb serialisation uses
hash order, so bytes may differ in entry order only. Specs this module does
not cover (sequence / ragged features) make `supports()` False and
the caller keeps TFDS's serializer.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from tensorflow_datasets.core import utils
from tensorflow_datasets.core.features import feature as feature_lib
from tensorflow_datasets.core.utils import dtype_utils


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (< 2**64)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, parts: list[bytes]) -> list[bytes]:
    """Tag (wire type 2) + length + payload parts of one field, as a part list (no payload copy)."""
    return [_varint(field << 3 | 2), _varint(sum(len(p) for p in parts)), *parts]


def _int64_list(values: np.ndarray) -> list[bytes]:
    """Int64List payload: packed varints; negatives as 10-byte two's complement, as protobuf does."""
    if values.size == 0:
        return []
    packed = b"".join(_varint(int(v) & 0xFFFFFFFFFFFFFFFF) for v in values.astype(np.int64, copy=False).ravel())
    return _length_delimited(1, [packed])


def _float_list(values: np.ndarray) -> list[bytes]:
    """FloatList payload: packed little-endian float32."""
    if values.size == 0:
        return []
    return _length_delimited(1, [np.ascontiguousarray(values, "<f4").tobytes()])


def _bytes_list(values: np.ndarray) -> list[bytes]:
    """BytesList payload: one length-delimited field per element; str -> UTF-8, as protobuf does."""
    parts: list[bytes] = []
    for item in values.ravel():
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts += _length_delimited(1, [data])
    return parts


def _is_string(item: Any) -> bool:
    """str / bytes, a list or tuple of them, or a string / object array (what TFDS accepts as text)."""
    if isinstance(item, (bytes, str)):
        return True
    if isinstance(item, (tuple, list)):
        return all(_is_string(x) for x in item)
    return isinstance(item, np.ndarray) and (item.dtype.kind in ("U", "S") or item.dtype == object)


def _to_array(item: Any, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """`item` as an array of the spec dtype, with TFDS's checks: shape (None = any size) and string-ness."""
    array = np.asanyarray(item, dtype=dtype)
    if len(array.shape) != len(shape) or any(want is not None and want != got
                                             for want, got in zip(shape, array.shape)):
        raise ValueError(f"Shapes {array.shape} and {tuple(shape)} are incompatible")
    if dtype_utils.is_string(dtype) and not _is_string(item):
        raise ValueError(f"Unsupported value: {array}\nCould not convert to bytes list.")
    return array


def _feature(item: Any, info: feature_lib.TensorInfo) -> list[bytes]:
    """Serialised `tf.train.Feature` of one flat feature, as a part list."""
    array = _to_array(item, info.np_dtype, info.shape)
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if array.dtype == np.uint64:
        array = array.view(np.int64)
    if dtype_utils.is_integer(array.dtype):
        return _length_delimited(3, _int64_list(array))
    if dtype_utils.is_floating(array.dtype):
        return _length_delimited(2, _float_list(array))
    if dtype_utils.is_string(array.dtype):
        return _length_delimited(1, _bytes_list(array))
    raise ValueError(f"unsupported dtype {array.dtype} for tf.Example")


class FastExampleSerializer:
    """Drop-in for `ExampleSerializer.serialize_example` on flat specs.

    Args:
      example_specs: `features.get_serialized_info()` (nested dict of TensorInfo).
    """

    def __init__(self, example_specs: Mapping[str, Any]):
        self._specs = utils.flatten_nest_dict(example_specs)

    @staticmethod
    def supports(example_specs: Mapping[str, Any]) -> bool:
        """True when every feature is a plain (non-sequence) TensorInfo."""
        flat = utils.flatten_nest_dict(example_specs)
        # Sequence features go through TFDS's ragged/stacking conversion first; not needed by our records.
        return all(isinstance(info, feature_lib.TensorInfo) and not info.sequence_rank for info in flat.values())

    def serialize_example(self, example: Mapping[str, Any]) -> bytes:
        """Encoded example (`features.encode_example(...)`) -> tf.Example bytes."""
        flat = utils.flatten_nest_dict(example)
        entries: list[bytes] = []
        for key in sorted(self._specs):
            info = self._specs[key]
            item = flat[key]
            if item is None and info.optional:  # TFDS leaves optional None features out
                continue
            try:
                feature = _feature(item, info)
            except Exception as e:  # name the feature, as TFDS's serializer does
                raise type(e)(f"Error while serializing feature `{key}`: `{info}`: {e}") from e
            entry = _length_delimited(1, [key.encode("utf-8")]) + _length_delimited(2, feature)
            entries += _length_delimited(1, entry)
        return b"".join(_length_delimited(1, entries))

