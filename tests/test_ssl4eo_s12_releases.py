"""SSL4EO-S12 builds that survive real data: skips, resampling, units, the 8-bit and v1.1 releases.

The real location in ../shared/data/ssl4eo_s12_sample (2 timestamps, native
band sizes) is built as published; the releases' other layouts are written
tiny by tests/fixtures_real_layouts.py (JPEG GeoTIFFs, zarr.zip shards).
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import pathlib
import shutil
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tifffile

from data_pipelines import geotiff, registry
from data_pipelines import writer as writer_lib
from data_pipelines.ssl4eo_s12 import layout as ssl_layout
from data_pipelines.ssl4eo_s12 import zarr_layout
from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12
from seamo_jax import cli
from seamo_jax.sensors import (S1_GRD, S1_GRD_UINT8, S2_L1C, S2_L1C_UINT8, S2_L1C_V11, S2_L2A_V11, BadRecordError,
                               get_sensor)
from tests import fixtures_real_layouts as fx

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ssl4eo_s12_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="shared SSL4EO-S12 sample not present")


def _build(data_dir, manual_dir, **kwargs):
    kwargs.setdefault("num_workers", 1)
    builder = Ssl4eoS12(data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _records(builder, split="train") -> dict:
    source = builder.as_data_source(split=split)
    return {source[i]["location_id"].decode(): source[i] for i in range(len(source))}


def _unix(name: str) -> int:
    return calendar.timegm(time.strptime(name[:15], "%Y%m%dT%H%M%S"))


# ------------------------------------------------------------------ the real sample

@needs_sample
def test_real_sample_cli_default_stops_naming_the_location_two_seasons_builds_it(tmp_path, capsys):
    base = ["data", "build", "--builder", "ssl4eo_s12", "--manual-dir", str(SAMPLE), "--workers", "1"]
    assert cli.main(base + ["--data-dir", str(tmp_path / "d4")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("seamo data build: error: ssl4eo_s12/l1c: all 1 locations of split 'train' were "
                             "skipped (timestamps:2: 1; e.g. 0000200: ")
    assert "2 timestamps, expected num_seasons=4" in err[0]
    assert "pass --builder-arg num_seasons=2 to keep locations with 2 timestamps" in err[0]
    # Nothing left behind that a later build or a training run could take for a dataset.
    left = [p for p in (tmp_path / "d4").rglob("*") if p.is_file() and p.parent.name != ".config"]  # TFDS's own
    assert left == [], left

    assert cli.main(base + ["--data-dir", str(tmp_path / "d2"), "--builder-arg", "num_seasons=2"]) == 0
    out = capsys.readouterr().out
    assert "ssl4eo_s12/l1c_seasons2: train: 1 of 1 locations written, 0 skipped\n" in out
    info = json.loads(out[out.index("{\n"):])
    assert info["config"] == "l1c_seasons2" and info["splits"] == {"train": 1} and info["seasons"] == 2


@needs_sample
def test_real_sample_two_seasons_record_equals_the_files(tmp_path):
    builder = _build(tmp_path, SAMPLE, num_seasons=2, config="l2a")
    assert builder.builder_config.name == "l2a_seasons2"
    (loc, rec), = _records(builder).items()
    assert loc == "0000200" and rec["s2"].shape == (2, 264, 264, 12) and rec["s2"].dtype == np.uint16
    seasons = sorted(os.listdir(SAMPLE / "s2a" / loc))  # names start with the time: sorted = time order
    assert rec["timestamps"].tolist() == [_unix(s) for s in seasons] == [1591249599, 1597297599]
    for t, season in enumerate(seasons):
        folder = SAMPLE / "s2a" / loc / season
        b4 = tifffile.imread(folder / "B4.tif")  # 10 m: as stored
        np.testing.assert_array_equal(rec["s2"][t, ..., S2_L1C.band_index("B4")], b4)
        b5 = tifffile.imread(folder / "B5.tif").astype(np.float64)  # 132 px -> 264: bilinear, half-pixel centres
        got = rec["s2"][t, ..., 4].astype(np.float64)
        # Output pixel 2i+1 sits 1/4 of the way from source pixel i to i+1 (in both axes).
        for i, j in ((10, 20), (70, 3), (130, 64)):
            expected = (0.75 * 0.75 * b5[i, j] + 0.75 * 0.25 * b5[i, j + 1] + 0.25 * 0.75 * b5[i + 1, j]
                        + 0.25 * 0.25 * b5[i + 1, j + 1])
            assert abs(got[2 * i + 1, 2 * j + 1] - expected) <= 0.5
        b1 = tifffile.imread(folder / "B1.tif")  # 44 px -> 264
        np.testing.assert_array_equal(rec["s2"][t, ..., 0], geotiff.resample(b1, (264, 264)))
    s1_seasons = sorted(os.listdir(SAMPLE / "s1" / loc), key=lambda n: n.split("_")[4])
    for t, season in enumerate(s1_seasons):
        np.testing.assert_array_equal(rec["s1"][t, ..., 1], tifffile.imread(SAMPLE / "s1" / loc / season / "VH.tif"))
    assert rec["nodata_pixels"].tolist() == [0, 0] and rec["s1_nodata_pixels"].tolist() == [0, 0]
    np.testing.assert_allclose(rec["latlon"], [30.4640, 73.3059], atol=2e-3)  # tile centre from the GeoTIFF tags
    assert builder.info.metadata["records_written"] == {"train": 1}
    assert builder.info.metadata["skipped"] == {"train": {}}
    assert builder.info.metadata["sensors"] == {"s2": "s2_l2a", "s1": "s1_grd"}


# ------------------------------------------------------------------ skips, notes, num_seasons

def _ramp(shape, a, b, c):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return (c + a * y + b * x).astype(np.uint16)


def test_unreadable_locations_are_skipped_listed_and_the_build_goes_on(tmp_path):
    raw = tmp_path / "raw"
    fx.write_ssl4eo_s12(str(raw), num_locations=5, tile_size=24, products=("s2c", "s1"))
    for name in fx.S2_SEASON_NAMES[2:]:  # 0000001: two S2 timestamps
        shutil.rmtree(raw / "s2c" / "0000001" / name)
    shutil.rmtree(raw / "s1" / "0000002")  # 0000002: no S1 folder
    ramp = _ramp((11, 11), 300, 7, 1000)  # 0000003: B5 one pixel short of its native 12 px (kept, resampled)
    tifffile.imwrite(raw / "s2c" / "0000003" / fx.S2_SEASON_NAMES[0] / "B5.tif", ramp)
    shutil.rmtree(raw / "s1" / "0000004" / fx.S1_SEASON_NAMES[3])  # 0000004: three S1 timestamps
    b2 = raw / "s2c" / "0000000" / fx.S2_SEASON_NAMES[3] / "B2.tif"
    values = tifffile.imread(b2)
    values[:3, :5] = 0  # 15 nodata pixels in the last season of 0000000
    tifffile.imwrite(b2, values)

    builder = _build(tmp_path / "tfds", raw, tile_size=24)
    records = _records(builder)
    assert sorted(records) == ["0000000", "0000003"]
    assert builder.info.splits["train"].num_examples == 2
    meta = builder.info.metadata
    assert {k: v["kind"] for k, v in meta["skipped"]["train"].items()} == {
        "0000001": "timestamps:2", "0000002": "s1_missing", "0000004": "s1_timestamps:3"}
    assert meta["skipped_counts"] == {"train": 3} and meta["records_written"] == {"train": 2}
    assert "s2c/0000001: 2 timestamps, expected num_seasons=4" in meta["skipped"]["train"]["0000001"]["reason"]
    assert meta["notes"]["train"]["0000003"] == [f"{fx.S2_SEASON_NAMES[0]}/B5.tif 11x11 (native 12x12) resampled to 24"]
    # The short band is on the 10 m grid: a linear ramp stays linear (interior, away from the clamped edges).
    b5 = records["0000003"]["s2"][0, ..., S2_L1C.band_index("B5")].astype(np.float64)
    rows, cols = np.mgrid[0:24, 0:24]
    ys, xs = (rows + 0.5) * 11 / 24 - 0.5, (cols + 0.5) * 11 / 24 - 0.5
    inner = (ys >= 0) & (ys <= 10) & (xs >= 0) & (xs <= 10)
    np.testing.assert_allclose(b5[inner], (1000 + 300 * ys + 7 * xs)[inner], atol=0.5)
    assert records["0000000"]["nodata_pixels"].tolist()[3] >= 15  # plus the random zeros of the fixture
    zeros = (records["0000000"]["s2"] == 0).any(-1).sum((1, 2))
    assert records["0000000"]["nodata_pixels"].tolist() == zeros.tolist()

    lines = builder.build_summary()
    assert lines[0] == ("ssl4eo_s12/l1c_t24: train: 2 of 5 locations written, 3 skipped "
                        "(timestamps:2: 1, s1_missing: 1, s1_timestamps:3: 1)")
    assert any(line.startswith("  skipped 0000002 [s1_missing]: location 0000002: no S1 folder") for line in lines)
    assert any(line.startswith("  note 0000003: ") for line in lines)
    on_disk = json.loads((pathlib.Path(builder.data_path) / "metadata.json").read_text())
    assert sorted(on_disk["skipped"]["train"]) == ["0000001", "0000002", "0000004"]


def test_num_seasons_argument_names_the_config_and_spreads_timestamps(tmp_path):
    raw = tmp_path / "raw"
    written = fx.write_ssl4eo_s12(str(raw), num_locations=2, tile_size=24, products=("s2c",))
    for name in fx.S2_SEASON_NAMES[1::2]:  # 0000001 keeps timestamps 0 and 2
        shutil.rmtree(raw / "s2c" / "0000001" / name)
    builder = _build(tmp_path / "tfds", raw, config="l1c_s2only", num_seasons=2, tile_size=24, resample="nearest")
    assert builder.builder_config.name == "l1c_s2only_seasons2_t24_nearest"
    records = _records(builder)
    for loc in ("0000000", "0000001"):  # 4 timestamps -> [0, 2]; the 2-timestamp location as it is
        rec = records[loc]
        assert rec["timestamps"].tolist() == [fx.S2_SEASON_TIMES[0], fx.S2_SEASON_TIMES[2]]
        np.testing.assert_array_equal(rec["s2"][1, ..., S2_L1C.band_index("B8")], written[loc]["s2c"][2]["B8"])
    assert builder.info.metadata["notes"]["train"]["0000000"] == ["s2: 4 timestamps, kept [0, 2]"]
    assert ssl_layout.select_timestamps(5, 4) == [0, 1, 2, 3] and ssl_layout.select_timestamps(4, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_seasons must be a positive integer"):
        Ssl4eoS12(data_dir=str(tmp_path), num_seasons=0)


def test_writer_drops_emptied_shards_and_renumbers(tmp_path):
    features = tfds.features.FeaturesDict({"x": tfds.features.Tensor(shape=(), dtype=np.int64)})
    template = writer_lib.split_template(tmp_path, "toy", "train")
    report = writer_lib.WriteReport()
    info = writer_lib.write_split(features, _ToyExamples(), 9, template, num_shards=3, num_workers=1,
                                  skip_errors=(BadRecordError,), report=report)
    assert info.shard_lengths == [3, 2]  # shard 1 (indices 3-5) was all skipped
    assert [(s.index, s.kind) for s in report.skipped] == [(3, "BadRecordError"), (4, "BadRecordError"),
                                                           (5, "BadRecordError"), (7, "BadRecordError")]
    assert report.annotations == {"train": {0: {"n": 0}, 8: {"n": 8}}}
    assert sorted(os.listdir(tmp_path)) == ["toy-train.array_record-00000-of-00002",
                                            "toy-train.array_record-00001-of-00002"]
    writer_lib.write_metadata(tmp_path, features, [info])
    source = tfds.builder_from_directory(str(tmp_path)).as_data_source(split="train")
    assert [int(source[i]["x"]) for i in range(len(source))] == [0, 1, 2, 6, 8]


class _ToyExamples:
    def __call__(self, index: int) -> dict:
        if 3 <= index <= 5 or index == 7:
            raise BadRecordError(f"bad {index}")
        example = {"x": index}
        if index in (0, 8):
            example[writer_lib.ANNOTATIONS_KEY] = {"n": index}
        return example


# ------------------------------------------------------------------ units guards

def test_units_guards_stop_with_what_and_which_config(tmp_path):
    fx.write_ssl4eo_s12(str(tmp_path / "u8"), num_locations=1, tile_size=24, products=("s2c", "s1"), eight_bit=True)
    ref = ssl_layout.list_locations(str(tmp_path / "u8"), "s2c", with_s1=True)[0]
    cfg = ssl_layout.LoadConfig(tile_size=24)
    with pytest.raises(ssl_layout.ReleaseFormatError, match=r"B\d+\.tif: stored dtype uint8 \(8-bit\), expected "
                       r"uint16 \(16-bit\): 8-bit S2 .* declared as 16-bit s2_l1c; build it with config l1c_uint8"):
        ssl_layout.load_location(ref, cfg)

    fx.write_ssl4eo_s12(str(tmp_path / "v1"), num_locations=1, tile_size=24, products=("s2c", "s1"))
    ref = ssl_layout.list_locations(str(tmp_path / "v1"), "s2c", with_s1=True)[0]
    with pytest.raises(ssl_layout.ReleaseFormatError, match=r"config reads the 8-bit compressed release "
                       r"\(s2_l1c_uint8\); for 16-bit files use config l1c"):
        ssl_layout.load_location(ref, ssl_layout.LoadConfig(tile_size=24, s2_sensor="s2_l1c_uint8",
                                                            s1_sensor="s1_grd_uint8"))
    vv = tmp_path / "v1" / "s1" / "0000000" / fx.S1_SEASON_NAMES[0] / "VV.tif"
    db = tifffile.imread(vv)
    tifffile.imwrite(vv, np.rint(db).astype(np.int16))
    with pytest.raises(ssl_layout.ReleaseFormatError, match=r"VV\.tif: stored dtype int16 \(integer\), expected "
                       r"float64: S1 of SSL4EO-S12 is float32 dB; integer S1"):
        ssl_layout.load_location(ref, cfg)
    for band in ("VV", "VH"):  # linear power instead of dB
        path = vv.parent / f"{band}.tif"
        tifffile.imwrite(path, (10 ** (db / 10)).astype(np.float32))
    with pytest.raises(ssl_layout.ReleaseFormatError, match=r"no negative value .*linear backscatter, not dB.*"
                       r"10\*log10"):
        ssl_layout.load_location(ref, cfg)

    # 8-bit values in 16-bit files: not refused by dtype, so caught by value (skipped, named).
    fx.write_ssl4eo_s12(str(tmp_path / "c"), num_locations=1, tile_size=24, products=("s2c",))
    for folder in (tmp_path / "c" / "s2c" / "0000000").iterdir():
        for band_file in folder.glob("B*.tif"):
            tifffile.imwrite(band_file, (tifffile.imread(band_file) // 40).astype(np.uint16))
    ref = ssl_layout.list_locations(str(tmp_path / "c"), "s2c", with_s1=False)[0]
    with pytest.raises(ssl_layout.LocationSkipped, match="8-bit values stored as uint16") as caught:
        ssl_layout.load_location(ref, ssl_layout.LoadConfig(tile_size=24, with_s1=False))
    assert caught.value.kind == "8bit_values"


def test_cli_units_error_is_one_line(tmp_path, capsys):
    fx.write_ssl4eo_s12(str(tmp_path / "u8"), num_locations=2, tile_size=24, products=("s2c", "s1"), eight_bit=True)
    argv = ["data", "build", "--builder", "ssl4eo_s12", "--manual-dir", str(tmp_path / "u8"), "--workers", "1",
            "--data-dir", str(tmp_path / "d"), "--builder-arg", "tile_size=24"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "declared as 16-bit s2_l1c; build it with config l1c_uint8" in err[0], err


def test_missing_codec_is_named(tmp_path, monkeypatch):
    fx.write_ssl4eo_s12(str(tmp_path), num_locations=1, tile_size=24, products=("s2c",), eight_bit=True)
    path = next((tmp_path / "s2c").rglob("B4.tif"))

    class _NoJpegSeries:
        axes = "YX"

        def asarray(self):
            raise ValueError("<COMPRESSION.JPEG: 7> requires the 'imagecodecs' package")

    real = tifffile.TiffFile

    class _TiffFile(real):
        @property
        def series(self):
            return [_NoJpegSeries()]

    monkeypatch.setattr(geotiff.tifffile, "TiffFile", _TiffFile)
    with pytest.raises(geotiff.CodecError, match=r"B4\.tif: JPEG-compressed; decoding it needs the imagecodecs "
                       r"package \(pip install imagecodecs"):
        geotiff.read_band(path, dtype=np.uint8)


# ------------------------------------------------------------------ the 8-bit compressed release

def test_uint8_jpeg_release_builds_with_its_own_specs(tmp_path):
    raw = tmp_path / "raw"
    written = fx.write_ssl4eo_s12(str(raw), num_locations=2, tile_size=24, products=("s2c", "s1"), eight_bit=True)
    with tifffile.TiffFile(next(raw.rglob("B8A.tif"))) as tif:
        assert tif.pages[0].compression.name == "JPEG"
    builder = _build(tmp_path / "tfds", raw, config="l1c_uint8", tile_size=24)
    assert builder.info.metadata["sensors"] == {"s2": "s2_l1c_uint8", "s1": "s1_grd_uint8"}
    assert "nodata_pixels" not in builder.info.features  # 0 is a clipped value there, not nodata
    records = _records(builder)
    assert sorted(records) == sorted(written)
    for loc, rec in records.items():
        assert rec["s2"].dtype == np.uint8 and rec["s1"].dtype == np.uint8 and rec["s2"].shape == (4, 24, 24, 13)
        for t in range(4):
            for band in ("B4", "B5", "B10"):  # 24, 12, 4 px decoded JPEG values on the 24 px grid
                np.testing.assert_array_equal(rec["s2"][t, ..., S2_L1C.band_index(band)],
                                              geotiff.resample(written[loc]["s2c"][t][band], (24, 24)))
            np.testing.assert_array_equal(rec["s1"][t, ..., 0], written[loc]["s1"][t]["VV"])
    info = registry.builder_info("ssl4eo_s12", str(tmp_path / "tfds"), config="l1c_uint8", tile_size=24)
    assert info["sensors"] == {"s2": "s2_l1c_uint8", "s1": "s1_grd_uint8"} and info["splits"] == {"train": 2}


def test_uint8_specs_normalise_to_the_16_bit_z_scores():
    # The release's encoding (zhu-xlab ssl4eo_dataset.py `normalize`): 2 sigma either side onto 0..255, truncated.
    rng = np.random.default_rng(0)
    for spec16, spec8 in ((S2_L1C, S2_L1C_UINT8), (S1_GRD, S1_GRD_UINT8)):
        mean, std = np.asarray(spec16.mean), np.asarray(spec16.std)
        z = rng.uniform(-1.9, 1.9, (500, spec16.num_bands))
        x = mean + z * std
        v = np.clip((x - (mean - 2 * std)) / (4 * std) * 255.0, 0, 255).astype(np.uint8)
        err = spec8.normalise(v) - spec16.normalise(x)
        assert abs(float(err.mean())) < 0.005 and float(np.abs(err).max()) < 0.5 / 63.75 + 1e-6
        assert spec8.dtype == "uint8" and spec8.bands == spec16.bands and spec8.units != spec16.units


# ------------------------------------------------------------------ SSL4EO-S12 v1.1 (zarr.zip)

def test_v11_zarr_release_builds_train_and_validation(tmp_path):
    raw = tmp_path / "ssl4eo-s12"
    written = fx.write_ssl4eo_s12_v11(str(raw), shards={"train": [["0000011", "0000012"], ["0000021", "0000022"]],
                                                        "val": [["0000091", "0000092"]]})
    # 0000022 is missing from its S1 shard: rewrite that shard without it.
    s1_shard = raw / "train" / "S1GRD" / "ssl4eos12_train_seasonal_data_000002.zarr.zip"
    fx.write_zarr_shard(str(s1_shard), "S1GRD", {"0000021": written["0000021"]["S1GRD"]}, tile_size=16)
    builder = _build(tmp_path / "tfds", tmp_path, config="v1_1_l1c", tile_size=16)
    meta = builder.info.metadata
    assert meta["sensors"] == {"s2": "s2_l1c_v11", "s1": "s1_grd_v11"}
    assert meta["split_method"] == ("release folders: train = train/S2L1C (splits/ssl4eos12_train.txt), "
                                    "validation = val/S2L1C (splits/ssl4eos12_val.txt)")
    assert {k: v["kind"] for k, v in meta["skipped"]["train"].items()} == {"0000022": "s1_missing"}
    train, val = _records(builder, "train"), _records(builder, "validation")
    assert sorted(train) == ["0000011", "0000012", "0000021"] and sorted(val) == ["0000091", "0000092"]
    for loc, rec in {**train, **val}.items():
        s2_in, s1_in = written[loc]["S2L1C"], written[loc]["S1GRD"]
        order = np.argsort(s2_in["times"])  # the last sample of each shard was stored out of time order
        assert rec["timestamps"].tolist() == sorted(s2_in["times"]) == list(fx.S2_SEASON_TIMES)
        assert rec["s2"].dtype == np.uint16 and rec["s2"].shape == (4, 16, 16, 13)
        # int16 with the +1000 offset, kept; B8A is 'B8A' between 'B08' and 'B09' as in the release.
        np.testing.assert_array_equal(rec["s2"], s2_in["bands"][order].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(rec["cloud_mask"], s2_in["cloud_mask"][order])
        s1_order = np.argsort(s1_in["times"])
        np.testing.assert_array_equal(rec["s1"], s1_in["bands"][s1_order].transpose(0, 2, 3, 1).astype(np.float32))
        np.testing.assert_allclose(rec["latlon"], s2_in["latlon"])
        assert rec["nodata_pixels"].tolist() == [0, 0, 0, 0] and rec["s2"].min() >= 1000
    l2a = _build(tmp_path / "tfds", tmp_path, config="v1_1_l2a_s2only", tile_size=16)
    rec = _records(l2a)["0000022"]  # s2-only: the sample without S1 is kept
    assert l2a.info.metadata["sensors"] == {"s2": "s2_l2a_v11"} and rec["s2"].shape == (4, 16, 16, 12)
    np.testing.assert_array_equal(rec["s2"][0, ..., 8], written["0000022"]["S2L2A"]["bands"][1, 8])  # B8A, t=0
    assert S2_L1C_V11.mean[0] - S2_L1C.mean[0] > 990 and S2_L2A_V11.units == "reflectance*10000+1000"
    assert get_sensor("s1_grd_v11").mean == (-12.577, -20.265)


def test_v11_reader_guards_and_time_decoding(tmp_path):
    cfg = ssl_layout.LoadConfig(s2_sensor="s2_l1c_v11", s1_sensor="s1_grd_v11", tile_size=8)
    written = fx.write_ssl4eo_s12_v11(str(tmp_path), shards={"train": [["0000001", "0000002"]]}, tile_size=16)
    refs, _ = zarr_layout.list_samples(str(tmp_path), "S2L1C", with_s1=True)
    _, rec = zarr_layout.load_sample(refs["train"][0], cfg)  # 16 px stored, 8 px asked: resampled and noted
    bands = written["0000001"]["S2L1C"]["bands"]
    np.testing.assert_array_equal(rec["s2"][2, ..., 3], geotiff.resample(bands[2, 3].astype(np.uint16), (8, 8)))
    assert rec["_annotations"]["notes"] == ["s2 16x16 resampled to 8", "s1 16x16 resampled to 8"]
    # Bands are matched by name: a shard storing B8A last and vh before vv reads into the specs' order.
    path = tmp_path / "train" / "S2L1C" / "ssl4eos12_train_seasonal_data_000001.zarr.zip"
    moved = [fx.V11_L1C_BANDS.index(b) for b in fx.V11_L1C_BANDS if b != "B8A"] + [fx.V11_L1C_BANDS.index("B8A")]
    s2 = {k: dict(v["S2L1C"], bands=v["S2L1C"]["bands"][:, moved]) for k, v in written.items()}
    fx.write_zarr_shard(str(path), "S2L1C", s2, tile_size=16, band_names=[fx.V11_L1C_BANDS[i] for i in moved])
    s1 = {k: dict(v["S1GRD"], bands=v["S1GRD"]["bands"][:, ::-1]) for k, v in written.items()}
    fx.write_zarr_shard(str(tmp_path / "train" / "S1GRD" / path.name), "S1GRD", s1, tile_size=16,
                        band_names=["vh", "vv"])
    zarr_layout._CACHE.clear()
    _, rec = zarr_layout.load_sample(refs["train"][0], dataclasses.replace(cfg, tile_size=16))
    np.testing.assert_array_equal(rec["s2"], bands.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(rec["s1"][..., 0], written["0000001"]["S1GRD"]["bands"][:, 0].astype(np.float32))
    # Negative S2 skips the sample; integer S1 stops the build.
    s2 = {k: dict(v["S2L1C"]) for k, v in written.items()}
    s2["0000002"]["bands"] = s2["0000002"]["bands"].copy()
    s2["0000002"]["bands"][1, 0, 0, 0] = -5
    fx.write_zarr_shard(str(path), "S2L1C", s2, tile_size=16)
    zarr_layout._CACHE.clear()
    with pytest.raises(BadRecordError, match=r"\[0000002\]: 1 negative S2 values \(min -5\)"):
        zarr_layout.load_sample(refs["train"][1], cfg)
    s1 = {k: dict(v["S1GRD"], bands=np.rint(v["S1GRD"]["bands"]).astype(np.int16)) for k, v in written.items()}
    fx.write_zarr_shard(str(tmp_path / "train" / "S1GRD" / path.name), "S1GRD", s1, tile_size=16)
    zarr_layout._CACHE.clear()
    with pytest.raises(ssl_layout.ReleaseFormatError, match=r"S1 bands are int16; .* integer S1"):
        zarr_layout.load_sample(refs["train"][0], cfg)
    with pytest.raises(ssl_layout.ReleaseFormatError, match=r"bands \['B1', .*\], the config reads s2_l2a_v11"):
        zarr_layout.load_sample(refs["train"][0], ssl_layout.LoadConfig(s2_sensor="s2_l2a_v11", with_s1=False))
    zarr_layout._CACHE.clear()
    # CF times as xarray writes them; NaT / fill -> -1.
    decode = zarr_layout.decode_times
    assert decode(np.asarray([0, 86400]), {"units": "seconds since 2020-01-01 00:00:00"}).tolist() == [
        1577836800, 1577923200]
    assert decode(np.asarray([1_600_000_000_123_456_789]), {"units": "nanoseconds since 1970-01-01"}).tolist() == [
        1600000000]
    assert decode(np.asarray([1.5, np.nan]), {"units": "days since 2020-01-01T00:00:00Z"}).tolist() == [
        1577836800 + 129600, -1]
    assert decode(np.asarray([5, -1]), {"units": "hours since 2020-01-01", "_FillValue": -1}).tolist() == [
        1577854800, -1]
    assert decode(np.asarray(["2020-01-01T00:00:10", "NaT"], "datetime64[ns]"), {}).tolist() == [1577836810, -1]
