"""tf.Example wire bytes parsed directly, for the training source (the inverse of example_bytes.py).

TFDS's numpy parser (`ExampleParserNp`) builds a `tf.train.Example` message
from each record and turns its fields into numpy: for an SSL4EO-sized
native + blosc2 record (~3 MB in a few `bytes` features) that copies every
payload twice and costs ~0.25 ms, a tenth of what a worker spends per sample
(docs/performance.md, "Worker processes"). The records of this project are
flat maps of a few large `bytes` features and tiny numeric ones, so this
module walks the wire format itself and hands each large blosc2 frame on as
a memoryview of the record, no copy (TFDS's own features get bytes). Decoding stays TFDS's: the parsed dict
goes to `features.decode_example_np(...)`, as `ExampleParserNp`'s does, so a
record reads back exactly as through `tfds` (tests/test_example_reader.py
checks every builder's records).

  Example    { 1: Features }
  Features   { 1: repeated MapEntry }            (map<string, Feature>)
  MapEntry   { 1: key string, 2: Feature }
  Feature    { 1: BytesList | 2: FloatList | 3: Int64List }
  *List      { 1: repeated value }               (numeric lists packed or not)

Feature specs it does not cover (sequence / ragged features) make
`supports()` False and `load_source` keeps TFDS's parser.
"""

from __future__ import annotations

import struct
from typing import Any, Mapping, Sequence

import numpy as np
from tensorflow_datasets.core import utils

