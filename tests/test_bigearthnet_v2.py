"""BigEarthNet v2.0 (reBEN) builder on real v2 patches and on TorchGeo's v1 / v2 test fixtures.

Real data: ../shared/data/bigearthnet_v2_sample (3 real S2 patches, 3 real S1
patches, no metadata.parquet: the tests write one in the release's schema).
Peer fixtures: ../shared/data/peer_fixtures/torchgeo/bigearthnet_v{1,2}
(TorchGeo's test data: release layout, synthetic values).
"""

from __future__ import annotations

import calendar
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
import tifffile

from data_pipelines import geotiff, splits
from data_pipelines.bigearthnet import layout, layout_v2
from data_pipelines.bigearthnet.builder import Bigearthnet, detect_release
from seamo_jax import cli
from seamo_jax.sensors import S1_GRD, S2_L2A, BadRecordError

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE = SHARED / "bigearthnet_v2_sample"
PEER_V1 = SHARED / "peer_fixtures" / "torchgeo" / "bigearthnet_v1"
PEER_V2 = SHARED / "peer_fixtures" / "torchgeo" / "bigearthnet_v2"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="shared BigEarthNet v2 sample not present")
needs_peer = pytest.mark.skipif(not PEER_V2.is_dir(), reason="shared TorchGeo fixtures not present")

# File suffixes in the record's channel order (TorchGeo / ConfigILM BENv2 S2 order: B01..B08, B8A, B09, B11, B12).
S2_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
TILE_33UUP = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
TILE_34WFU = "S2A_MSIL2A_20180526T100031_N9999_R122_T34WFU"
S1_SCENE = "S1A_IW_GRDH_1SDV_20170613T165043"
# Test metadata for the real sample: (patch_id, split, labels, s1_name, snow, cloud). The sample's
# S2 and S1 patches are not real pairs; the pairing below only exercises the S1 lookup.
SAMPLE_ROWS = [
    (f"{TILE_33UUP}_75_43", "train", ["Arable land", "Pastures"], f"{S1_SCENE}_33UUP_89_36", False, False),
    (f"{TILE_33UUP}_89_18", "validation", ["Coniferous forest", "Mixed forest", "Inland waters"],
     f"{S1_SCENE}_33UUP_83_83", False, False),
    (f"{TILE_34WFU}_14_23", "test", ["Transitional woodland, shrub", "Land principally occupied by agriculture, "
                                     "with significant areas of natural vegetation"], f"{S1_SCENE}_33UUP_70_48",
     False, False),
    # On disk (a copy of 75_43) but cloudy: left out.
    (f"{TILE_33UUP}_75_44", "train", ["Urban fabric"], f"{S1_SCENE}_33UUP_89_36", False, True),
    # Not on disk: snowy (left out for snow), and clean (left out as missing).
    (f"{TILE_33UUP}_10_10", "test", ["Marine waters"], f"{S1_SCENE}_33UUP_10_10", True, False),
    (f"{TILE_33UUP}_11_11", "train", ["Marine waters"], f"{S1_SCENE}_33UUP_11_11", False, False),
]


def write_metadata(path, rows, *, full_schema=True) -> None:
    """metadata.parquet in the v2 release schema (or TorchGeo's 4-column one)."""
    columns = {
        "patch_id": [r[0] for r in rows],
        "labels": pa.array([r[2] for r in rows], pa.list_(pa.string())),
        "split": [r[1] for r in rows],
        "s1_name": [r[3] for r in rows],
    }
    if full_schema:
        columns |= {"country": ["Austria"] * len(rows), "s2v1_name": [r[0][:26] for r in rows],
                    "contains_seasonal_snow": [r[4] for r in rows], "contains_cloud_or_shadow": [r[5] for r in rows]}
    pq.write_table(pa.table(columns), str(path))


