"""Process-local numpy batch -> global jax.Array sharded over ("data", "fsdp")."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax.data import global_batch, pipeline, testing


def _mesh(shape):
    return jax.make_mesh(shape, ("data", "fsdp", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 3)


def test_batch_sharding_spec():
    mesh = _mesh((4, 2, 1))
    sharding = global_batch.batch_sharding(mesh)
    assert sharding.spec == P(("data", "fsdp"))
    assert sharding.mesh.shape == mesh.shape


def test_to_global_batch_shapes_shardings_and_values():
    assert jax.device_count() == 8
    config = get_config("fast")  # global batch 16 on one process = 2 samples per device
    batch = next(pipeline.make_train_iterator(config, testing.make_records(16), shard_index=0, shard_count=1,
                                              seed=0))
    for shape in ((4, 2, 1), (2, 2, 2)):
        mesh = _mesh(shape)
        out = global_batch.to_global_batch(batch, global_batch.batch_sharding(mesh))
        per_device = 16 // (shape[0] * shape[1])
        for local, arr in zip(jax.tree.leaves(batch), jax.tree.leaves(out)):
            assert isinstance(arr, jax.Array)
            assert arr.shape == local.shape and arr.dtype == local.dtype
            assert arr.sharding.is_equivalent_to(global_batch.batch_sharding(mesh), arr.ndim)
            assert {s.data.shape[0] for s in arr.addressable_shards} == {per_device}
            for shard in arr.addressable_shards:
                np.testing.assert_array_equal(np.asarray(shard.data), local[shard.index])
            np.testing.assert_array_equal(np.asarray(arr), local)
        assert out["mask"].dtype == bool and out["offsets"].dtype == np.int32


def test_batch_rules_decide_the_sharding():
    mesh = _mesh((2, 2, 2))
    rows = np.arange(16, dtype=np.float32)
    # Rules that keep fsdp out of the batch: rows split over "data" only.
    out = global_batch.to_global_batch({"x": rows}, global_batch.batch_sharding(mesh, ("data",)))
    assert out["x"].sharding.spec == P(("data",))
    assert {s.data.shape[0] for s in out["x"].addressable_shards} == {8}


def _fake_hosts(per_host):
    return lambda device: device.id // per_host  # 8 devices laid out as 8 / per_host hosts


def test_loader_shard_follows_the_mesh_not_the_process_index():
    # 2 hosts x 4 devices. Data axis over hosts: each host holds its own half of the rows.
    sharding = global_batch.batch_sharding(_mesh((2, 4, 1)))
    shards = [global_batch.loader_shard(sharding, p, process_of=_fake_hosts(4)) for p in (0, 1)]
    assert shards == [global_batch.LoaderShard(0, 2), global_batch.LoaderShard(1, 2)]
    # The model axis spans both hosts (data=1): both hold every row, so both load the same records.
    sharding = global_batch.batch_sharding(_mesh((1, 1, 8)))
    shards = [global_batch.loader_shard(sharding, p, process_of=_fake_hosts(4)) for p in (0, 1)]
    assert shards == [global_batch.LoaderShard(0, 1), global_batch.LoaderShard(0, 1)]
    # 4 hosts x 2 devices with model=2 inside a host and data=4 over hosts: 4 distinct shards.
    sharding = global_batch.batch_sharding(_mesh((4, 1, 2)))
    assert [global_batch.loader_shard(sharding, p, process_of=_fake_hosts(2)).index for p in range(4)] == [0, 1, 2, 3]
    # model=4 spanning pairs of 2-device hosts: hosts (0, 1) share rows, as do (2, 3).
    sharding = global_batch.batch_sharding(_mesh((2, 1, 4)))
    assert [global_batch.loader_shard(sharding, p, process_of=_fake_hosts(2)) for p in range(4)] == [
        global_batch.LoaderShard(0, 2), global_batch.LoaderShard(0, 2),
        global_batch.LoaderShard(1, 2), global_batch.LoaderShard(1, 2)]


def test_loader_shard_rejects_interleaved_hosts():
    sharding = global_batch.batch_sharding(_mesh((8, 1, 1)))
    with pytest.raises(ValueError, match="not one contiguous block"):
        global_batch.loader_shard(sharding, 0, process_of=lambda d: d.id % 2)
