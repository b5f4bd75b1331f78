"""Real-layout builders (EuroSAT-MS, SSL4EO-S12, BigEarthNet) built from tiny files in the real layouts."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tifffile

from data_pipelines import geotiff, splits
from data_pipelines.bigearthnet import layout as ben_layout
from data_pipelines.bigearthnet.builder import Bigearthnet
from data_pipelines.eurosat_ms import layout as eurosat_layout
from data_pipelines.eurosat_ms.builder import EurosatMs
from data_pipelines.ssl4eo_s12 import layout as ssl_layout
from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12, Ssl4eoS12Config
from seamo_jax.sensors import S1_GRD, S2_L1C, S2_L2A, BadRecordError
from tests import fixtures_real_layouts as fx

EUROSAT_SAMPLE = str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat_ms_sample")


def _build(builder_cls, data_dir, manual_dir, **kwargs):
    kwargs.setdefault("num_workers", 1)  # in-process: spawning workers costs seconds per build
    builder = builder_cls(data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder, builder.as_data_source()


def _by_id(source) -> dict:
    return {source[i]["location_id"].decode(): source[i] for i in range(len(source))}


# ------------------------------------------------------------------ GeoTIFF reading

@pytest.mark.parametrize("layout", ["band", "contig", "planar", "pages", "big_endian", "zlib", "float"])
def test_geotiff_reader_matches_tifffile_on_every_layout(tmp_path, layout):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 10000, (9, 7, 5), dtype=np.uint16)
    path = str(tmp_path / "x.tif")
    kwargs = {"rowsperstrip": 2}
    if layout == "band":
        tifffile.imwrite(path, hwc[..., 0], **kwargs)
    elif layout == "contig":
        tifffile.imwrite(path, hwc, planarconfig="contig", **kwargs)
    elif layout == "planar":
        tifffile.imwrite(path, np.moveaxis(hwc, -1, 0).copy(), planarconfig="separate", **kwargs)
    elif layout == "pages":  # one page per band
        tifffile.imwrite(path, np.moveaxis(hwc, -1, 0).copy(), **kwargs)
    elif layout == "big_endian":
        tifffile.imwrite(path, hwc, planarconfig="contig", byteorder=">", **kwargs)
    elif layout == "zlib":  # compressed: not the fast path, tifffile decodes it
        tifffile.imwrite(path, hwc, planarconfig="contig", compression="zlib")
    else:
        hwc = rng.normal(-15, 5, (9, 7, 5)).astype(np.float32)
        tifffile.imwrite(path, hwc, planarconfig="contig", **kwargs)
    expected = hwc[..., :1] if layout == "band" else hwc
    values = geotiff.read_multiband(path, dtype=expected.dtype)
    np.testing.assert_array_equal(values, expected)
    assert values.dtype == expected.dtype and values.flags.writeable
    with pytest.raises(geotiff.GeoTiffError, match=r"x\.tif: \d bands, expected 13"):
        geotiff.read_multiband(path, num_bands=13)


def test_resample_and_utm():
    band = np.array([[0, 100], [200, 300]], np.uint16)
    np.testing.assert_array_equal(geotiff.resample(band, (4, 4), "nearest"), band.repeat(2, 0).repeat(2, 1))
    bilinear = geotiff.resample(band, (4, 4))
    assert bilinear.dtype == np.uint16 and bilinear[0, 0] == 0 and bilinear[3, 3] == 300
    assert bilinear[0, 1] == 25 and bilinear[1, 1] == 75  # half-pixel centres: 1/4 and 3/4 weights
    lat, lon = geotiff.utm_to_latlon(500000.0, 5000000.0, 32633)  # central meridian of zone 33N
    assert abs(lon - 15.0) < 1e-9 and abs(lat - 45.1535) < 1e-3


# ------------------------------------------------------------------ EuroSAT-MS

def test_eurosat_records_equal_written_and_splits_are_stratified(tmp_path):
    written = fx.write_eurosat_ms(str(tmp_path / "raw" / "EuroSAT_MS"), per_class=5)
    builder, source = _build(EurosatMs, tmp_path / "tfds", tmp_path / "raw")
    assert builder.info.features["s2"].shape == (1, 64, 64, 13)
    seen = {}
    for split in splits.SPLIT_NAMES:
        records = _by_id(source[split])
        assert not set(records) & set(seen), f"{split} overlaps another split"
        for stem, rec in records.items():
            seen[stem] = split
            np.testing.assert_array_equal(rec["s2"][0], written[stem]["s2"])  # B8A moved back after B8
            assert rec["s2"].dtype == np.uint16 and rec["label"] == written[stem]["label"]
            assert rec["timestamps"].tolist() == [0]
            assert 40 < rec["latlon"][0] < 60 and 5 < rec["latlon"][1] < 15  # UTM 32N tags
    assert set(seen) == set(written)
    for label in range(10):  # 5 per class at 60/20/20 -> 3/1/1 in every class
        counts = [sum(1 for s, sp in seen.items() if sp == split and written[s]["label"] == label)
                  for split in splits.SPLIT_NAMES]
        assert counts == [3, 1, 1]
    assert "hashed" in builder.info.metadata["split_method"]
    # Deterministic: a second listing of the same files gives the same assignment.
    again = EurosatMs(data_dir=str(tmp_path / "tfds2")).split_refs(str(tmp_path / "raw"))
    assert {r.rel_path.split("/")[1][:-4]: s for s, refs in again.items() for r in refs} == seen


def test_hashed_split_ignores_listing_order():
    names = [f"n{i}" for i in range(50)]
    strata = [i % 3 for i in range(50)]
    order = np.random.default_rng(1).permutation(50)
    first = splits.hashed_stratified_split(names, strata)
    second = splits.hashed_stratified_split([names[i] for i in order], [strata[i] for i in order])
    assert first == second
    assert first != splits.hashed_stratified_split(names, strata, salt="other")


def test_eurosat_uses_published_split_files(tmp_path):
    fx.write_eurosat_ms(str(tmp_path / "raw"), per_class=3, split_files=True)
    builder, source = _build(EurosatMs, tmp_path / "tfds", tmp_path / "raw")
    assert {s: len(source[s]) for s in splits.SPLIT_NAMES} == {"train": 10, "validation": 10, "test": 10}
    assert all(name.endswith("_1") for name in _by_id(source["test"]))
    assert builder.info.metadata["split_method"].startswith("files: eurosat-train.txt")


def test_eurosat_wrong_band_count_names_file_and_field(tmp_path):
    fx.write_eurosat_ms(str(tmp_path), per_class=1, classes=["Forest"])
    bad = tmp_path / "Forest" / "Forest_1.tif"
    tifffile.imwrite(bad, np.zeros((64, 64, 12), np.uint16), planarconfig="contig")
    ref = eurosat_layout.TileRef(str(bad), 1, "Forest/Forest_1.tif")
    with pytest.raises(BadRecordError, match=r"Forest_1\.tif.*'s2'.*12 bands.*L2A"):
        eurosat_layout.load_record(ref)


@pytest.mark.skipif(not os.path.isdir(EUROSAT_SAMPLE), reason="shared EuroSAT-MS sample not present")
def test_eurosat_real_sample(tmp_path):
    builder, source = _build(EurosatMs, tmp_path / "tfds", EUROSAT_SAMPLE)
    names = builder.info.features["label"].names
    total = 0
    for split in splits.SPLIT_NAMES:
        for i in range(len(source[split])):
            rec = source[split][i]
            assert rec["s2"].shape == (1, 64, 64, 13) and rec["s2"].dtype == np.uint16
            stem = rec["location_id"].decode()
            assert names[rec["label"]] == stem.rsplit("_", 1)[0]  # label = class folder
            total += 1
    assert total == 200
    rec = source["train"][0]
    stem = rec["location_id"].decode()
    raw = tifffile.imread(os.path.join(EUROSAT_SAMPLE, stem.rsplit("_", 1)[0], stem + ".tif"))
    np.testing.assert_array_equal(rec["s2"][0, ..., S2_L1C.band_index("B8A")], raw[..., 12])
    np.testing.assert_array_equal(rec["s2"][0, ..., S2_L1C.band_index("B10")], raw[..., 9])
    assert rec["s2"][..., S2_L1C.band_index("B10")].mean() < 100  # cirrus band is dark: order is right


# ------------------------------------------------------------------ SSL4EO-S12

def _expected_s2(entry, spec, product, method):
    return np.stack([np.stack([geotiff.resample(season[b], (24, 24), method) for b in spec.bands], -1)
                     for season in entry[product]])


def test_ssl4eo_records_equal_written(tmp_path):
    written = fx.write_ssl4eo_s12(str(tmp_path / "raw"), num_locations=2, tile_size=24)
    config = Ssl4eoS12Config(name="l1c_t24", tile_size=24, resample="nearest")
    builder, source = _build(Ssl4eoS12, tmp_path / "tfds", tmp_path / "raw", config=config)
    records = _by_id(source["train"])
    assert set(records) == set(written)
    for loc, rec in records.items():
        entry = written[loc]
        assert rec["s2"].shape == (4, 24, 24, 13) and rec["s2"].dtype == np.uint16
        # nearest on integer factors = repetition of the 20 m / 60 m pixels
        b5 = entry["s2c"][0]["B5"]
        np.testing.assert_array_equal(rec["s2"][0, ..., S2_L1C.band_index("B5")], b5.repeat(2, 0).repeat(2, 1))
        np.testing.assert_array_equal(rec["s2"], _expected_s2(entry, S2_L1C, "s2c", "nearest"))
        expected_s1 = np.stack([np.stack([s["VV"], s["VH"]], -1) for s in entry["s1"]])
        np.testing.assert_array_equal(rec["s1"], expected_s1)
        assert rec["s1"].dtype == np.float32
        times = rec["timestamps"]
        assert list(times) == sorted(times) and times[0] == 1583402421  # 2020-03-05T10:00:21Z
        np.testing.assert_allclose(rec["latlon"], entry["latlon"], atol=1e-4)


def test_ssl4eo_parallel_workers_write_the_same_records(tmp_path):
    written = fx.write_ssl4eo_s12(str(tmp_path / "raw"), num_locations=3, tile_size=24, products=("s2a", "s1"))
    config = Ssl4eoS12Config(name="l2a_t24", s2_sensor="s2_l2a", tile_size=24)
    builder, source = _build(Ssl4eoS12, tmp_path / "tfds", tmp_path / "raw", config=config, num_workers=2)
    assert builder.info.splits["train"].num_shards == 2
    records = _by_id(source["train"])
    assert sorted(records) == sorted(written)
    for loc, rec in records.items():
        np.testing.assert_array_equal(rec["s2"], _expected_s2(written[loc], S2_L2A, "s2a", "bilinear"))


def test_ssl4eo_l2a_bilinear_and_real_tile_size(tmp_path):
    written = fx.write_ssl4eo_s12(str(tmp_path), num_locations=1, tile_size=24, products=("s2a",))
    ref = ssl_layout.list_locations(str(tmp_path), "s2a", with_s1=False)[0]
    _, rec = ssl_layout.load_location(ref, ssl_layout.LoadConfig(s2_sensor="s2_l2a", with_s1=False, tile_size=24))
    np.testing.assert_array_equal(rec["s2"], _expected_s2(written[ref.location_id], S2_L2A, "s2a", "bilinear"))
    assert "s1" not in rec
    # The release's native sizes: 264 / 132 / 44 px.
    fx.write_ssl4eo_s12(str(tmp_path / "big"), num_locations=1, tile_size=264, products=("s2c",), seasons=4)
    ref = ssl_layout.list_locations(str(tmp_path / "big"), "s2c", with_s1=False)[0]
    assert tifffile.imread(os.path.join(ref.s2_dir, fx.S2_SEASON_NAMES[0], "B1.tif")).shape == (44, 44)
    _, rec = ssl_layout.load_location(ref, ssl_layout.LoadConfig(with_s1=False))
    assert rec["s2"].shape == (4, 264, 264, 13) and rec["s2"].dtype == np.uint16


def test_ssl4eo_l2a_data_under_l1c_config_is_named(tmp_path):
    fx.write_ssl4eo_s12(str(tmp_path), num_locations=1, tile_size=24, products=("s2a", "s1"))
    os.rename(tmp_path / "s2a", tmp_path / "s2c")  # L2A files where L1C is expected
    ref = ssl_layout.list_locations(str(tmp_path), "s2c", with_s1=True)[0]
    with pytest.raises(BadRecordError, match=r"s2c/0000000/2020\S+: holds the 12 bands of L2A.*reads L1C"):
        ssl_layout.load_location(ref, ssl_layout.LoadConfig(tile_size=24))


def test_ssl4eo_nan_in_s1_names_file(tmp_path):
    fx.write_ssl4eo_s12(str(tmp_path), num_locations=1, tile_size=24, products=("s2c", "s1"))
    bad = tmp_path / "s1" / "0000000" / fx.S1_SEASON_NAMES[2] / "VH.tif"
    values = tifffile.imread(bad)
    values[3, 4] = np.nan
    tifffile.imwrite(bad, values)
    ref = ssl_layout.list_locations(str(tmp_path), "s2c", with_s1=True)[0]
    with pytest.raises(BadRecordError, match=rf"{fx.S1_SEASON_NAMES[2]}/VH\.tif, field 's1': 1 non-finite"):
        ssl_layout.load_location(ref, ssl_layout.LoadConfig(tile_size=24))


def test_ssl4eo_off_size_band_is_resampled_and_noted_missing_band_names_file(tmp_path):
    fx.write_ssl4eo_s12(str(tmp_path), num_locations=1, tile_size=24, products=("s2c",))
    season = tmp_path / "s2c" / "0000000" / fx.S2_SEASON_NAMES[1]
    coarse = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100 + 50
    tifffile.imwrite(season / "B5.tif", coarse)  # a 20 m band at 60 m size: resampled like any band
    ref = ssl_layout.list_locations(str(tmp_path), "s2c", with_s1=False)[0]
    cfg = ssl_layout.LoadConfig(with_s1=False, tile_size=24)
    _, rec = ssl_layout.load_location(ref, cfg)
    b5 = rec["s2"][1, ..., S2_L1C.band_index("B5")]  # season 1 in time order = S2_SEASON_NAMES[1]
    np.testing.assert_array_equal(b5, geotiff.resample(coarse, (24, 24)))
    assert b5[0, 0] == 50 and b5[23, 23] == 1550  # edge-clamped corners are the source corners
    assert any("B5.tif 4x4 (native 12x12)" in note for note in rec["_annotations"]["notes"])
    os.remove(season / "B5.tif")
    with pytest.raises(BadRecordError, match=r"12 band files, expected 13; missing \['B5.tif'\]"):
        ssl_layout.load_location(ref, cfg)


# ------------------------------------------------------------------ BigEarthNet

def test_bigearthnet_s2_s1_records_labels_and_split_files(tmp_path):
    written = fx.write_bigearthnet(str(tmp_path / "raw"), num_patches=4, split_files=True)
    builder, source = _build(Bigearthnet, tmp_path / "tfds", tmp_path / "raw", config="s2_s1")
    names = sorted(written)
    assert [sorted(_by_id(source[s])) for s in splits.SPLIT_NAMES] == [names[2:], names[1:2], names[:1]]
    for split in splits.SPLIT_NAMES:
        for name, rec in _by_id(source[split]).items():
            entry = written[name]
            assert rec["s2"].shape == (1, 120, 120, 12) and rec["s2"].dtype == np.uint16
            np.testing.assert_array_equal(rec["s2"][0, ..., S2_L2A.band_index("B2")], entry["s2"]["B2"])
            np.testing.assert_array_equal(rec["s2"][0, ..., S2_L2A.band_index("B11")],
                                          geotiff.resample(entry["s2"]["B11"], (120, 120)))
            np.testing.assert_array_equal(rec["s1"][0], S1_GRD.quantise(  # dB stored as codes (S1_GRD.storage)
                np.stack([entry["s1"]["VV"], entry["s1"]["VH"]], -1), rec["s1"].dtype))
            expected = np.zeros(19, np.int64)
            for label in entry["labels43"]:
                if label in ben_layout.NAME_TO_19:
                    expected[ben_layout.NAME_TO_19[label]] = 1
            np.testing.assert_array_equal(rec["labels"], expected)
            assert rec["timestamps"].tolist() == [entry["time"]]
    rec = _by_id(source["train"])[names[2]]  # urban + road: road has no 19-class label
    assert np.flatnonzero(rec["labels"]).tolist() == [ben_layout.LABELS_19.index("Urban fabric")]
    assert builder.info.metadata["class_names"][0] == "Urban fabric"


def test_bigearthnet_hashed_split_and_missing_band(tmp_path):
    written = fx.write_bigearthnet(str(tmp_path), num_patches=10, with_s1=False)
    refs = Bigearthnet(data_dir=str(tmp_path / "tfds")).split_refs(str(tmp_path))
    assigned = [r.name for split in splits.SPLIT_NAMES for r in refs[split]]
    assert sorted(assigned) == sorted(written) and [len(refs[s]) for s in splits.SPLIT_NAMES] == [6, 2, 2]
    ref = refs["train"][0]
    os.remove(os.path.join(ref.s2_dir, f"{ref.name}_B8A.tif"))
    shutil.copy(os.path.join(ref.s2_dir, f"{ref.name}_B09.tif"), os.path.join(ref.s2_dir, f"{ref.name}_B10.tif"))
    with pytest.raises(BadRecordError, match=rf"{ref.name}, field 's2': missing \['{ref.name}_B8A.tif'\].*L1C"):
        ben_layout.load_patch(ref, ben_layout.LoadConfig())


def test_bigearthnet_v1_cloud_and_snow_lists_are_left_out(tmp_path):
    written = fx.write_bigearthnet(str(tmp_path / "raw"), num_patches=7, with_s1=False)
    names = sorted(written)
    fx.write_bigearthnet_exclusions(str(tmp_path / "raw"), snow=[names[0]], cloud=[names[1], "S2B_MSIL2A_not_here"])
    builder, source = _build(Bigearthnet, tmp_path / "tfds", tmp_path / "raw")
    kept = [sorted(_by_id(source[s])) for s in splits.SPLIT_NAMES]
    assert sorted(sum(kept, [])) == names[2:] and [len(k) for k in kept] == [3, 1, 1]  # 60/20/20 of the 5 kept
    assert builder.info.metadata["release"] == "BigEarthNet v1.0"
    assert builder.info.metadata["excluded"] == {"seasonal_snow": 1, "cloud_or_shadow": 1}
    assert builder.info.metadata["excluded_examples"]["cloud_or_shadow"] == [names[1]]