def sample_manual_dir(root: pathlib.Path, *, with_s1=True, rows=SAMPLE_ROWS) -> pathlib.Path:
    """The real sample's folders as symlinks, a cloudy copy of one patch, and a test metadata.parquet."""
    for tile in (SAMPLE / "BigEarthNet-S2").iterdir():
        (root / "BigEarthNet-S2" / tile.name).mkdir(parents=True)
        for patch in tile.iterdir():
            (root / "BigEarthNet-S2" / tile.name / patch.name).symlink_to(patch)
    copy_dir = root / "BigEarthNet-S2" / TILE_33UUP / f"{TILE_33UUP}_75_44"
    copy_dir.mkdir()
    for band in S2_FILE_ORDER:
        src = SAMPLE / "BigEarthNet-S2" / TILE_33UUP / f"{TILE_33UUP}_75_43" / f"{TILE_33UUP}_75_43_{band}.tif"
        (copy_dir / f"{TILE_33UUP}_75_44_{band}.tif").symlink_to(src)
    if with_s1:
        (root / "BigEarthNet-S1").symlink_to(SAMPLE / "BigEarthNet-S1")
    if rows is not None:
        write_metadata(root / "metadata.parquet", rows)
    return root


def build(data_dir, manual_dir, config):
    builder = Bigearthnet(data_dir=str(data_dir), config=config, num_workers=1)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder, {s: builder.as_data_source(split=s) for s in splits.SPLIT_NAMES}


def by_id(source) -> dict:
    return {source[i]["location_id"].decode(): source[i] for i in range(len(source))}


def multi_hot(names) -> np.ndarray:
    out = np.zeros(19, np.int64)
    out[[layout.LABELS_19.index(n) for n in names]] = 1
    return out


def expected_s2(patch_dir: pathlib.Path) -> np.ndarray:
    """[120, 120, 12] from the band files: 20 / 60 m bands bilinearly resampled, 10 m bands as stored."""
    bands = [tifffile.imread(patch_dir / f"{patch_dir.name}_{b}.tif") for b in S2_FILE_ORDER]
    return np.stack([geotiff.resample(b.astype(np.uint16), (120, 120)) for b in bands], -1)


@needs_sample
def test_real_v2_sample_builds_with_parquet_labels_splits_s1_and_band_order(tmp_path):
    manual = sample_manual_dir(tmp_path / "raw")
    assert detect_release(str(manual)) == "v2"
    builder, sources = build(tmp_path / "tfds", manual, "s2_s1")
    kept = {r[0]: r for r in SAMPLE_ROWS[:3]}
    assert {s: sorted(by_id(sources[s])) for s in splits.SPLIT_NAMES} == {
        r[1]: [r[0]] for r in SAMPLE_ROWS[:3]}
    from data_pipelines.features import describe_features

    names = describe_features(builder.info.features)["class_names"]  # names with commas survive (19, not 24)
    assert len(names) == 19 and "Beaches, dunes, sands" in names
    meta = builder.info.metadata
    assert meta["release"] == "BigEarthNet v2.0 (reBEN)"
    assert meta["excluded"] == {"cloud_or_shadow": 1, "s2_not_on_disk": 1, "seasonal_snow": 1}
    assert meta["excluded_examples"]["cloud_or_shadow"] == [f"{TILE_33UUP}_75_44"]
    assert meta["split_counts"] == {"train": 1, "validation": 1, "test": 1}
    for split in splits.SPLIT_NAMES:
        for patch_id, rec in by_id(sources[split]).items():
            _, _, labels, s1_name, _, _ = kept[patch_id]
            np.testing.assert_array_equal(rec["labels"], multi_hot(labels))
            patch_dir = SAMPLE / "BigEarthNet-S2" / patch_id.rsplit("_", 2)[0] / patch_id
            assert rec["s2"].shape == (1, 120, 120, 12) and rec["s2"].dtype == np.uint16
            np.testing.assert_array_equal(rec["s2"][0], expected_s2(patch_dir))
            b2 = tifffile.imread(patch_dir / f"{patch_id}_B02.tif")  # 10 m band: stored pixels, channel B2
            np.testing.assert_array_equal(rec["s2"][0, ..., S2_L2A.band_index("B2")], b2)
            s1_dir = SAMPLE / "BigEarthNet-S1" / S1_SCENE / s1_name
            vv, vh = (tifffile.imread(s1_dir / f"{s1_name}_{p}.tif") for p in ("VV", "VH"))
            assert rec["s1"].dtype == np.uint16  # dB quantised on write (sensors.S1_GRD.storage), step 0.002 dB
            np.testing.assert_allclose(S1_GRD.dequantise(rec["s1"][0]), np.stack([vv, vh], -1), rtol=0, atol=1.1e-3)
            stamp = patch_id.split("_")[2]
            assert rec["timestamps"].tolist() == [calendar.timegm((int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]),
                                                                   int(stamp[9:11]), int(stamp[11:13]),
                                                                   int(stamp[13:15])))]
    lat, lon = by_id(sources["train"])[f"{TILE_33UUP}_75_43"]["latlon"]
    assert 46 < lat < 49.5 and 9 < lon < 17.5  # T33UUP: Austria
    lat, lon = by_id(sources["test"])[f"{TILE_34WFU}_14_23"]["latlon"]
    assert lat > 64  # T34WFU: northern Finland
    # Band order carries meaning: B9 (water vapour, 945 nm) is bright over land, B1 far darker than NIR.
    s2 = by_id(sources["train"])[f"{TILE_33UUP}_75_43"]["s2"][0].astype(float)
    assert s2[..., S2_L2A.band_index("B9")].mean() > 1.5 * s2[..., S2_L2A.band_index("B1")].mean()


