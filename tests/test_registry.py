"""Synthetic builder -> ArrayRecord -> tfds.data_source round trip, the parallel writer, the registry."""

import functools
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import registry, writer
from data_pipelines.features import record_features
from data_pipelines.synthetic_seasons.generator import SCENE_CLASSES, generate_tile
from seamo_jax import sensors as sensors_lib
from seamo_jax.sensors import S1_GRD

KWARGS = dict(tile_size=32, num_train=12, num_test=5, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    # Two workers: exercises the spawned-process path of the writer.
    registry.prepare("synthetic_seasons", str(directory), num_workers=2, **KWARGS)
    return str(directory)


def _assert_same_record(record, tile):
    # S1 is stored as the codes of its storage dtype (sensors.S1_GRD.storage, features.py): same codes.
    tile = dict(tile, s1=S1_GRD.quantise(tile["s1"], sensors_lib.S1_STORAGE_DTYPE))
    for key in ("s2", "s1", "timestamps", "latlon"):
        assert record[key].dtype == tile[key].dtype, key
        np.testing.assert_array_equal(record[key], tile[key], err_msg=key)
    assert int(record["label"]) == tile["label"]
    assert record["location_id"] == tile["location_id"].encode()


def test_builder_writes_array_record_shards(data_dir):
    info = registry.builder_info("synthetic_seasons", data_dir, **KWARGS)
    files = sorted(os.listdir(info["data_path"]))
    assert "dataset_info.json" in files and "features.json" in files
    train_shards = [f for f in files if f.startswith("synthetic_seasons-train.array_record-")]
    assert len(train_shards) == 2, files  # one shard per worker
    assert not [f for f in files if "incomplete" in f]


def test_tfds_data_source_reads_generator_arrays(data_dir):
    config_name = registry.builder_info("synthetic_seasons", data_dir, **KWARGS)["config"]
    for split, count in (("train", 12), ("test", 5)):
        source = tfds.data_source(f"synthetic_seasons/{config_name}", split=split, data_dir=data_dir)
        assert len(source) == count
        for index in (0, count - 1):
            _assert_same_record(source[index], generate_tile(3, split, index, 32))


def test_load_source_is_random_access(data_dir):
    source = registry.load_source("synthetic_seasons", "train", data_dir, **KWARGS)
    assert len(source) == 12
    _assert_same_record(source[7], generate_tile(3, "train", 7, 32))
    record = source[7]
    assert record["s2"].shape == (4, 32, 32, 13) and record["s1"].shape == (4, 32, 32, 2)


def test_builder_info(data_dir):
    info = registry.builder_info("synthetic_seasons", data_dir, **KWARGS)
    assert info["num_classes"] == len(SCENE_CLASSES) and info["class_names"] == list(SCENE_CLASSES)
    assert info["sensors"] == {"s2": "s2_l1c", "s1": "s1_grd"}
    assert info["seasons"] == 4 and info["tile_size"] == (32, 32)
    assert info["splits"] == {"train": 12, "test": 5} and info["prepared"] and not info["multi_label"]
    assert info["config"] == "tile32_train12_test5_seed3"


def test_prepare_is_idempotent(data_dir):
    path = registry.builder_info("synthetic_seasons", data_dir, **KWARGS)["data_path"]
    before = {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in os.listdir(path)}
    registry.prepare("synthetic_seasons", data_dir, **KWARGS)
    after = {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in os.listdir(path)}
    assert before == after


def test_other_parameters_do_not_collide(data_dir):
    other = dict(KWARGS, seed=4)
    info = registry.builder_info("synthetic_seasons", data_dir, **other)
    assert not info["prepared"] and info["splits"] == {}
    assert info["data_path"] != registry.builder_info("synthetic_seasons", data_dir, **KWARGS)["data_path"]
    with pytest.raises(registry.DatasetNotPreparedError):
        registry.load_source("synthetic_seasons", "train", data_dir, **other)


def test_unknown_dataset_and_every_registered_builder_resolves_to_its_class():
    with pytest.raises(KeyError, match="unknown dataset"):
        registry.builder_class("no_such_set")
    for name in registry.BUILDERS:
        builder = registry.builder_class(name)
        assert builder.name == name, (name, builder)  # TFDS writes <data_dir>/<builder.name>/...
        assert registry.needs_manual_dir(name) == (name != "synthetic_seasons")


def test_writer_callable_and_iterable_paths_agree_and_read_back(tmp_path):
    features = record_features(num_seasons=4, tile_size=16, class_names=SCENE_CLASSES)
    make_example = functools.partial(generate_tile, 0, "train", tile_size=16)
    from_callable = writer.write_split(features, lambda index: make_example(index=index), 5,
                                       writer.split_template(tmp_path / "a", "toy", "train"),
                                       num_shards=2, num_workers=1)
    from_iterable = writer.write_split(features, (make_example(index=i) for i in range(5)), 5,
                                       writer.split_template(tmp_path / "b", "toy", "train"),
                                       num_shards=2, compression="uncompressed")
    assert from_callable.shard_lengths == from_iterable.shard_lengths == [2, 3]
    writer.write_metadata(tmp_path / "b", features, [from_iterable])
    source = tfds.builder_from_directory(str(tmp_path / "b")).as_data_source(split="train")
    assert len(source) == 5
    _assert_same_record(source[3], make_example(index=3))
    with pytest.raises(ValueError, match="ended after 4"):
        writer.write_split(features, (make_example(index=i) for i in range(4)), 5,
                           writer.split_template(tmp_path / "c", "toy", "train"), num_shards=1)
