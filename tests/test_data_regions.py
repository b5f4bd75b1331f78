"""Train pipeline: region selection/reading keys, season_ids, data.fraction (issue 15 item 4)."""
import math

import numpy as np
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import sensors
from seamo_jax.configs import load_config_file
from seamo_jax.data import crops, pipeline, records, testing


def _config(batch_size=8, **data):
    config = get_config("fast")
    config.data.views = "host"  # checks the views the input pipeline makes
    config.data.batch_size = batch_size
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def _season_coded_records(num, seasons=4, tile=48):
    """s2 of season s of record i is constant 1000 * (s + 1) + i: survives crop, resize, flip, normalise."""
    recs = testing.make_records(num, seed=0, num_seasons=seasons, tile_size=tile)
    for i, record in enumerate(recs):
        for s in range(seasons):
            record["s2"][s] = 1000 * (s + 1) + i
    return recs


def _codes(batch):
    """[B, S] the constant s2 value of every view."""
    return np.rint(sensors.S2_L1C.denormalise(batch["views"]["s2"])[:, :, 5, 7, 1]).astype(int)


def _batches(config, source, num, **kwargs):
    it = pipeline.make_train_iterator(config, source, shard_index=kwargs.pop("shard_index", 0),
                                      shard_count=kwargs.pop("shard_count", 1), seed=0, **kwargs)
    return [next(it) for _ in range(num)]


def test_season_ids_name_the_drawn_seasons():
    config = _config(seasons=2, season_subsample=True)
    for batch in _batches(config, _season_coded_records(16), 3):
        ids = batch["season_ids"]
        assert ids.shape == (8, 2) and ids.dtype == np.int32
        assert (np.diff(ids, axis=1) > 0).all() and ids.min() >= 0 and ids.max() <= 3  # time order kept
        np.testing.assert_array_equal(_codes(batch) // 1000 - 1, ids)
    assert len({tuple(r) for b in _batches(config, _season_coded_records(16), 3) for r in b["season_ids"]}) > 2


def test_season_ids_without_subsampling_are_arange():
    batch = _batches(_config(seasons=3), _season_coded_records(16), 1)[0]
    np.testing.assert_array_equal(batch["season_ids"], np.tile(np.arange(3, dtype=np.int32), (8, 1)))
    np.testing.assert_array_equal(_codes(batch) // 1000 - 1, batch["season_ids"])


@pytest.mark.parametrize("selection", ["same", "partial", "disjoint"])
def test_crop_area_batches_carry_scales(selection):
    config = _config(region_reading="crop_area", region_selection=selection)
    batch = _batches(config, _season_coded_records(16, tile=48), 1)[0]
    assert set(batch) == {"views", "offsets", "mask", "season_ids", "scales"}
    scales = batch["scales"]
    assert scales.shape == (8, 4) and scales.dtype == np.float32
    sides = np.rint(scales * 32).astype(int)
    np.testing.assert_allclose(sides, scales * 32, atol=1e-4)  # whole-pixel windows
    assert (batch["offsets"] >= 0).all() and (batch["offsets"] + sides[..., None] <= 48).all()
    assert batch["views"]["s2"].shape == (8, 4, 32, 32, 13)
    np.testing.assert_array_equal(_codes(batch) // 1000 - 1, np.tile(np.arange(4), (8, 1)))  # resized, still coded
    for offsets, size in zip(batch["offsets"], sides):
        overlaps = crops.pairwise_overlaps(offsets, size)[np.triu_indices(4, 1)]
        if selection == "same":
            assert (overlaps == 1).all()
        elif selection == "disjoint":
            assert (overlaps == 0).all()
        else:
            assert (overlaps >= 0.5 - 1e-9).all()


def test_overlap_reading_region_selections_in_pipeline():
    recs = _season_coded_records(16, tile=64)
    same = _batches(_config(region_selection="same"), recs, 1)[0]
    assert (same["offsets"] == same["offsets"][:, :1]).all() and "scales" not in same
    disjoint = _batches(_config(region_selection="disjoint"), recs, 1)[0]
    for offsets in disjoint["offsets"]:
        assert (crops.pairwise_overlaps(offsets, 32)[np.triu_indices(4, 1)] == 0).all()
    # 32-px windows of 40-px tiles overlap >= 0.5625: asking for 0.5 is an error naming the sizes.
    with pytest.raises(ValueError, match=r"lowest overlap 0\.5625 two 32px windows can have in a 40x40 tile"):
        _batches(_config(), _season_coded_records(16, tile=40), 1)
    with pytest.raises(ValueError, match="region_selection must be one of"):
        _batches(_config(region_selection="overlapping"), recs, 1)


def test_fraction_indices_are_a_fixed_nested_subset():
    a = records.fraction_indices(1000, 0.25, seed=0)
    assert a.dtype == np.int64 and len(a) == 250 and (np.diff(a) > 0).all() and a.max() < 1000
    np.testing.assert_array_equal(a, records.fraction_indices(1000, 0.25, seed=0))
    assert not np.array_equal(a, records.fraction_indices(1000, 0.25, seed=1))
    assert set(records.fraction_indices(1000, 0.1, seed=0)) <= set(a) <= set(records.fraction_indices(1000, 0.5))
    assert len(records.fraction_indices(10, 0.25)) == math.ceil(2.5) == 3
    assert len(records.fraction_indices(10, 1e-6)) == 1
    np.testing.assert_array_equal(records.fraction_indices(7, 1.0), np.arange(7))
    assert not np.array_equal(a, np.arange(250))  # a random subset, not the first records
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            records.fraction_indices(10, bad)


def test_fraction_trains_on_the_same_subset_on_every_process():
    recs = _season_coded_records(40)
    subset = records.fraction_indices(40, 0.25, seed=3)  # 10 records, 5 per process
    config = _config(batch_size=4, fraction=0.25, fraction_seed=3)
    seen = []
    for process in range(2):
        source = testing.RecordingSource(recs)
        ids = [int(c) % 1000 for b in _batches(config, source, 5, shard_index=process, shard_count=2)
               for c in _codes(b)[:, 0]]  # 10 samples = 2 epochs of this process's 5 records
        assert source.read <= set(subset.tolist())
        assert sorted(ids[:5]) == sorted(ids[5:]) and len(set(ids)) == 5
        seen += ids[:5]
    assert sorted(seen) == subset.tolist()
    # Bad records are still named by their index in the full source.
    assert records.IndexedSource(recs, indices=subset)[1][records.SOURCE_INDEX_KEY] == subset[1]


def test_ssl4eo_configs_build_batches_on_264px_tiles():
    from test_train_helpers import REPO
    recs = testing.make_records(4, seed=0, num_seasons=4, tile_size=264)
    for arg, seasons in (("phase1", 1), ("phase2", 4)):
        config = load_config_file(f"{REPO / 'experiments' / 'seamo_vitb_ssl4eo.py'}:{arg}")
        config.data.views = "host"  # checks the views the input pipeline makes
        assert config.data.fraction == (0.25 if arg == "phase1" else 1.0)
        config.data.batch_size, config.data.worker_count = 2, 0
        batch = _batches(config, recs, 1)[0]
        assert batch["views"]["s2"].shape == (2, seasons, 224, 224, 13)
        assert batch["season_ids"].shape == (2, seasons) and batch["scales"].shape == (2, seasons)
        assert (batch["season_ids"] < 4).all()
        if arg == "phase2":
            np.testing.assert_array_equal(batch["season_ids"], np.tile(np.arange(4), (2, 1)))