@needs_sample
def test_real_v2_sample_s2_only_without_s1_folder(tmp_path):
    manual = sample_manual_dir(tmp_path / "raw", with_s1=False)
    builder, sources = build(tmp_path / "tfds", manual, "s2")
    assert [len(sources[s]) for s in splits.SPLIT_NAMES] == [1, 1, 1]
    assert "s1" not in sources["train"][0]
    with pytest.raises(FileNotFoundError, match=r"config s2_s1 needs the S1 patches: no BigEarthNet-S1/ in "):
        Bigearthnet(data_dir=str(tmp_path / "tfds2"), config="s2_s1").split_refs(str(manual))


@needs_peer
def test_torchgeo_v2_fixture_builds_every_patch_and_refuses_its_integer_s1(tmp_path):
    builder, sources = build(tmp_path / "tfds", PEER_V2, "s2")
    table = pq.read_table(PEER_V2 / "metadata.parquet").to_pylist()  # 4 columns only: no flags
    assert {s: sorted(by_id(sources[s])) for s in splits.SPLIT_NAMES} == {
        s: sorted(r["patch_id"] for r in table if r["split"] == s) for s in splits.SPLIT_NAMES}
    assert builder.info.metadata["excluded"] == {}
    for row in table:
        rec = by_id(sources[row["split"]])[row["patch_id"]]
        np.testing.assert_array_equal(rec["labels"], multi_hot(row["labels"]))
        patch_dir = PEER_V2 / "BigEarthNet-S2" / row["patch_id"].rsplit("_", 2)[0] / row["patch_id"]
        # The fixture stores every band at 120 px as int16: used as stored, in S2_FILE_ORDER.
        raw = np.stack([tifffile.imread(patch_dir / f"{row['patch_id']}_{b}.tif") for b in S2_FILE_ORDER], -1)
        np.testing.assert_array_equal(rec["s2"][0], raw.astype(np.uint16))
        assert "s1" not in rec
    # s2_s1: every S1 partner is found from s1_name, but the fixture's S1 is int16 (the release: float32 dB),
    # and integer S1 files are refused (geotiff.BitDepthError), naming the file.
    refs = Bigearthnet(data_dir=str(tmp_path / "tfds_s1"), config="s2_s1").split_refs(str(PEER_V2))
    s1_names = {r["patch_id"]: r["s1_name"] for r in table}
    for ref in (r for split in refs.values() for r in split):
        s1_name = s1_names[ref.name]
        assert ref.s1_dir == str(PEER_V2 / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0] / s1_name)
        with pytest.raises(BadRecordError, match=rf"field 's1': .*{s1_name}_VV\.tif.*int16"):
            layout.load_patch(ref, layout.LoadConfig(with_s1=True))


