"""Shipped experiment configs and the phase-1 -> phase-2 warm start."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seamo_jax import configs, models, parallel
from seamo_jax.train.warm_start import warm_start_params


def load(name, arg):
    return configs.load_config(f"{name}:{arg}" if arg else name)


def _abstract_params(config):
    model = models.build_model_from_config(config)
    batch = models.example_batch(model, 1)
    return jax.eval_shape(lambda b: model.init(jax.random.key(0), b), batch)["params"]


SHIPPED = [(name, arg) for name in configs.shipped_experiments()
           for arg in importlib.import_module(f"seamo_jax.experiments.{name}").VARIANTS]


@pytest.mark.parametrize("name, arg", SHIPPED)
def test_every_shipped_experiment_is_locked_and_consistent(name, arg):
    """Each variant loads locked, its data spec and mesh validate, and its model builds (abstractly)."""
    from seamo_jax.data.sample import sample_spec_from_config

    config = load(name, arg)
    assert config.is_locked and config.data.is_locked and config.data.builder_kwargs.is_locked
    with pytest.raises(AttributeError):
        config.model.sizee = "tiny"
    sample_spec_from_config(config)  # crop % patch, region settings, sensor modalities
    parallel.make_mesh(config.mesh)  # the mesh shape fits 8 devices (-1 fills)
    params = _abstract_params(config)
    expected = {"encoder"} | {f"decoder_{m}" for m in config.data.modalities}
    assert set(params) == expected | ({"fusion"} if config.model.fusion == "tm" else set())


def test_phase1_checkpoint_fills_every_phase2_leaf_of_the_same_path():
    """Phase 1 (1 season, no TM) -> phase 2 (4 seasons, TM): every phase-1 leaf exists in phase 2 with
    its shape (the season table is sized for 4 in both), so the warm start copies all of them."""
    p1, p2 = (load("seamo_vitb_ssl4eo", phase) for phase in ("phase1", "phase2"))
    shapes1, shapes2 = (dict(ckpt_flat(_abstract_params(c))) for c in (p1, p2))
    assert shapes1.keys() < shapes2.keys()
    assert {k: shapes2[k] for k in shapes1} == shapes1
    fresh = {k.split("/")[0] for k in shapes2.keys() - shapes1.keys()}
    assert fresh == {"fusion"}, fresh


def ckpt_flat(params):
    return [("/".join(str(getattr(p, "key", p)) for p in path), leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]


def test_warm_start_restores_matching_leaves_into_target_shardings(tmp_path):
    from seamo_jax.train import checkpoint as ckpt_lib

    mesh = jax.make_mesh((len(jax.devices()),), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    rng = np.random.default_rng(0)
    stacked = rng.normal(size=(2, 8, 4)).astype(np.float32)  # 2 scanned blocks
    pretrained = {"encoder": {"w": rng.normal(size=(8, 4)).astype(np.float32), "season_embed": np.ones((1, 8)),
                              "blocks": {"k": stacked}}, "old_head": np.ones(2)}
    saver = ckpt_lib.Checkpointer(tmp_path / "checkpoints", save_every=1, async_save=False)
    saver.save(1, {"params": pretrained, "step": np.int32(1)})
    saver.close()
    # The new model: unrolled blocks, a bigger season table, a fusion subtree; "w" sharded over fsdp.
    fresh = {"encoder": {"w": jnp.zeros((8, 4)), "season_embed": jnp.zeros((4, 8)),
                         "blocks_0": {"k": jnp.zeros((8, 4))}, "blocks_1": {"k": jnp.zeros((8, 4))}},
             "fusion": {"w": jnp.zeros(3)}}
    shardings = jax.tree.map(lambda _: rep, fresh)
    shardings["encoder"]["w"] = shardings["encoder"]["blocks_1"]["k"] = split
    fresh = jax.device_put(fresh, shardings)
    params, report = warm_start_params(fresh, tmp_path, shardings)
    np.testing.assert_array_equal(np.asarray(params["encoder"]["w"]), pretrained["encoder"]["w"])
    np.testing.assert_array_equal(np.asarray(params["encoder"]["blocks_1"]["k"]), stacked[1])
    np.testing.assert_array_equal(np.asarray(params["encoder"]["season_embed"]), np.zeros((4, 8)))
    assert jax.tree.map(lambda a: a.sharding, params) == shardings
    assert report["copied"] == ["['encoder']['blocks_0']['k']", "['encoder']['blocks_1']['k']", "['encoder']['w']"]
    assert report["fresh"] == ["['encoder']['season_embed']", "['fusion']['w']"]
    assert report["unused"] == ["['encoder']['season_embed']", "['old_head']"]
