"""tf.Example records parsed without TFDS's parser (data_pipelines/example_reader.py) read back as through TFDS."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from data_pipelines import example_reader, features as features_lib, record_files, registry
from data_pipelines.example_bytes import FastExampleSerializer
from data_pipelines.features import record_features
from seamo_jax.data import encoded


def _assert_same(a, b) -> None:
    assert sorted(a) == sorted(b)
    for key in b:
        x, y = a[key], b[key]
        if isinstance(y, encoded.EncodedArray):
            assert isinstance(x, encoded.EncodedArray) and (x.shape, x.dtype) == (y.shape, y.dtype)
            assert bytes(x.frame) == bytes(y.frame)
            continue
        assert type(x) is type(y), key
        if isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, key
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, key


def _serialised(features, example) -> dict[str, bytes]:
    """The record as our writer and as TFDS's serializer write it."""
    specs = features.get_serialized_info()
    data = features.encode_example(example)
    return {"ours": FastExampleSerializer(specs).serialize_example(data),
            "tfds": example_serializer.ExampleSerializer(specs).serialize_example(data)}


@pytest.mark.parametrize("layout,codec", [("grid", "none"), ("native", "none"), ("native", "blosc2"),
                                          ("grid", "blosc2")])
def test_records_of_every_layout_and_codec_parse_as_tfds_parses_them(layout, codec):
    # 48 px: image payloads of 18-120 KB, as memoryviews of the record for blosc2, bytes for TFDS's features.
    features = record_features(num_seasons=2, tile_size=48, class_names=["a", "b", "c"], s2_layout=layout,
                               codec=codec)
    rng = np.random.default_rng(0)
    example = {"timestamps": np.array([-5, 2**40], np.int64), "location_id": "loc_ü_1",
               "latlon": np.array([48.1, -11.5], np.float32), "label": 2,
               "s1": rng.integers(0, 60000, (2, 48, 48, 2)).astype(np.uint16)}
    if layout == "grid":
        example["s2"] = rng.integers(0, 10000, (2, 48, 48, 13), dtype=np.uint16)
    else:
        for key, size, bands in (("s2_10m", 48, 4), ("s2_20m", 24, 6), ("s2_60m", 8, 3)):
            example[key] = rng.integers(0, 10000, (2, size, size, bands), dtype=np.uint16)
    decoders = features_lib.lazy_decoders(features)
    assert example_reader.supports(features)
    parser = example_reader.ExampleParser(features)
    for serialised in _serialised(features, example).values():
        for chosen in (None, decoders):
            _assert_same(features.decode_example_np(parser.parse(serialised), decoders=chosen),
                         features.deserialize_example_np(serialised, decoders=chosen))


def test_numeric_lists_packed_or_not_multi_hot_empty_and_bool():
    features = tfds.features.FeaturesDict({
        "labels": tfds.features.Tensor(shape=(4,), dtype=np.int64),
        "empty": tfds.features.Tensor(shape=(0,), dtype=np.float32),
        "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
        "score": tfds.features.Tensor(shape=(), dtype=np.float32),
        "small": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "names": tfds.features.Tensor(shape=(2,), dtype=np.str_),
    })
    example = {"labels": [0, -1, 1, 2**62], "empty": np.zeros(0, np.float32), "flag": True, "score": 0.25,
               "small": np.array([1, -7], np.int32), "names": ["a", "bé"]}
    parser = example_reader.ExampleParser(features)
    for serialised in _serialised(features, example).values():
        _assert_same(features.decode_example_np(parser.parse(serialised)),
                     features.deserialize_example_np(serialised))
    # Unpacked numeric lists (valid protobuf, written by some writers): one tagged value each.
    from data_pipelines.example_bytes import _length_delimited, _varint  # noqa: PLC0415

    def entry(key: bytes, kind: int, payload: bytes) -> list[bytes]:
        return _length_delimited(1, [b"".join(_length_delimited(1, [key]) + _length_delimited(
            2, _length_delimited(kind, [payload])))])

    ints = b"\x08" + _varint(3) + b"\x08" + _varint(-4 & (2**64 - 1))
    floats = b"\x0d" + np.float32(1.5).tobytes() + b"\x0d" + np.float32(-2).tobytes()
    message = b"".join(_length_delimited(1, entry(b"v", 3, ints) + entry(b"f", 2, floats)))
    fields = example_reader.parse_feature_map(message)
    assert fields == {"v": (3, [3, -4]), "f": (2, [1.5, -2.0])}


def test_a_truncated_record_is_an_error_not_garbage():
    features = record_features(num_seasons=1, tile_size=6, with_s1=False)
    serialised = _serialised(features, {"s2": np.ones((1, 6, 6, 13), np.uint16), "timestamps": [0],
                                        "location_id": "x", "latlon": [0.0, 0.0]})["ours"]
    with pytest.raises((ValueError, IndexError)):
        example_reader.ExampleParser(features).parse(serialised[:-7])


def test_load_source_parses_records_itself_and_gives_tfds_records(tmp_path):
    kwargs = dict(num_train=3, num_test=1, tile_size=12, s2_layout="native", codec="blosc2")
    registry.prepare("synthetic_seasons", tmp_path, num_workers=1, **kwargs)
    for lazy, reader in ((False, "pread"), (True, "pread"), (True, "array_record")):
        source = registry.load_source("synthetic_seasons", "train", tmp_path, lazy_decode=lazy,
                                      record_reader=reader, **kwargs)
        assert isinstance(source, example_reader.ParsedSource)
        # Local shards: one preadv per record (record_files) unless array_record's reader is asked for.
        assert isinstance(source.records, record_files.RecordFiles) == (reader == "pread")
        stored = tfds.builder_from_directory(registry.get_builder("synthetic_seasons", tmp_path, **kwargs).data_dir)
        reference = stored.as_data_source(split="train", decoders=source.decoders)
        assert len(source) == len(reference) == 3
        for i in range(3):
            _assert_same(source[i], reference[i])
        _assert_same(source.__getitems__([2, 0])[0], reference[2])
        again = pickle.loads(pickle.dumps(source))  # what Grain's worker processes get
        _assert_same(again[1], reference[1])
        assert type(again.records) is type(source.records)
        frames = [v for v in source[0].values() if isinstance(v, encoded.EncodedArray)]
        assert len(frames) == (3 if lazy else 0)
        for frame in frames:  # memoryviews of the record: pickled as bytes, decoded alike
            np.testing.assert_array_equal(pickle.loads(pickle.dumps(frame)).decode(), frame.decode())
