"""Native-resolution S2 records and the blosc2 codec (issue #16 item 4: <= 3 MB per 4-season location).

Real builds of synthetic_seasons (tiny) and of the real SSL4EO-S12 location in
../shared/data/ssl4eo_s12_sample (2 timestamps) in both layouts: values are
checked against the generator / the GeoTIFFs bitwise, `to_grid` of a native
record against the grid build, and the bytes per record are printed.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tifffile

from data_pipelines import features as features_lib
from data_pipelines import geotiff, registry
from data_pipelines.eurosat_ms.builder import EurosatMs
from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12
from data_pipelines.synthetic_seasons.builder import SyntheticSeasons
from seamo_jax.data import band_groups, records
from seamo_jax.sensors import S1_GRD, S2_L1C, S2_L2A, BadRecordError

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ssl4eo_s12_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="shared SSL4EO-S12 sample not present")
SYNTH = dict(tile_size=48, num_train=3, num_test=1, seed=0)


def _record_bytes(builder) -> tuple[int, int]:
    """(serialised bytes of record 0, shard bytes per record) of the train split."""
    from array_record.python import array_record_module

    shards = sorted(glob.glob(os.path.join(os.fspath(builder.data_path), "*train.array_record*")))
    reader = array_record_module.ArrayRecordReader(shards[0])
    first = len(reader.read([0])[0])
    reader.close()
    return first, sum(os.path.getsize(s) for s in shards) // builder.info.splits["train"].num_examples


def _fresh_source(builder, split="train"):
    """Reads with the features stored beside the records (features.json), as registry.load_source does."""
    return tfds.builder_from_directory(os.fspath(builder.data_path)).as_data_source(split=split)


# ------------------------------------------------------------------ band groups

def test_native_groups_of_s2_and_s1():
    l1c = band_groups.native_groups(S2_L1C, "s2")
    assert [(g.key, g.gsd_m, g.factor) for g in l1c] == [("s2_10m", 10.0, 1), ("s2_20m", 20.0, 2),
                                                        ("s2_60m", 60.0, 6)]
    assert [[S2_L1C.bands[i] for i in g.band_indices] for g in l1c] == [
        ["B2", "B3", "B4", "B8"], ["B5", "B6", "B7", "B8A", "B11", "B12"], ["B1", "B9", "B10"]]
    assert [len(g.band_indices) for g in band_groups.native_groups(S2_L2A, "s2")] == [4, 6, 2]
    (s1,) = band_groups.native_groups(S1_GRD, "s1")
    assert s1.key == "s1_10m" and s1.band_indices == (0, 1)
    assert band_groups.record_layout({"s2": 0}, "s2") == "grid"
    assert band_groups.record_layout({"s2_10m": 0, "s2_20m": 0}, "s2") == "native"
    with pytest.raises(KeyError, match="nor s2_<gsd>m keys"):
        band_groups.record_layout({"s1": 0}, "s2")


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_stacked_resample_is_bitwise_the_per_band_one(method):
    values = np.random.default_rng(1).integers(0, 65535, (7, 5, 3, 2)).astype(np.uint16)  # [h, w, S, n]
    stacked = band_groups.resample(values, (42, 30), method)
    for s in range(3):
        for c in range(2):
            np.testing.assert_array_equal(stacked[:, :, s, c], geotiff.resample(values[:, :, s, c], (42, 30), method))


def test_block_means_and_to_grid_of_a_synthetic_grid():
    grid = np.random.default_rng(2).integers(0, 10000, (2, 12, 12, 13)).astype(np.uint16)
    native = band_groups.block_means(grid, S2_L1C, "s2")
    assert {k: v.shape for k, v in native.items()} == {"s2_10m": (2, 12, 12, 4), "s2_20m": (2, 6, 6, 6),
                                                       "s2_60m": (2, 2, 2, 3)}
    np.testing.assert_array_equal(native["s2_10m"], grid[..., [1, 2, 3, 7]])
    np.testing.assert_array_equal(native["s2_60m"][1, 0, 1, 2],
                                  np.rint(grid[1, 0:6, 6:12, 10].astype(np.float64).mean()).astype(np.uint16))
    back = band_groups.to_grid(native, "s2", S2_L1C)
    assert back.shape == grid.shape and back.dtype == np.uint16
    np.testing.assert_array_equal(back[..., 4], np.moveaxis(geotiff.resample(
        np.moveaxis(native["s2_20m"][..., 0], 0, -1), (12, 12)), -1, 0))
    with pytest.raises(ValueError, match="not divisible by the s2_60m factor 6"):
        band_groups.block_means(grid[:, :8, :8], S2_L1C, "s2")


# ------------------------------------------------------------------ codec

@pytest.mark.parametrize("tile_size", [24, None])
def test_blosc2_tensor_round_trip_is_bitwise(tile_size):
    rng = np.random.default_rng(3)
    feature = features_lib.Blosc2Tensor(shape=(2, tile_size, tile_size, 3), dtype=np.uint16)
    top = tfds.features.FeaturesDict({"x": feature})
    values = rng.integers(0, 65535, (2, 24, 24, 3)).astype(np.uint16)
    # TFDS's own serialise / numpy-parse path (what the writer and tfds.data_source run).
    decoded = top.deserialize_example_np(top.serialize_example({"x": values}))["x"]
    assert decoded.dtype == np.uint16 and decoded.shape == values.shape
    np.testing.assert_array_equal(decoded, values)
    smooth = np.broadcast_to(np.arange(24, dtype=np.uint16)[None, :, None, None], (2, 24, 24, 3))
    encoded = feature.encode_example(smooth)
    frame = encoded["value"] if tile_size is None else encoded
    assert isinstance(frame, bytes) and len(frame) < smooth.nbytes / 4  # a lossless codec that compresses
    s1 = features_lib.Blosc2Tensor(shape=(1, 4, 4, 2), dtype=np.uint16, sensor=S1_GRD)
    db = rng.uniform(-30, 0, (1, 4, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(s1.decode_example_np(s1.encode_example(db)), S1_GRD.quantise(db, np.uint16))
    with pytest.raises(ValueError, match="codec must be one of"):
        features_lib.record_features(num_seasons=1, tile_size=24, codec="zstd")


# ------------------------------------------------------------------ synthetic builds

def test_synthetic_native_blosc2_build_round_trip(tmp_path, capsys):
    grid = SyntheticSeasons(data_dir=str(tmp_path), num_workers=1, **SYNTH)
    grid.download_and_prepare()
    native = SyntheticSeasons(data_dir=str(tmp_path), num_workers=1, s2_layout="native", codec="blosc2", **SYNTH)
    assert native.builder_config.name == "tile48_train3_test1_seed0_native_blosc2"
    native.download_and_prepare()
    assert native.info.metadata["s2_layout"] == "native" and native.info.metadata["codec"] == "blosc2"
    info = registry.builder_info("synthetic_seasons", tmp_path, s2_layout="native", codec="blosc2", **SYNTH)
    assert info["tile_size"] == (48, 48) and info["seasons"] == 4 and info["sensors"]["s2"] == "s2_l1c"
    assert (info["s2_layout"], info["codec"]) == ("native", "blosc2")
    assert registry.builder_info("synthetic_seasons", tmp_path, **SYNTH)["s2_layout"] == "grid"
    source = registry.load_source("synthetic_seasons", "train", tmp_path, s2_layout="native", codec="blosc2", **SYNTH)
    grid_source = grid.as_data_source(split="train")
    for i in range(len(source)):
        rec, ref = source[i], grid_source[i]
        assert "s2" not in rec and rec["s2_60m"].shape == (4, 8, 8, 3) and rec["s2_20m"].dtype == np.uint16
        for key, values in band_groups.block_means(ref["s2"], S2_L1C, "s2").items():
            np.testing.assert_array_equal(rec[key], values)  # the grid tile's block means, bitwise
        np.testing.assert_array_equal(rec["s1"], ref["s1"])  # uint16 codes, blosc2 round trip
        assert rec["label"] == ref["label"]
        records.validate_record(rec, {"s2": S2_L1C, "s1": S1_GRD}, record_id=str(i), min_seasons=4)
    grid_bytes, native_bytes = _record_bytes(grid), _record_bytes(native)
    with capsys.disabled():
        print(f"\nsynthetic 48 px x 4 seasons, bytes per record (serialised, on disk): grid/none {grid_bytes}, "
              f"native/blosc2 {native_bytes}")
    assert native_bytes[0] < grid_bytes[0]


def test_validate_record_names_the_bad_group():
    grid = np.random.default_rng(4).integers(1, 5000, (2, 12, 12, 13)).astype(np.uint16)
    rec = {**band_groups.block_means(grid, S2_L1C, "s2"), "s1": np.zeros((2, 12, 12, 2), np.float32)}
    specs = {"s2": S2_L1C, "s1": S1_GRD}
    records.validate_record(rec, specs, record_id="7")
    with pytest.raises(BadRecordError, match=r"field 's2_20m' .*spatial shape \(6, 5\), expected \(6, 6\)"):
        records.validate_record(dict(rec, s2_20m=rec["s2_20m"][:, :, :5]), specs, record_id="7")
    with pytest.raises(BadRecordError, match=r"field 's2_60m' .*3 seasons, expected 2"):
        records.validate_record(dict(rec, s2_60m=np.concatenate([rec["s2_60m"]] * 2)[:3]), specs, record_id="7")
    with pytest.raises(BadRecordError, match=r"field 's2_10m' .*dtype float32"):
        records.validate_record(dict(rec, s2_10m=rec["s2_10m"].astype(np.float32)), specs, record_id="7")
    with pytest.raises(BadRecordError, match=r"missing \['s2_60m'\]"):
        records.validate_record({k: v for k, v in rec.items() if k != "s2_60m"}, specs, record_id="7")
    with pytest.raises(BadRecordError, match=r"field 's1' .*spatial shape \(6, 6\), expected \(12, 12\)"):
        records.validate_record(dict(rec, s1=rec["s1"][:, :6, :6]), specs, record_id="7")


# ------------------------------------------------------------------ rejections

def test_native_layout_is_refused_where_it_would_be_lossy_or_is_not_built(tmp_path):
    with pytest.raises(ValueError, match=r"^ssl4eo_s12/v1_1_l1c_native: s2_layout='native' is not supported for the v1.1 zarr release "
                                         r"\(it stores every band at 10 m; downsampling"):
        Ssl4eoS12(data_dir=str(tmp_path), config="v1_1_l1c", s2_layout="native")
    with pytest.raises(ValueError, match=r"^eurosat_ms: s2_layout='native' is not supported by this builder"):
        EurosatMs(data_dir=str(tmp_path), s2_layout="native")
    with pytest.raises(ValueError, match=r"^bigearthnet: codec='blosc2' is not supported"):
        registry.get_builder("bigearthnet", tmp_path, codec="blosc2")
    with pytest.raises(ValueError, match="tile side 40 is not divisible by the s2_60m factor 6"):
        SyntheticSeasons(data_dir=str(tmp_path), tile_size=40, s2_layout="native")
    with pytest.raises(ValueError, match="s2_layout must be one of"):
        Ssl4eoS12(data_dir=str(tmp_path), s2_layout="coarse")
    # v1.1 keeps the codec (lossless) and the grid.
    assert Ssl4eoS12(data_dir=str(tmp_path), config="v1_1_l1c", codec="blosc2").builder_config.name == \
        "v1_1_l1c_blosc2"


# ------------------------------------------------------------------ the real SSL4EO-S12 location

@needs_sample
def test_real_sample_native_records_equal_the_files_and_the_grid_build(tmp_path, capsys):
    def build(**kwargs):
        builder = Ssl4eoS12(data_dir=str(tmp_path), num_seasons=2, num_workers=1, **kwargs)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(SAMPLE)))
        return builder

    grid, native, packed = build(), build(s2_layout="native"), build(s2_layout="native", codec="blosc2")
    assert packed.builder_config.name == "l1c_seasons2_native_blosc2"
    assert packed.info.metadata["s2_layout"] == "native" and packed.info.metadata["codec"] == "blosc2"
    ref = grid.as_data_source(split="train")[0]
    rec, small = _fresh_source(native)[0], _fresh_source(packed)[0]
    seasons = sorted(os.listdir(SAMPLE / "s2c" / "0000200"))
    for got in (rec, small):
        assert {k: got[k].shape for k in ("s2_10m", "s2_20m", "s2_60m")} == {
            "s2_10m": (2, 264, 264, 4), "s2_20m": (2, 132, 132, 6), "s2_60m": (2, 44, 44, 3)}
        for group in band_groups.native_groups(S2_L1C, "s2"):
            for t, season in enumerate(seasons):
                for j, c in enumerate(group.band_indices):  # as stored, bitwise
                    band = tifffile.imread(SAMPLE / "s2c" / "0000200" / season / f"{S2_L1C.bands[c]}.tif")
                    np.testing.assert_array_equal(got[group.key][t, ..., j], band)
        np.testing.assert_array_equal(band_groups.to_grid(got, "s2", S2_L1C), ref["s2"])  # the grid build, bitwise
        np.testing.assert_array_equal(got["nodata_pixels"], ref["nodata_pixels"])
        np.testing.assert_array_equal(got["timestamps"], ref["timestamps"])
        records.validate_record(got, {"s2": S2_L1C, "s1": S1_GRD}, record_id="0000200", min_seasons=2)
    np.testing.assert_array_equal(rec["s1"], ref["s1"])  # codec none: float32 dB as before
    assert small["s1"].dtype == np.uint16  # blosc2: the S1 spec's codes
    np.testing.assert_array_equal(small["s1"], S1_GRD.quantise(ref["s1"], np.uint16))
    sizes = {name: _record_bytes(b) for name, b in (("grid/none", grid), ("native/none", native),
                                                    ("native/blosc2", packed))}
    with capsys.disabled():
        print("\nSSL4EO-S12 0000200, 2 seasons, bytes per record (serialised, on disk): "
              + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    assert sizes["native/blosc2"][0] < sizes["native/none"][0] < sizes["grid/none"][0]
    assert 2 * sizes["native/blosc2"][0] < 3.1e6  # 4 seasons ~ twice these 2


@needs_sample
def test_blosc2_records_read_after_a_fresh_import(tmp_path):
    builder = Ssl4eoS12(data_dir=str(tmp_path), num_seasons=2, num_workers=1, config="l2a_s2only",
                        s2_layout="native", codec="blosc2")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(SAMPLE)))
    # A new interpreter that imports nothing of data_pipelines: features.json names Blosc2Tensor, TFDS imports it.
    code = ("import sys, numpy as np, tensorflow_datasets as tfds\n"
            f"src = tfds.builder_from_directory({os.fspath(builder.data_path)!r}).as_data_source(split='train')\n"
            "rec = src[0]\n"
            "assert 'data_pipelines.features' in sys.modules\n"
            "print(sorted(k for k in rec if k.startswith('s2')), rec['s2_60m'].shape, int(rec['s2_20m'].sum()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])})
    assert out.returncode == 0, out.stderr[-2000:]
    here = builder.as_data_source(split="train")[0]
    assert out.stdout.split("\n")[0] == f"['s2_10m', 's2_20m', 's2_60m'] (2, 44, 44, 2) {int(here['s2_20m'].sum())}"


@needs_sample
def test_real_sample_off_size_band_goes_to_its_native_size_and_skips_still_count(tmp_path):
    raw = tmp_path / "raw"
    for product in ("s2c", "s1"):
        shutil.copytree(SAMPLE / product / "0000200", raw / product / "0000200")
        shutil.copytree(SAMPLE / product / "0000200", raw / product / "0000201")
    seasons = sorted(os.listdir(raw / "s2c" / "0000200"))
    b5_path = raw / "s2c" / "0000200" / seasons[0] / "B5.tif"
    stored = geotiff.resample(tifffile.imread(b5_path), (131, 131))  # exported one pixel short
    tifffile.imwrite(b5_path, stored)
    os.remove(raw / "s2c" / "0000201" / seasons[1] / "B3.tif")
    builder = Ssl4eoS12(data_dir=str(tmp_path / "tfds"), num_seasons=2, num_workers=1, s2_layout="native")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
    meta = builder.info.metadata
    assert {k: v["kind"] for k, v in meta["skipped"]["train"].items()} == {"0000201": "missing_bands"}
    assert meta["records_written"] == {"train": 1}
    assert any("B5.tif 131x131 (native 132x132) resampled to 132" in n for n in meta["notes"]["train"]["0000200"])
    rec = builder.as_data_source(split="train")[0]
    np.testing.assert_array_equal(rec["s2_20m"][0, ..., 0], geotiff.resample(stored, (132, 132)))
