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


# ---- multi-slice (ICI x DCN) meshes: config.mesh.dcn_shape ----

import dataclasses  # noqa: E402


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What mesh_utils reads from a device (id, platform, device_kind, process/slice index, TPU coords)."""

    id: int
    process_index: int
    slice_index: int | None = None
    coords: tuple = (0, 0, 0)
    core_on_chip: int = 0
    platform: str = "tpu"
    device_kind: str = "TPU v4"


def tpu_slices(num_slices, dims=(2, 2, 1), hosts_per_slice=1):
    """num_slices TPU v4 slices of dims chips each, hosts_per_slice processes per slice."""
    devices, chips = [], int(np.prod(dims))
    for s in range(num_slices):
        for n, (z, y, x) in enumerate(np.ndindex(dims[2], dims[1], dims[0])):
            devices.append(FakeDevice(id=len(devices), process_index=s * hosts_per_slice + n * hosts_per_slice // chips,
                                      slice_index=s, coords=(x, y, z)))
    return devices


def gpu_nodes(num_nodes, gpus_per_node, processes_per_node=1):
    per_process = gpus_per_node // processes_per_node
    return [FakeDevice(id=i, process_index=i // per_process, platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
            for i in range(num_nodes * gpus_per_node)]


def uneven_slices():
    """Slice 0 with 4 chips, slice 1 with 8."""
    return tpu_slices(1) + [dataclasses.replace(d, id=d.id + 4, slice_index=1) for d in tpu_slices(1, (4, 2, 1))]


def hybrid_config(shape, dcn_shape, **kwargs):
    cfg = mesh_config(shape)
    cfg.dcn_shape = dcn_shape
    for key, value in kwargs.items():
        cfg[key] = value
    return cfg


def slice_of(array, key="slice_index"):
    return np.vectorize(lambda d: getattr(d, key))(array)


def assert_axes_inside_slices(array, axes, key="slice_index", inside=("fsdp", "model"), spanning=("data",)):
    """Every group along an `inside` axis lies in one slice; each `spanning` axis crosses slices."""
    slices = slice_of(array, key)
    for name in inside:
        groups = np.moveaxis(slices, axes.index(name), -1).reshape(-1, slices.shape[axes.index(name)])
        assert all(len(set(g)) == 1 for g in groups), (name, slices)
    for name in spanning:  # every group along the axis reaches every slice
        groups = np.moveaxis(slices, axes.index(name), -1).reshape(-1, slices.shape[axes.index(name)])
        assert all(set(g) == set(slices.ravel()) for g in groups), (name, slices)


AXES = ("data", "fsdp", "model")


@pytest.mark.parametrize("ici, num_slices, dims, want", [
    ((1, -1, 1), 2, (2, 2, 1), (2, 4, 1)),   # pure FSDP inside each slice, data over slices
    ((1, 2, 2), 2, (2, 2, 1), (2, 2, 2)),    # FSDP x tensor parallel inside a slice
    ((-1, 4, 1), 2, (2, 4, 1), (4, 4, 1)),   # data inside and across slices
    ((1, -1, 1), 4, (4, 4, 1), (4, 16, 1)),  # 4 slices of 16 chips (dcn_shape (-1, 1, 1))
])
def test_hybrid_mesh_keeps_fsdp_and_model_inside_a_slice(ici, num_slices, dims, want):
    devices = tpu_slices(num_slices, dims, hosts_per_slice=2)
    array = parallel.hybrid_device_array(hybrid_config(ici, (-1, 1, 1)), devices)
    assert array.shape == want
    assert sorted(d.id for d in array.ravel()) == list(range(len(devices)))
    assert_axes_inside_slices(array, AXES)
    # Along data, the outer index is the slice: slice k holds rows [k * ici_data, (k + 1) * ici_data).
    per_slice = want[0] // num_slices
    np.testing.assert_array_equal(slice_of(array)[:, 0, 0], np.repeat(np.arange(num_slices), per_slice))


def test_dcn_on_fsdp_or_model_needs_explicit_permission():
    devices = tpu_slices(2)
    for dcn, axis in (((1, 2, 1), "fsdp"), ((1, 1, 2), "model")):
        with pytest.raises(parallel.MeshConfigError, match=rf"puts {axis} over 2 slices.*config.mesh.dcn_axes"):
            parallel.hybrid_device_array(hybrid_config((1, -1, 1), dcn), devices)
    array = parallel.hybrid_device_array(hybrid_config((1, -1, 1), (1, 2, 1), dcn_axes=("data", "fsdp")), devices)
    assert array.shape == (1, 8, 1)
    assert set(slice_of(array)[0, :, 0]) == {0, 1}  # allowed: fsdp now spans the slices


@pytest.mark.parametrize("cfg_kwargs, devices, message", [
    (dict(shape=(1, -1, 1), dcn_shape=(4, 1, 1)), tpu_slices(2), r"dcn_shape \(4, 1, 1\).*needs 4 slices, but 2"),
    (dict(shape=(1, -1, 1), dcn_shape=(2, 1)), tpu_slices(2), r"dcn_shape \(2, 1\) has 2 entries"),
    (dict(shape=(1, 3, 1), dcn_shape=(2, 1, 1)), tpu_slices(2), r"inside one slice.*needs 3 devices, but 4"),
    (dict(shape=(1, -1, 1), dcn_shape=(2, 1, 1)), uneven_slices(), r"different device counts \[4, 8\]"),
    (dict(shape=(1, -1, 1), dcn_shape=(2, 1, 1), slice_granularity="slice"), gpu_nodes(2, 4), r"has no slice_index"),
    (dict(shape=(1, -1, 1), dcn_shape=(2, 1, 1), devices_per_slice=3), gpu_nodes(2, 4), r"does not divide"),
    (dict(shape=(1, -1, 1), dcn_shape=(2, 1, 1), slice_granularity="node"), gpu_nodes(2, 4), r"must be 'auto'"),
])
def test_hybrid_mesh_errors(cfg_kwargs, devices, message):
    cfg = hybrid_config(cfg_kwargs.pop("shape"), cfg_kwargs.pop("dcn_shape"), **cfg_kwargs)
    with pytest.raises(parallel.MeshConfigError, match=message):
        parallel.hybrid_device_array(cfg, devices)


def test_gpu_nodes_are_slices_by_process_or_device_count():
    # One process per 8-GPU node: "auto" = one process is one slice.
    array = parallel.hybrid_device_array(hybrid_config((1, -1, 1), (2, 1, 1)), gpu_nodes(2, 8))
    assert array.shape == (2, 8, 1)
    assert_axes_inside_slices(array, AXES, key="process_index")
    # One process per GPU: "8" devices make a slice (node), fsdp stays inside a node.
    array = parallel.hybrid_device_array(hybrid_config((1, -1, 2), (-1, 1, 1), devices_per_slice=8),
                                         gpu_nodes(3, 8, processes_per_node=8))
    assert array.shape == (3, 4, 2)
    node = np.vectorize(lambda d: d.process_index // 8)(array)
    assert all(len(set(node[i].ravel())) == 1 for i in range(3)) and sorted(node[:, 0, 0]) == [0, 1, 2]


def test_make_mesh_multi_slice_on_cpu_devices():
    cfg = hybrid_config((1, -1, 1), (2, 1, 1), devices_per_slice=4)
    mesh = parallel.make_mesh(cfg)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "model": 1}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    ids = np.vectorize(lambda d: d.id)(mesh.devices)
    assert set(ids[0].ravel()) == {0, 1, 2, 3} and set(ids[1].ravel()) == {4, 5, 6, 7}
    batch = jax.device_put(np.arange(16, dtype=np.float32).reshape(16, 1), parallel.batch_sharding(mesh))
    assert {s.data.shape for s in batch.addressable_shards} == {(2, 1)}
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda x: x * 2)(batch)), np.arange(16).reshape(16, 1) * 2)
    # dcn_shape of ones (or None) is the single-slice mesh of jax.make_mesh.
    for single in ((1, 1, 1), None):
        mesh = parallel.make_mesh(hybrid_config((2, -1, 1), single))
        assert mesh.devices.tolist() == parallel.make_mesh(mesh_config((2, -1, 1))).devices.tolist()
