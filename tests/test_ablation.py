"""benchmarks/ablation.py: the arms resolve to valid configs that differ only where intended (no training)."""

import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ablation", REPO / "benchmarks" / "ablation.py")
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)

# Independent of the optional land_cover label set / probe variant (another change adds them).
ARGS = ["--labels", "", "--probe-config", "probe_synthetic", "--workdir", "/tmp/ablation-test"]


def flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.fixture(scope="module")
def base():
    return ablation.base_config(ablation.parse_args(ARGS))


def test_common_overrides_exist_and_change_something():
    from seamo_jax.configs import load_config

    demo = flat(load_config(ablation.BASE_CONFIG))
    for item in ablation.COMMON + ablation.QUICK:
        key = item.partition("=")[0]
        assert key in demo, item


@pytest.mark.parametrize("name", list(ablation.ARMS))
def test_arm_differs_from_base_exactly_by_its_overrides(base, name):
    before, after = flat(base), flat(ablation.arm_config(base, name))
    assert set(before) == set(after), f"{name} adds or drops config keys"
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {item.partition("=")[0] for item in ablation.ARMS[name][1]}, name


def test_arms_are_the_intended_ablation(base):
    settings = {n: {k: ablation._get(ablation.arm_config(base, n), k) for k in ablation.SETTINGS}
                for n in ablation.ARMS}
    full = settings["d"]
    assert full == {"data.modalities": ["s2", "s1"], "data.seasons": 4, "model.fusion": "tm",
                    "data.region_selection": "partial", "model.season_encoding": "per_season",
                    "model.position_frame": "view"}
    assert settings["a"] == {**full, "data.modalities": ["s2"], "data.seasons": 1, "model.fusion": "none"}
    assert settings["b"] == {**full, "data.seasons": 1, "model.fusion": "none"}
    assert settings["c"] == {**full, "model.fusion": "none"}
    for name, key, value in (("d_same", "data.region_selection", "same"),
                             ("d_disjoint", "data.region_selection", "disjoint"),
                             ("d_joint", "model.season_encoding", "joint"),
                             ("d_tile", "model.position_frame", "tile")):
        assert settings[name] == {**full, key: value}, name


@pytest.mark.parametrize("match", ["flops", "tokens", "steps"])
def test_plan_matches_compute_and_builds_every_model(match):
    arms = ablation.plan(ablation.parse_args(ARGS + ["--match", match, "--steps", "100"]))
    assert set(arms) == set(ablation.ARMS)
    reference = arms["d"]["cost_per_step"] * arms["d"]["steps"]
    for name, arm in arms.items():
        assert abs(arm["cost_per_step"] * arm["steps"] - reference) <= arm["cost_per_step"], name
        config = arm["config"]
        assert config.train.num_steps == arm["steps"] == config.train.checkpoint_every
        assert 1 <= config.optim.warmup_steps < arm["steps"]
    assert arms["d"]["steps"] == 100
    if match == "steps":
        assert len({a["steps"] for a in arms.values()}) == 1
    else:  # the MAE arm has the fewest tokens per sample, so the most steps
        assert arms["a"]["steps"] == max(a["steps"] for a in arms.values()) > 100


def test_probe_inputs_fit_each_arm(base):
    for name in ablation.ARMS:
        config = ablation.arm_config(base, name)
        probe = ablation.probe_config(config, ablation.parse_args(ARGS))
        sets = probe.probe.input_sets
        assert {s["name"] for s in sets} >= {ablation.COMMON_INPUT["name"]}
        for s in sets:
            assert set(s["modalities"]) <= set(config.data.modalities), (name, s)
            assert max(s["seasons"]) < config.data.seasons, (name, s)
        assert dict(probe.probe.builder_kwargs) == dict(config.data.builder_kwargs)
        assert tuple(probe.probe.label_fractions) == (1.0,) and tuple(probe.probe.seeds) == (0, 1, 2)
        assert probe.model.to_dict() == config.model.to_dict()


def test_feature_cache_is_shared_only_by_equal_encoders(base):
    sig = {n: ablation.encoder_signature(ablation.arm_config(base, n)) for n in ablation.ARMS}
    assert sig["c"] == sig["d"] == sig["d_same"] == sig["d_disjoint"]  # fusion / regions do not touch encode
    assert len({sig[n] for n in ("a", "b", "d", "d_joint", "d_tile")}) == 5


def test_quick_and_arm_selection():
    args = ablation.parse_args(["--quick"])
    assert args.arms == ablation.QUICK_ARMS.split(",") and args.seeds == (0,) and args.steps == ablation.QUICK_STEPS
    assert ablation.parse_args(["--arms", "b,d_tile"]).arms == ["b", "d_tile"]
    with pytest.raises(SystemExit):
        ablation.parse_args(["--arms", "nope"])


def test_missing_probe_variant_is_a_clear_error(base):
    args = ablation.parse_args(ARGS[:2] + ["--probe-config", "probe_synthetic:no_such_variant"])
    with pytest.raises(SystemExit, match="--probe-config"):
        ablation.check_inputs(args, base)


@pytest.mark.parametrize("name", list(ablation.ARMS))
def test_region_selection_fits_the_tile(base, name):
    """Every arm's views can be cut from the ablation's tiles (disjoint needs 4 x 32 px in a 64 px tile)."""
    import numpy as np

    from seamo_jax.data import crops

    data = ablation.arm_config(base, name).data
    rng = np.random.default_rng(0)
    for _ in range(20):
        windows = crops.sample_season_windows(rng, data.builder_kwargs.tile_size, data.crop_size, data.seasons,
                                              selection=data.region_selection, reading=data.region_reading,
                                              overlap_range=data.overlap_range)
        overlaps = crops.pairwise_overlaps(windows.offsets, windows.sizes)[np.triu_indices(data.seasons, 1)]
        if data.region_selection == "disjoint":
            assert (overlaps == 0).all()
        elif data.region_selection == "same":
            assert (overlaps == 1).all()


def test_unknown_label_set_is_a_clear_error():
    args = ablation.parse_args(["--labels", "no_such_labels", "--probe-config", "probe_synthetic",
                                "--workdir", "/tmp/ablation-test"])
    with pytest.raises(SystemExit, match="--labels"):
        ablation.check_inputs(args, ablation.base_config(args))
