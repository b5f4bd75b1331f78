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


def test_warm_start_copies_matching_leaves_only():
    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    fresh = {"encoder": {"w": jnp.zeros((4, 4)), "season_embed": jnp.zeros((4, 8))}, "fusion": {"w": jnp.zeros(3)}}
    pretrained = {"encoder": {"w": jnp.ones((4, 4)), "season_embed": jnp.ones((1, 8))}, "old_head": jnp.ones(2)}
    shardings = jax.tree.map(lambda _: rep, fresh)
    params, report = warm_start_params(fresh, pretrained, shardings)
    np.testing.assert_array_equal(np.asarray(params["encoder"]["w"]), np.ones((4, 4)))
    np.testing.assert_array_equal(np.asarray(params["encoder"]["season_embed"]), np.zeros((4, 8)))
    assert params["encoder"]["w"].sharding == rep
    assert report["copied"] == ["['encoder']['w']"]
    assert sorted(report["fresh"]) == ["['encoder']['season_embed']", "['fusion']['w']"]
    assert report["unused"] == ["['encoder']['season_embed']", "['old_head']"]