from data_pipelines.example_bytes import FastExampleSerializer
from data_pipelines.features import Blosc2Tensor


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int):
    """(field number, wire type, value or (begin, end) of a length-delimited payload) of a message."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _varint(data, pos)
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire == 0:
            value, pos = _varint(data, pos)
            yield field, wire, value
        elif wire == 5:
            yield field, wire, (pos, pos + 4)
            pos += 4
        elif wire == 1:
            yield field, wire, (pos, pos + 8)
            pos += 8
        else:
            raise ValueError(f"tf.Example: unsupported wire type {wire} (field {field})")
    if pos != end:
        raise ValueError("tf.Example: a field runs past its message")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(data: memoryview, kind: int, start: int, end: int) -> list[Any]:
    """Values of a BytesList (1), FloatList (2) or Int64List (3) message."""
    values: list[Any] = []
    for field, wire, value in _fields(data, start, end):
        if field != 1:
            continue
        if kind == 1:
            begin, stop = value
            values.append(data[begin:stop])  # a memoryview; ExampleParser copies what TFDS wants as bytes
        elif kind == 2:
            begin, stop = value
            if wire == 2:  # packed
                values.extend(np.frombuffer(data[begin:stop], "<f4").tolist())
            else:
                values.append(struct.unpack("<f", data[begin:stop])[0])
        elif wire == 2:  # packed int64 varints
            pos, stop = value
            while pos < stop:
                number, pos = _varint(data, pos)
                values.append(_signed(number))
        else:
            values.append(_signed(value))
    return values


def parse_feature_map(serialized: bytes | memoryview) -> dict[str, tuple[int, list[Any]]]:
    """key -> (kind 1 bytes / 2 float / 3 int64, values) of a serialised tf.Example (bytes values as
    memoryviews of `serialized`)."""
    data = memoryview(serialized).cast("B")
    out: dict[str, tuple[int, list[Any]]] = {}
    for field, _, span in _fields(data, 0, len(data)):
        if field != 1:
            continue
        for entry_field, _, entry in _fields(data, *span):
            if entry_field != 1:
                continue
            key, feature = None, None
            for part, _, where in _fields(data, *entry):
                if part == 1:
                    key = data[where[0]:where[1]].tobytes().decode("utf-8")
                elif part == 2:
                    feature = where
            if key is None:
                raise ValueError("tf.Example: a feature without a key")
            kind, values = 0, []
            for kind_field, _, list_span in _fields(data, *(feature or (0, 0))):
                if kind_field in (1, 2, 3):
                    kind, values = kind_field, _list_values(data, kind_field, *list_span)
            out[key] = (kind, values)
    return out


def supports(features: Any) -> bool:
    """Whether records of these TFDS features can be parsed here (no sequence / ragged features)."""
    return FastExampleSerializer.supports(features.get_serialized_info())  # the specs our writer writes


class ExampleParser:
    """Parses a serialised record of `features` into what `features.decode_example_np` takes
    (the same dict TFDS's `ExampleParserNp.parse_example` returns, large blosc2 frames as memoryviews)."""

    def __init__(self, features: Any):
        self._specs = features.get_serialized_info()
        self._flat = utils.flatten_nest_dict(self._specs)
        # Only Blosc2Tensor decodes from a memoryview; TFDS's own features want bytes (a copy, as TFDS makes).
        top = features.keys() if hasattr(features, "keys") else []
        self._views = {key for key in self._flat
                       if key.split("/")[0] in top and isinstance(features[key.split("/")[0]], Blosc2Tensor)}

    def parse(self, serialized: bytes | memoryview) -> Mapping[str, Any]:
        fields = parse_feature_map(serialized)
        flat = {}
        for key, info in self._flat.items():
            if key not in fields:
                if getattr(info, "optional", False):  # TFDS's writers leave optional None features out
                    continue
                raise KeyError(f"Malformed input: {key} is not in the record's features {sorted(fields)}")
            kind, values = fields[key]
            if kind == 1 and key not in self._views:
                values = [bytes(v) for v in values]
            flat[key] = _to_numpy(values, kind, info, key)
        return utils.pack_as_nest_dict(flat, self._specs)


def _to_numpy(values: Sequence[Any], kind: int, info: Any, key: str) -> Any:
    """As TFDS's `_feature_to_numpy`: the spec's dtype, a scalar as a Python value, else reshaped."""
    shape = tuple(info.shape)
    if kind == 1:
        if not shape:
            if len(values) != 1:
                raise ValueError(f"feature {key}: {len(values)} values for a scalar")
            return values[0]
        array = np.empty(len(values), object)
        array[:] = [bytes(v) for v in values]
        return array.reshape([d if d is not None else -1 for d in shape])
    array = np.array(values, dtype=info.np_dtype)
    if not shape:
        return array.item()
    return array.reshape([d if d is not None else -1 for d in shape])


class ParsedSource:
    """A TFDS ArrayRecord source read as raw bytes and parsed by `ExampleParser` (what
    `registry.load_source` returns): `len`, `[i]`, `[[i, j]]`, as TFDS's source.

    `records`: where the raw records come from when given (`record_files.RecordFiles`:
    one preadv per record into a reused buffer); else `raw_source`. `data_source`
    is the array_record source under `raw_source` (`records.shard_of` names
    shards with it).
    """

    def __init__(self, raw_source: Any, features: Any, decoders: Any = None, records: Any = None):
        self.raw_source = raw_source
        self.records = records if records is not None else raw_source
        self.data_source = getattr(raw_source, "data_source", None)
        self.features = features
        self.decoders = decoders
        self._parser = ExampleParser(features)

    def __getstate__(self):
        return {"raw_source": self.raw_source, "features": self.features, "decoders": self.decoders,
                "records": self.records if self.records is not self.raw_source else None}

    def __setstate__(self, state):
        self.__init__(**state)

    def __len__(self) -> int:
        return len(self.raw_source)

    def _decode(self, serialized: bytes) -> Any:
        return self.features.decode_example_np(self._parser.parse(serialized), decoders=self.decoders)

    def __getitem__(self, index) -> Any:
        return self._decode(self.records[index])

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        return [self._decode(raw) for raw in self.records.__getitems__(indices)]

    def __repr__(self) -> str:
        return f"ParsedSource({self.records!r})"
