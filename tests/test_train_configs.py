"""Experiment configs (same keys as demo_cpu.py) and the phase-1 -> phase-2 warm start."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_train_helpers import REPO, demo_config
from seamo_jax.train.warm_start import warm_start_params


def load(name, arg):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__ and "Expected cost" in module.__doc__
    return module.get_config(arg)


def flat_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if hasattr(value, "items") and key not in ("sensors", "builder_kwargs", "synthetic"):
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


@pytest.mark.parametrize("name, arg", [("seamo_vitb_ssl4eo", "phase1"), ("seamo_vitb_ssl4eo", "phase2"),
                                       ("seamo_vitl_pod", ""), ("seamo_vitl_pod", "v4-32")])
def test_experiment_has_demo_keys(name, arg):
    config = load(name, arg)
    demo = {k for k in flat_keys(demo_config("")) if not k.startswith(("probe.", "data.synthetic"))}
    missing = demo - flat_keys(config)
    assert not missing, missing
    assert config.data.crop_size == 224 and config.model.patch_size == 16
    assert config.data.batch_size % 256 == 0


def test_progressive_phases():
    p1, p2 = load("seamo_vitb_ssl4eo", "phase1"), load("seamo_vitb_ssl4eo", "phase2")
    assert (p1.data.seasons, p1.model.fusion, p1.data.season_subsample) == (1, "none", True)
    assert (p2.data.seasons, p2.model.fusion) == (4, "tm")
    assert p1.model.num_seasons == p2.model.num_seasons == 4  # season table transfers
    assert p1.model.size == p2.model.size == "vit_b16" and p2.init_from == ""
    assert load("seamo_vitl_pod", "").model.size == "vit_l16"
    with pytest.raises(ValueError):
        load("seamo_vitb_ssl4eo", "phase3")


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
