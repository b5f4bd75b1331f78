"""Record validation, bad-record skipping/counting, and shard-naming read errors."""
import os

import numpy as np
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import sensors
from seamo_jax.data import pipeline, records, testing
from seamo_jax.sensors import BadRecordError

SPECS = {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD}


def test_validate_record_accepts_good_and_names_bad_fields():
    record = testing.make_record(np.random.default_rng(0))
    records.validate_record(record, SPECS, record_id="7", min_seasons=4)
    l2a = testing.make_record(np.random.default_rng(0), s2_bands=12)
    with pytest.raises(BadRecordError, match=r"record '7', field 's2'.*12 bands.*s2_l2a"):
        records.validate_record(l2a, SPECS, record_id="7")
    nan = testing.make_record(np.random.default_rng(0))
    nan["s1"][1, 2, 3, 0] = np.nan
    with pytest.raises(BadRecordError, match=r"field 's1'.*1 non-finite"):
        records.validate_record(nan, SPECS, record_id="7")
    mismatch = dict(record, s1=record["s1"][:, :40])
    with pytest.raises(BadRecordError, match="spatial shape"):
        records.validate_record(mismatch, SPECS, record_id="7")
    with pytest.raises(BadRecordError, match="need >= 4"):
        records.validate_record(dict(record, s2=record["s2"][:2], s1=record["s1"][:2]), SPECS, record_id="7",
                                min_seasons=4)
    with pytest.raises(BadRecordError, match="missing field 's1'"):
        records.validate_record({"s2": record["s2"]}, SPECS, record_id="7")


def _source_with_bad(num=32, bad=(3, 17)):
    recs = testing.make_records(num, seed=0)
    for i in bad:
        recs[i]["s1"][0, 0, 0, 1] = np.nan
    return recs


def test_bad_record_raises_naming_index():
    config = get_config("fast")
    config.data.views = "host"  # checks the views the input pipeline makes
    it = pipeline.make_train_iterator(config, _source_with_bad(), shard_index=0, shard_count=1, seed=0)
    with pytest.raises(BadRecordError, match=r"record '(3|17) location loc(3|17)'"):
        for _ in range(4):
            next(it)


def test_skip_bad_records_counts_and_checkpoints_the_count():
    config = get_config("fast")
    config.data.views = "host"  # checks the views the input pipeline makes
    config.data.skip_bad_records = True
    it = pipeline.make_train_iterator(config, _source_with_bad(), shard_index=0, shard_count=1, seed=0)
    batches = [next(it) for _ in range(4)]  # 64 good samples = 2 epochs of 30 good + 4
    assert it.bad_records_skipped >= 4
    assert it.get_state()["bad_records_skipped"] == it.bad_records_skipped
    for batch in batches:
        assert set(batch) == {"views", "offsets", "mask", "season_ids"}
        assert all(np.isfinite(v).all() for v in batch["views"].values())


def test_eval_arrays_skip_or_raise():
    config = get_config("fast")
    config.data.views = "host"  # checks the views the input pipeline makes
    with pytest.raises(BadRecordError, match="record '3"):
        pipeline.make_eval_arrays(config, _source_with_bad())
    config.data.skip_bad_records = True
    arrays = pipeline.make_eval_arrays(config, _source_with_bad())
    assert arrays["num_skipped"] == 2 and len(arrays["label"]) == 30
    assert 3 not in arrays["source_index"] and 17 not in arrays["source_index"]


def test_truncated_and_corrupt_shards_are_named(tmp_path):
    recs = testing.make_records(8, seed=0, tile_size=16)
    paths = testing.write_array_record_shards(str(tmp_path), recs, num_shards=2)
    source = testing.ArrayRecordSource(paths, counts=[4, 4])
    indexed = records.IndexedSource(source)
    np.testing.assert_array_equal(indexed[5]["s2"], recs[5]["s2"])
    assert indexed[5][records.SOURCE_INDEX_KEY] == 5
    records.verify_array_record_shards(source)  # intact: no error

    data = open(paths[1], "rb").read()
    with open(paths[1], "wb") as f:
        f.write(data[: len(data) // 2])
    source = testing.ArrayRecordSource(paths, counts=[4, 4])
    indexed = records.IndexedSource(source)
    indexed[1]  # shard 0 still reads
    with pytest.raises(records.CorruptShardError, match=r"record 6 from shard .*00001-of-00002"):
        indexed[6]
    with pytest.raises(records.CorruptShardError, match=r"shard .*00001-of-00002.*(truncated|Riegeli)"):
        records.verify_array_record_shards(source)

    # Corrupt bytes in the middle of shard 0 (file length intact): reading names the shard.
    data = bytearray(open(paths[0], "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = os.urandom(64)
    open(paths[0], "wb").write(bytes(data))
    indexed = records.IndexedSource(testing.ArrayRecordSource(paths, counts=[4, 4]))
    with pytest.raises(records.CorruptShardError, match=r"shard .*00000-of-00002"):
        for i in range(4):
            indexed[i]
