"""Record storage (docs/contracts.md section 1): S1 quantised on write, dequantised by the pipeline.

New builds store S1 as uint16 codes of dB (`sensors.S1_GRD.storage`,
`data_pipelines.features.record_features`); float32 records of older builds
read unchanged. Crops and training batches from quantised records equal
those from float32 records within the quantisation step.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import writer
from data_pipelines.features import record_features
from seamo_jax import sensors
from seamo_jax.data import augment, crops, pipeline, testing
from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax.sensors import S1_GRD, BadRecordError, SensorSpec, validate_array

STEPS = {"uint16": 0.002, "uint8": 0.35, "float16": None}


def _s1(rng, shape=(4, 40, 40, 2)):
    return rng.normal(-15.0, 6.0, shape).astype(np.float32)


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float16"])
def test_s1_round_trip_within_half_a_step(dtype):
    values = _s1(np.random.default_rng(0))
    codes = S1_GRD.quantise(values, dtype)
    assert codes.dtype == np.dtype(dtype)
    back = S1_GRD.dequantise(codes)
    assert back.dtype == np.float32
    step = STEPS[dtype]
    # float16 has a relative step: 2**-11 of the value, 0.016 dB at |x| in [16, 32).
    tolerance = step / 2 + 1e-5 if step else np.abs(values) * 2.0 ** -11 + 1e-6
    assert np.all(np.abs(back - values) <= tolerance)
    validate_array(codes, S1_GRD, record_id="r", field="s1")


def test_s1_codes_clip_range_and_mark_non_finite():
    values = np.array([[[[-200.0, 200.0], [np.nan, np.inf]]]], np.float32)  # [1, 1, 2, 2]
    codes = S1_GRD.quantise(values, "uint16")
    assert codes.ravel().tolist() == [0, 65534, 65535, 65535]
    back = S1_GRD.dequantise(codes).ravel()
    assert back[0] == -80.0 and back[1] == pytest.approx(-80.0 + 65534 * 0.002, abs=1e-4)
    assert np.isnan(back[2:]).all()
    with pytest.raises(BadRecordError, match="2 non-finite values .*code 65535"):
        validate_array(codes, S1_GRD, record_id="r", field="s1")
    with pytest.raises(BadRecordError, match="dtype int32, expected float32 or uint16"):
        validate_array(codes.astype(np.int32), S1_GRD, record_id="r", field="s1")


def test_spec_json_round_trip_and_older_json():
    assert SensorSpec.from_dict(S1_GRD.to_dict()) == S1_GRD
    old = S1_GRD.to_dict()
    del old["storage"]  # sensors.json of checkpoints written before the field existed
    spec = SensorSpec.from_dict(old)
    assert spec.storage == () and spec.storage_dtypes == ("float32",)
    sensors.check_compatible({"s1": S1_GRD}, {"s1": spec})
    assert sensors.S1_GRD_UINT8.storage == ()  # the 8-bit release keeps its own (uint8) encoding only
    with pytest.raises(KeyError, match="no int16 storage"):
        S1_GRD.encoding("int16")


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_crops_of_codes_equal_crops_of_dequantised_values(dtype):
    rng = np.random.default_rng(1)
    codes = S1_GRD.quantise(_s1(rng), dtype)
    values = S1_GRD.dequantise(codes)
    offsets = np.array([[0, 0], [3, 4], [5, 1], [2, 2]])
    fused = augment.crop_normalise(codes, offsets, 32, S1_GRD)
    np.testing.assert_allclose(fused, augment.normalise(crops.crop_windows(values, offsets, 32), S1_GRD),
                               rtol=0, atol=1e-5)
    sizes = np.array([30, 35, 32, 38])
    flipped = augment.apply_dihedral(codes, 1, True)  # strided views read as well
    np.testing.assert_allclose(augment.crop_resize_normalise(flipped, offsets, sizes, 32, S1_GRD),
                               augment.crop_resize_normalise(augment.apply_dihedral(values, 1, True), offsets,
                                                             sizes, 32, S1_GRD), rtol=0, atol=1e-5)


def _write(directory, records, s1_storage):
    features = record_features(num_seasons=4, tile_size=24, class_names=["a", "b", "c", "d"], s1_storage=s1_storage)
    template = writer.split_template(directory, "storage_test", "train")
    split = writer.write_split(features, [{k: r[k] for k in features} for r in records], len(records), template,
                               num_shards=2, num_workers=1)
    writer.write_metadata(directory, features, [split])
    return tfds.builder_from_directory(str(directory)).as_data_source(split="train")


def _config(reading: str):
    config = get_config()
    config.data.views = "host"  # checks the views the input pipeline makes
    config.data.seasons = 4
    config.data.crop_size = 16
    config.data.batch_size = 4
    config.data.read_threads = 1
    config.data.region_reading = reading
    config.data.overlap_range = (0.5, 1.0)
    config.model.patch_size = 8
    return config


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    records = testing.make_records(8, seed=0, num_seasons=4, tile_size=24)
    root = tmp_path_factory.mktemp("storage")
    return records, _write(root / "f32", records, None), _write(root / "u16", records, "uint16"), root


def test_new_builds_store_uint16_codes_and_older_float32_records_read(sources):
    records, old, new, root = sources
    assert record_features(num_seasons=1, tile_size=4)["s1"].np_dtype == np.uint16  # the default for new builds
    for i, record in enumerate(records):
        assert old[i]["s1"].dtype == np.float32 and new[i]["s1"].dtype == np.uint16
        np.testing.assert_array_equal(old[i]["s1"], record["s1"])
        np.testing.assert_array_equal(new[i]["s1"], S1_GRD.quantise(record["s1"], "uint16"))
        np.testing.assert_array_equal(new[i]["s2"], record["s2"])
    # On disk the feature is a plain Tensor whose doc says the encoding: readers need no custom connector.
    s1 = json.loads((root / "u16" / "features.json").read_text())["featuresDict"]["features"]["s1"]
    assert s1["pythonClassName"] == "tensorflow_datasets.core.features.tensor_feature.Tensor"
    assert s1["tensor"]["dtype"] == "uint16" and "dB = code * 0.002 - 80" in s1["description"]


@pytest.mark.parametrize("reading", ["crop_area", "overlap"])
def test_train_batches_equal_within_quantisation(sources, reading):
    _, old, new, _ = sources
    config = _config(reading)
    a = pipeline.make_train_iterator(config, old, seed=3, worker_count=0)
    b = pipeline.make_train_iterator(config, new, seed=3, worker_count=0)
    for _ in range(3):
        x, y = next(a), next(b)
        assert sorted(x) == sorted(y)
        for key in x:
            if key != "views":
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        np.testing.assert_array_equal(x["views"]["s2"], y["views"]["s2"])
        assert y["views"]["s1"].dtype == np.float32
        # half a step in dB, over the band std, plus float32 rounding
        tolerance = 0.001 / min(S1_GRD.std) + 1e-5
        np.testing.assert_allclose(y["views"]["s1"], x["views"]["s1"], rtol=0, atol=tolerance)


def test_eval_arrays_dequantise_raw_views(sources):
    _, old, new, _ = sources
    config = _config("crop_area")
    x = pipeline.make_eval_arrays(config, old, num_examples=4)
    y = pipeline.make_eval_arrays(config, new, num_examples=4)
    np.testing.assert_array_equal(x["views"]["s2"], y["views"]["s2"])
    np.testing.assert_allclose(y["raw_views"]["s1"], x["raw_views"]["s1"], rtol=0, atol=0.001 + 1e-5)
    np.testing.assert_allclose(y["views"]["s1"], x["views"]["s1"], rtol=0, atol=0.001 / min(S1_GRD.std) + 1e-5)


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])
def test_native_crop_area_kernel_is_bitwise_the_numpy_path(dtype, monkeypatch):
    from seamo_jax.data import native_resize  # noqa: PLC0415

    if native_resize.load() is None:
        pytest.skip(f"resize kernel unavailable: {native_resize.load_error()}")
    rng = np.random.default_rng(2)
    spec = S1_GRD if dtype != "uint16" else sensors.S2_L1C
    shape = (4, 50, 50, spec.num_bands)
    values = (rng.integers(0, 10000, shape).astype(np.uint16) if dtype == "uint16"
              else S1_GRD.quantise(_s1(rng, shape), dtype) if dtype == "uint8" else _s1(rng, shape))
    offsets, sizes = np.array([[0, 0], [3, 9], [10, 2], [1, 1]]), np.array([50, 41, 35, 32])
    for k, flip in [(0, False), (1, True), (2, False), (3, True)]:
        tile = augment.apply_dihedral(values, k, flip)
        fused = augment.crop_resize_normalise(tile, offsets, sizes, 32, spec)
        with monkeypatch.context() as m:
            m.setattr(native_resize, "supports", lambda _: False)
            reference = augment.crop_resize_normalise(tile, offsets, sizes, 32, spec)
        np.testing.assert_array_equal(fused, reference, err_msg=f"k={k} flip={flip}")


def test_native_resize_is_chosen_by_config():
    from seamo_jax import configs
    from seamo_jax.data.sample import sample_spec_from_config

    config = configs.load_config("demo_cpu:fast")
    assert sample_spec_from_config(config).native_resize
    config.data.native_resize = "off"
    assert not sample_spec_from_config(config).native_resize
    config.data.native_resize = "fast"
    with pytest.raises(ValueError, match="unknown config.data.native_resize 'fast'"):
        sample_spec_from_config(config)
