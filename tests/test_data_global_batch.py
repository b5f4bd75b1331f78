"""Process-local numpy batch -> global jax.Array sharded over ("data", "fsdp")."""
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from experiments.demo_cpu import get_config
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
    batch = next(pipeline.make_train_iterator(config, testing.make_records(16), process_index=0, process_count=1,
                                              seed=0))
    for shape in ((4, 2, 1), (2, 2, 2)):
        mesh = _mesh(shape)
        out = global_batch.to_global_batch(batch, mesh)
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
