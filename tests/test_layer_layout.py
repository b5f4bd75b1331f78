"""Scanned <-> unrolled block layouts (models/layer_layout.py) and layout-independent checkpoints."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import parallel
from seamo_jax.models import build_model, example_batch, layer_layout
from seamo_jax.train import checkpoint as ckpt_lib

IN_CHANS = {"s2": 13, "s1": 2}


def _model(scan_layers):
    config = get_config().model
    config.scan_layers = scan_layers
    return build_model(config, modalities=("s2", "s1"), in_chans=IN_CHANS, num_seasons=2, image_size=32, mask_ratio=0.75)


def _shapes(tree):
    return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


@pytest.fixture(scope="module")
def models_and_params():
    unrolled, scanned = _model(False), _model(True)
    batch = example_batch(unrolled, 2)
    # Unboxed, as training holds them (parallel.sharded_init).
    params_unrolled = nn.meta.unbox(jax.jit(unrolled.init)(jax.random.key(0), batch)["params"])
    abstract_scanned = nn.meta.unbox(jax.eval_shape(scanned.init, jax.random.key(0), batch)["params"])
    return unrolled, scanned, batch, params_unrolled, abstract_scanned


def test_stacked_unrolled_params_are_the_scanned_layout_and_compute_the_same(models_and_params):
    unrolled, scanned, batch, params, abstract_scanned = models_and_params
    assert layer_layout.is_unrolled(params) and not layer_layout.is_unrolled(abstract_scanned)
    stacked = layer_layout.stack_layers(params)
    assert _shapes(stacked) == _shapes(abstract_scanned)
    # Stacking only moves numbers: the scanned model on the stacked params gives the same loss.
    rng = np.random.default_rng(0)
    batch = dict(batch, views={m: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
                               for m, v in batch["views"].items()})
    loss_unrolled, _ = jax.jit(unrolled.apply)({"params": params}, batch)
    loss_scanned, _ = jax.jit(scanned.apply)({"params": stacked}, batch)
    np.testing.assert_allclose(loss_scanned, loss_unrolled, rtol=1e-5)
    # Round trip is bitwise, and converting a tree already in the wanted layout changes nothing.
    back = layer_layout.unstack_layers(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    assert jax.tree.structure(layer_layout.match_layout(stacked, like=abstract_scanned)) == \
        jax.tree.structure(stacked)


def test_abstract_shardings_get_an_unsharded_layer_axis():
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"shape": (2, 2, 2), "axes": ("data", "fsdp", "model")}))
    sharding = NamedSharding(mesh, PartitionSpec("fsdp", "model"))
    tree = {"encoder": {f"blocks_{i}": {"kernel": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=sharding)}
                        for i in range(3)}}
    stacked = layer_layout.stack_layers(tree)["encoder"]["blocks"]["kernel"]
    assert stacked.shape == (3, 4, 8)
    assert stacked.sharding.spec == PartitionSpec(None, "fsdp", "model")
    back = layer_layout.unstack_layers({"encoder": {"blocks": {"kernel": stacked}}})["encoder"]["blocks_2"]["kernel"]
    assert back.shape == (4, 8) and back.sharding.spec == PartitionSpec("fsdp", "model")


def test_bad_stacks_raise():
    with pytest.raises(ValueError, match="blocks_0..blocks_N"):
        layer_layout.stack_layers({"blocks_0": jnp.ones(2), "blocks_2": jnp.ones(2)})
    with pytest.raises(ValueError, match="disagree on depth"):
        layer_layout.unstack_layers({"blocks": {"a": jnp.ones((2, 3)), "b": jnp.ones((3, 3))}})


def test_checkpoints_hold_the_scanned_layout_and_restore_into_either(tmp_path, models_and_params):
    _, _, _, params, abstract_scanned = models_and_params
    state = {"step": jnp.array(3, jnp.int32), "params": params,
             "moments": jax.tree.map(lambda p: p * 0.5, params)}
    ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", save_every=1)
    ckpt.save(3, state)
    ckpt.wait()
    saved = ckpt.manager.item_metadata(3)["state"].tree
    assert not layer_layout.is_unrolled(saved)
    # One array per parameter kind, not per layer.
    assert len(jax.tree.leaves(saved)) == len(jax.tree.leaves(layer_layout.stack_layers(state))) \
        < len(jax.tree.leaves(state))

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), state)
    restored, _ = ckpt.restore(abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, restored, state)

    scanned_target = layer_layout.stack_layers(abstract)
    restored_scanned, _ = ckpt.restore(scanned_target)
    assert _shapes(restored_scanned["params"]) == _shapes(abstract_scanned)
    jax.tree.map(np.testing.assert_array_equal, restored_scanned, layer_layout.stack_layers(state))
    ckpt.close()


def test_load_params_returns_the_runs_layout(tmp_path, models_and_params):
    _, _, _, params, _ = models_and_params
    for scan_layers in (False, True):
        workdir = tmp_path / f"scan_{scan_layers}"
        config = ml_collections.ConfigDict({"model": {"scan_layers": scan_layers},
                                            "data": {"modalities": ("s2",), "sensors": {"s2": "s2_l1c"}}})
        ckpt_lib.write_run_metadata(workdir, config, ckpt_lib.sensor_specs_from_config(config.data))
        ckpt = ckpt_lib.Checkpointer(workdir / ckpt_lib.CHECKPOINT_SUBDIR, save_every=1)
        ckpt.save(1, {"params": params})
        ckpt.close()
        loaded, _, _ = ckpt_lib.load_params(workdir)
        assert layer_layout.is_unrolled(loaded) == (not scan_layers)
        expected = params if not scan_layers else layer_layout.stack_layers(params)
        jax.tree.map(np.testing.assert_array_equal, loaded, expected)
