"""The parallel writer's fast path: direct tf.Example bytes, uncompressed shards, spawn workers.

Regression tests of issue 5: `registry.prepare("eurosat_ms", ..., manual_dir=...)`
with spawned writer workers, and records written by the fast serializer
reading back through `tfds.data_source` exactly like TFDS's own writer.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.proto import tf_example_pb2

from data_pipelines import registry
from data_pipelines.example_bytes import FastExampleSerializer
from data_pipelines.features import record_features
from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12, Ssl4eoS12Config
from seamo_jax.sensors import S2_L1C
from tests import fixtures_real_layouts as fx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _record(rng: np.random.Generator, label) -> dict:
    return {
        "s2": rng.integers(0, 65535, (2, 5, 3, 13), dtype=np.uint16),
        "s1": rng.normal(-12, 5, (2, 5, 3, 2)).astype(np.float32),
        "timestamps": np.array([-5, 2**40], np.int64),  # negative: 10-byte varint
        "location_id": "loc_ü_1",  # non-ASCII text
        "latlon": np.array([48.1, -11.5], np.float32),
        "label": label,
    }


@pytest.mark.parametrize("label", [0, 2, "c"])
def test_fast_serializer_matches_protobuf_bytes(label):
    features = record_features(num_seasons=2, tile_size=(5, 3), s2_sensor=S2_L1C, class_names=["a", "b", "c"])
    specs = features.get_serialized_info()
    assert FastExampleSerializer.supports(specs)
    encoded = features.encode_example(_record(np.random.default_rng(0), label))
    fast = FastExampleSerializer(specs).serialize_example(encoded)
    reference = tf_example_pb2.Example()
    reference.ParseFromString(example_serializer.ExampleSerializer(specs).serialize_example(encoded))
    # Same message, and the very bytes of protobuf's deterministic (sorted-key) serialisation.
    assert fast == reference.SerializeToString(deterministic=True)


def test_fast_serializer_multi_hot_and_empty_lists():
    features = tfds.features.FeaturesDict({
        "labels": tfds.features.Tensor(shape=(4,), dtype=np.int64),
        "empty": tfds.features.Tensor(shape=(0,), dtype=np.float32),
        "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
    })
    specs = features.get_serialized_info()
    encoded = features.encode_example({"labels": [0, 1, 1, 0], "empty": np.zeros(0, np.float32), "flag": True})
    reference = tf_example_pb2.Example()
    reference.ParseFromString(example_serializer.ExampleSerializer(specs).serialize_example(encoded))
    assert FastExampleSerializer(specs).serialize_example(encoded) == reference.SerializeToString(deterministic=True)


def test_fast_serializer_rejects_wrong_shape():
    features = record_features(num_seasons=1, tile_size=4, with_s1=False)
    encoded = features.encode_example({"s2": np.zeros((1, 4, 4, 13), np.uint16), "timestamps": [0],
                                       "location_id": "x", "latlon": [0.0, 0.0]})
    encoded["timestamps"] = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="timestamps"):
        FastExampleSerializer(features.get_serialized_info()).serialize_example(encoded)


def test_sequence_features_keep_tfds_serializer():
    features = tfds.features.FeaturesDict({"seq": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.int64))})
    assert not FastExampleSerializer.supports(features.get_serialized_info())


def test_parallel_writer_reads_back_like_tfds_writer(tmp_path):
    fx.write_ssl4eo_s12(str(tmp_path / "raw"), num_locations=3, tile_size=24, products=("s2c", "s1"))
    config = Ssl4eoS12Config(name="l1c_t24", tile_size=24)
    sources = {}
    for writer, workers in (("tfds", 1), ("parallel", 2)):
        builder = Ssl4eoS12(data_dir=str(tmp_path / writer), config=config, writer=writer, num_workers=workers)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "raw")))
        source = tfds.data_source("ssl4eo_s12/l1c_t24", split="train", data_dir=str(tmp_path / writer),
                                  try_gcs=False)
        sources[writer] = {source[i]["location_id"]: source[i] for i in range(len(source))}
    assert sorted(sources["tfds"]) == sorted(sources["parallel"]) and len(sources["tfds"]) == 3
    for location, expected in sources["tfds"].items():
        got = sources["parallel"][location]
        assert sorted(got) == sorted(expected)
        for key in expected:
            assert np.asarray(got[key]).dtype == np.asarray(expected[key]).dtype, key
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_prepare_eurosat_with_two_spawned_workers(tmp_path):
    # Issue 5: the default worker count (spawned writer processes) must build EuroSAT-MS.
    fx.write_eurosat_ms(str(tmp_path / "raw"), per_class=5)
    registry.prepare("eurosat_ms", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"), num_workers=2)
    info = registry.builder_info("eurosat_ms", str(tmp_path / "tfds"))
    assert sum(info["splits"].values()) == 50
    for split, count in info["splits"].items():
        source = registry.load_source("eurosat_ms", split, str(tmp_path / "tfds"))
        assert len(source) == count
        assert source[count - 1]["s2"].shape == (1, 64, 64, 13)


def test_unguarded_script_fails_fast_instead_of_hanging(tmp_path):
    # Spawned workers re-import a main script without a __main__ guard; each
    # re-runs prepare and dies. multiprocessing.Pool replaced them forever.
    fx.write_eurosat_ms(str(tmp_path / "raw"), per_class=5)
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from data_pipelines import registry\n"
        f"registry.prepare('eurosat_ms', {str(tmp_path / 'tfds')!r}, manual_dir={str(tmp_path / 'raw')!r}, "
        "num_workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "__main__" in done.stderr and "num_workers=1" in done.stderr