@needs_peer
def test_torchgeo_v1_fixture_splits_traps_and_tiny_bands():
    refs = Bigearthnet(data_dir="/nonexistent", config="s2").split_refs(str(PEER_V1))
    assert {s: [r.name[-5:] for r in refs[s]] for s in splits.SPLIT_NAMES} == {
        "train": ["61_39", "61_40"], "validation": ["61_41"], "test": ["61_42"]}
    builder = Bigearthnet(data_dir="/nonexistent", config="s2_s1")
    refs = builder.split_refs(str(PEER_V1))
    # S1 folder 33UUP_61_42 holds ..._61_42_41_* files, so no S1 json names S2 patch 61_42 as its partner.
    assert [r.name[-5:] for r in refs["test"]] == [] and builder.info.metadata["excluded"] == {"no_s1_partner": 1}
    assert builder.info.metadata["release"] == "BigEarthNet v1.0"
    # Every band is 2 x 2 px (real: 120 / 60 / 20): each patch is refused naming the file.
    with pytest.raises(BadRecordError, match=r"61_39_B01\.tif, field 's2': shape \(2, 2\), expected \(20, 20\)"):
        layout.load_patch(refs["train"][0], layout.LoadConfig(with_s1=True))


@needs_sample
def test_v2_folders_without_parquet_and_no_layout_fail_in_one_line(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"BigEarthNet v2 patches are in .* but there is no metadata\.parquet"):
        detect_release(str(SAMPLE))
    wrong = tmp_path / "downloads"  # some other folder (an empty one is refused by TFDS before the builder runs)
    (wrong / "BigEarthNet-S2").mkdir(parents=True)
    (wrong / "notes.txt").write_text("x")
    for manual, expected in [(SAMPLE, "but there is no metadata.parquet in"),
                             (wrong, "no BigEarthNet release in")]:
        code = cli.main(["data", "build", "--builder", "bigearthnet", "--manual-dir", str(manual),
                         "--data-dir", str(tmp_path / "tfds")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith("seamo data build: error: ") and expected in err
        assert "--manual-dir" in err or "download it from" in err  # says what to do


@needs_sample
def test_v2_bad_metadata_is_named(tmp_path):
    rows = [r[:2] + (["Not a class"],) + r[3:] if r[1] == "train" else r for r in SAMPLE_ROWS[:3]]
    manual = sample_manual_dir(tmp_path / "labels", rows=rows)
    refs = Bigearthnet(data_dir=str(tmp_path / "t1"), config="s2").split_refs(str(manual))
    with pytest.raises(BadRecordError, match=r"metadata\.parquet, patch_id .*75_43, field 'labels': 'Not a class'"):
        layout.load_patch(refs["train"][0], layout.LoadConfig())
    manual = sample_manual_dir(tmp_path / "split", rows=[r[:1] + ("dev",) + r[2:] for r in SAMPLE_ROWS[:3]])
    with pytest.raises(ValueError, match=r"unknown split value\(s\) \['dev'\]; expected train, validation, test"):
        Bigearthnet(data_dir=str(tmp_path / "t2"), config="s2").split_refs(str(manual))
    manual = sample_manual_dir(tmp_path / "cols", rows=None)
    pq.write_table(pa.table({"patch_id": [SAMPLE_ROWS[0][0]], "split": ["train"]}), str(manual / "metadata.parquet"))
    with pytest.raises(ValueError, match=r"no column\(s\) \['labels'\]"):
        Bigearthnet(data_dir=str(tmp_path / "t3"), config="s2").split_refs(str(manual))
    write_metadata(manual / "metadata.parquet", [(f"{TILE_33UUP}_99_99",) + SAMPLE_ROWS[0][1:]])
    with pytest.raises(FileNotFoundError, match=r"none of the patches in .* is on disk as BigEarthNet-S2/<tile>/"):
        Bigearthnet(data_dir=str(tmp_path / "t4"), config="s2").split_refs(str(manual))


@needs_sample
def test_v2_snow_cloud_parquet_is_only_counted(tmp_path):
    manual = sample_manual_dir(tmp_path / "raw", rows=SAMPLE_ROWS[:3])
    # The release's second file: patches with snow / cloud, here one that is on disk.
    extra = [(f"{TILE_33UUP}_75_44", "train", ["Urban fabric"], f"{S1_SCENE}_33UUP_89_36", True, False)]
    write_metadata(manual / layout_v2.SNOW_CLOUD_FILE, extra)
    builder = Bigearthnet(data_dir=str(tmp_path / "tfds"), config="s2")
    refs = builder.split_refs(str(manual))
    assert sorted(r.name for s in refs.values() for r in s) == sorted(r[0] for r in SAMPLE_ROWS[:3])
    assert builder.info.metadata["excluded"] == {"seasonal_snow": 1}
