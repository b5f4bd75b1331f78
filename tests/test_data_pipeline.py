"""Grain train pipeline: batch contract, determinism, sharding, epochs, resume; eval arrays."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import sensors
from seamo_jax.data import pipeline, testing


def _config(batch_size=8):
    config = get_config("fast")
    config.data.views = "host"  # checks the views the input pipeline makes
    config.data.batch_size = batch_size
    config.data.overlap_range = (0.6, 1.0)  # two 32-px windows of the 40-px test tiles overlap >= 0.5625
    return config


def _id_records(num):
    """Records whose s2 pixels all equal the record id, so ids survive crop/flip/normalise."""
    recs = testing.make_records(num, seed=0, tile_size=40)
    for i, record in enumerate(recs):
        record["s2"][...] = i
    return recs


def _ids(batch):
    s2 = sensors.S2_L1C.denormalise(batch["views"]["s2"])[:, 0, 0, 0, 1]
    return np.rint(s2).astype(int).tolist()


def _assert_equal_batches(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_batch_contract():
    config = _config()
    batch = next(pipeline.make_train_iterator(config, testing.make_records(16), shard_index=0, shard_count=1,
                                              seed=0))
    assert set(batch) == {"views", "offsets", "mask", "season_ids"}
    np.testing.assert_array_equal(batch["season_ids"], np.tile(np.arange(4, dtype=np.int32), (8, 1)))
    assert batch["season_ids"].dtype == np.int32
    assert batch["views"]["s2"].shape == (8, 4, 32, 32, 13) and batch["views"]["s2"].dtype == np.float32
    assert batch["views"]["s1"].shape == (8, 4, 32, 32, 2) and batch["views"]["s1"].dtype == np.float32
    assert batch["offsets"].shape == (8, 4, 2) and batch["offsets"].dtype == np.int32
    assert batch["mask"].shape == (8, 4, 2, 16) and batch["mask"].dtype == bool
    assert (batch["mask"].sum(-1) == 12).all()
    assert (batch["offsets"] >= 0).all() and (batch["offsets"] <= 48 - 32).all()
    # Normalised: roughly zero-mean unit-scale, not raw reflectances.
    assert abs(float(batch["views"]["s1"].mean())) < 1.0


def test_modality_dropout_adds_flags():
    config = _config()
    config.data.modality_dropout = 1.0
    batch = next(pipeline.make_train_iterator(config, testing.make_records(16), shard_index=0, shard_count=1,
                                              seed=0))
    assert batch["modality_dropped"].shape == (8, 2) and (batch["modality_dropped"].sum(1) == 1).all()
    for i, m in enumerate(("s2", "s1")):
        assert (batch["views"][m][batch["modality_dropped"][:, i]] == 0).all()


def test_deterministic_by_seed():
    recs = testing.make_records(16)
    make = lambda seed: pipeline.make_train_iterator(_config(), recs, shard_index=0, shard_count=1, seed=seed)
    a, b, c = make(0), make(0), make(1)
    for _ in range(3):
        batch_a, batch_b, batch_c = next(a), next(b), next(c)
        _assert_equal_batches(batch_a, batch_b)
    assert not np.array_equal(batch_a["offsets"], batch_c["offsets"])


def test_epochs_are_reshuffled_permutations():
    it = pipeline.make_train_iterator(_config(batch_size=4), _id_records(16), shard_index=0, shard_count=1,
                                      seed=0)
    epoch1 = sum((_ids(next(it)) for _ in range(4)), [])
    epoch2 = sum((_ids(next(it)) for _ in range(4)), [])
    assert sorted(epoch1) == sorted(epoch2) == list(range(16))
    assert epoch1 != epoch2 and epoch1 != list(range(16))


def test_each_process_reads_only_its_shard():
    recs = _id_records(17)  # 17 % 2 = 1 record dropped so both processes have 8
    seen = []
    for process in range(2):
        source = testing.RecordingSource(recs)
        it = pipeline.make_train_iterator(_config(batch_size=8), source, shard_index=process, shard_count=2,
                                          seed=0)
        ids = sum((_ids(next(it)) for _ in range(4)), [])  # local batch 4 -> 2 epochs
        assert source.read <= set(range(process * 8, process * 8 + 8))
        assert sorted(ids[:8]) == list(range(process * 8, process * 8 + 8))
        seen.append(next(it)["mask"])
    assert not np.array_equal(seen[0], seen[1])  # augmentation RNG differs per process


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # spawning workers ~10-25 s
def test_resume_from_state_is_bitwise_identical(workers):
    config = _config()
    config.data.worker_count = workers
    recs = testing.make_records(24, tile_size=40)
    it = pipeline.make_train_iterator(config, recs, shard_index=0, shard_count=1, seed=3)
    for _ in range(3):  # crosses the first epoch boundary (24 records / 8)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    restored = pipeline.make_train_iterator(config, recs, shard_index=0, shard_count=1, seed=3)
    restored.set_state(state)
    for want in expected:
        _assert_equal_batches(next(restored), want)
    if workers:
        it.close()
        restored.close()


def test_orbax_composite_round_trip(tmp_path):
    config = _config()
    recs = testing.make_records(24, tile_size=40)
    it = pipeline.make_train_iterator(config, recs, shard_index=0, shard_count=1, seed=0)
    next(it), next(it)
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    checkpointer.save(tmp_path / "ckpt", args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    expected = [next(it) for _ in range(3)]
    restored = pipeline.make_train_iterator(config, recs, shard_index=0, shard_count=1, seed=0)
    out = checkpointer.restore(tmp_path / "ckpt", args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(restored)))
    for want in expected:
        _assert_equal_batches(next(out["data"]), want)


def test_array_record_on_disk(tmp_path):
    recs = testing.make_records(12, tile_size=40)
    paths = testing.write_array_record_shards(str(tmp_path), recs, num_shards=3)
    on_disk = pipeline.make_train_iterator(_config(), testing.ArrayRecordSource(paths), shard_index=0,
                                           shard_count=1, seed=0)
    in_memory = pipeline.make_train_iterator(_config(), recs, shard_index=0, shard_count=1, seed=0)
    _assert_equal_batches(next(on_disk), next(in_memory))


def test_eval_arrays():
    config = _config()
    recs = testing.make_records(10)
    arrays = pipeline.make_eval_arrays(config, recs, num_examples=6)
    again = pipeline.make_eval_arrays(config, recs, num_examples=6)
    _assert_equal_batches(arrays, again)
    assert arrays["views"]["s2"].shape == (6, 4, 32, 32, 13)
    np.testing.assert_array_equal(arrays["offsets"], np.full((6, 4, 2), 8))
    np.testing.assert_array_equal(arrays["label"], [0, 1, 2, 3, 0, 1])
    assert arrays["label"].dtype == np.int32
    np.testing.assert_array_equal(arrays["raw_views"]["s2"][2], recs[2]["s2"][:, 8:40, 8:40].astype(np.float32))
    np.testing.assert_array_equal(arrays["views"]["s1"], sensors.S1_GRD.normalise(arrays["raw_views"]["s1"]))
    full = pipeline.make_eval_arrays(config, recs, num_examples=2, crop="full", seasons=1, modalities=("s2",))
    assert full["views"]["s2"].shape == (2, 1, 48, 48, 13) and set(full["views"]) == {"s2"}
