"""Mesh construction, logical rules and born-sharded params on 8 fake CPU devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from seamo_jax import parallel

RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "model"), ("heads", "model"), ("kv", None))


def mesh_config(shape, axes=("data", "fsdp", "model")):
    cfg = ml_collections.ConfigDict()
    cfg.shape = shape
    cfg.axes = axes
    return cfg


class TwoLayerMlp(nn.Module):
    """Small annotated module: kernels [embed, mlp] and [mlp, embed]."""

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.lecun_normal()
        w1 = self.param("w1", nn.with_logical_partitioning(init, ("embed", "mlp")), (8, 16))
        b1 = self.param("b1", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (16,))
        w2 = self.param("w2", nn.with_logical_partitioning(init, ("mlp", "embed")), (16, 8))
        h = nn.with_logical_constraint(jax.nn.gelu(x @ w1 + b1), ("batch", "mlp"))
        return h @ w2


def test_fill_axis_uses_remaining_devices():
    mesh = parallel.make_mesh(mesh_config((-1, 1, 1)))
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "model": 1}
    mesh = parallel.make_mesh(mesh_config((2, -1, 2)))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_explicit_devices_subset():
    mesh = parallel.make_mesh(mesh_config((-1, 2, 1)), devices=jax.devices()[:4])
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 1}
    assert mesh.devices.size == 4


@pytest.mark.parametrize("shape, message", [
    ((3, 1, 1), "needs 3 devices"),
    ((-1, -1, 1), "at most one axis"),
    ((-1, 3, 1), "multiple of 3"),
    ((2, 2), "has 2 entries"),
    ((0, -1, 1), "positive or -1"),
])
def test_bad_mesh_shapes_raise_clear_errors(shape, message):
    with pytest.raises(parallel.MeshConfigError, match=message):
        parallel.make_mesh(mesh_config(shape))


def test_rules_validation():
    mesh = parallel.make_mesh(mesh_config((2, 2, 2)))
    rules = parallel.logical_rules([("batch", ["data", "fsdp"]), ("embed", ("fsdp",)), ("kv", None)], mesh)
    assert rules == (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("kv", None))
    with pytest.raises(parallel.ShardingRulesError, match="not in the mesh"):
        parallel.logical_rules([("embed", "tensor")], mesh)
    with pytest.raises(parallel.ShardingRulesError, match="more than one"):
        parallel.logical_rules([("embed", "fsdp"), ("embed", None)], mesh)
    assert parallel.batch_mesh_axes(rules) == ("data", "fsdp")


def test_params_born_sharded_and_batch_sharded():
    mesh = parallel.make_mesh(mesh_config((2, 2, 2)))
    rules = parallel.logical_rules(RULES, mesh)
    model = TwoLayerMlp()
    x = jnp.ones((8, 8))
    params, shardings = parallel.sharded_init(lambda key: model.init(key, x)["params"], mesh, rules,
                                              jax.random.key(0))
    assert params["w1"].sharding.spec == P("fsdp", "model")
    assert params["b1"].sharding.spec == P("model")
    assert params["w2"].sharding.spec == P("model", "fsdp")
    assert parallel.shardings_match(params, shardings)
    # Each device holds a quarter of w1 (fsdp=2 x model=2).
    assert {s.data.shape for s in params["w1"].addressable_shards} == {(4, 8)}
    # Same values as an unsharded init: sharding must not change the numbers.
    plain = nn.meta.unbox(model.init(jax.random.key(0), x)["params"])
    np.testing.assert_array_equal(np.asarray(params["w1"]), np.asarray(plain["w1"]))

    batch = jax.device_put(np.arange(8 * 8, dtype=np.float32).reshape(8, 8), parallel.batch_sharding(mesh))
    assert batch.sharding.spec == P(("data", "fsdp"))
    assert {s.data.shape for s in batch.addressable_shards} == {(2, 8)}


def test_optimizer_state_sharded_like_params():
    import optax
    mesh = parallel.make_mesh(mesh_config((2, 2, 2)))
    rules = parallel.logical_rules(RULES, mesh)
    model = TwoLayerMlp()
    params, shardings = parallel.sharded_init(lambda key: model.init(key, jnp.ones((8, 8)))["params"], mesh, rules,
                                              jax.random.key(0))
    tx = optax.adamw(1e-3)
    abstract = jax.eval_shape(tx.init, params)
    opt_shardings = parallel.like_params_shardings(abstract, shardings, mesh)
    mu = opt_shardings[0].mu
    assert mu["w1"].spec == P("fsdp", "model")
    assert opt_shardings[0].count.spec == P()
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    assert opt_state[0].nu["w2"].sharding.spec == P("model", "fsdp")
