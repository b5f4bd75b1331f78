"""Config loading and --config.key=value overrides."""
import pytest

from seamo_jax import configs


def test_load_demo_config_and_override(repo_root):
    config = configs.load_config(
        str(repo_root / "experiments/demo_cpu.py"),
        ["--config.train.num_steps=7", "--config.model.size=vit_s16", "--config.data.modalities=s2",
         "--config.optim.learning_rate=1", "--config.data.overlap_range=(0.6, 0.9)"])
    assert config.train.num_steps == 7
    assert config.model.size == "vit_s16"
    assert config.data.modalities == ("s2",)
    assert config.optim.learning_rate == 1.0 and isinstance(config.optim.learning_rate, float)
    assert config.data.overlap_range == (0.6, 0.9)


def test_variant_argument(repo_root):
    fast = configs.load_config(str(repo_root / "experiments/demo_cpu.py") + ":fast")
    full = configs.load_config(str(repo_root / "experiments/demo_cpu.py"))
    assert fast.train.num_steps < full.train.num_steps


def test_bad_overrides_are_loud(repo_root):
    path = str(repo_root / "experiments/demo_cpu.py")
    with pytest.raises(KeyError, match="num_stepz"):
        configs.load_config(path, ["--config.train.num_stepz=3"])
    with pytest.raises(TypeError):
        configs.load_config(path, ["--config.train.num_steps='many'"])


def test_json_round_trip(repo_root):
    config = configs.load_config(str(repo_root / "experiments/demo_cpu.py"))
    again = configs.config_from_json(configs.config_to_json(config))
    assert again.to_dict() == config.to_dict()
