"""Config loading and --config.key=value overrides."""
import pytest

from seamo_jax import configs


def test_load_demo_config_and_override(repo_root):
    config = configs.load_config(
        "demo_cpu",
        ["--config.train.num_steps=7", "--config.model.size=vit_s16", "--config.data.modalities=s2",
         "--config.optim.learning_rate=1", "--config.data.overlap_range=(0.6, 0.9)"])
    assert config.train.num_steps == 7
    assert config.model.size == "vit_s16"
    assert config.data.modalities == ("s2",)
    assert config.optim.learning_rate == 1.0 and isinstance(config.optim.learning_rate, float)
    assert config.data.overlap_range == (0.6, 0.9)


def test_variant_argument(repo_root):
    fast = configs.load_config("demo_cpu:fast")
    full = configs.load_config("demo_cpu")
    assert fast.train.num_steps < full.train.num_steps


def test_bad_overrides_are_loud(repo_root):
    path = "demo_cpu"
    with pytest.raises(configs.ConfigError, match="no config field 'train.num_stepz'; did you mean config.train.num_steps"):
        configs.load_config(path, ["--config.train.num_stepz=3"])
    with pytest.raises(configs.ConfigError, match="takes a value of type int"):
        configs.load_config(path, ["--config.train.num_steps='many'"])


def test_unknown_key_in_an_experiment_file_names_the_line_and_the_closest_key(tmp_path):
    config_file = tmp_path / "mine.py"
    config_file.write_text("from seamo_jax.experiments import base\n\n"
                           "def get_config():\n    config = base.get_config()\n"
                           "    config.optim.learning_rat = 1e-3\n    return config\n")
    with pytest.raises(configs.ConfigError) as error:
        configs.load_config(str(config_file))
    message = str(error.value)
    assert "line 5" in message and "'learning_rat'" in message and "did you mean 'learning_rate'" in message
    assert len(message.splitlines()) == 1


def test_experiments_load_by_name_path_and_old_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of the source tree beside the working directory
    by_name = configs.load_config("probe_synthetic:fast")
    by_old_spelling = configs.load_config("experiments/probe_synthetic.py:fast")
    by_path = configs.load_config(str(configs.EXPERIMENTS_DIR / "probe_synthetic.py") + ":fast")
    assert by_name.to_dict() == by_old_spelling.to_dict() == by_path.to_dict()
    with pytest.raises(FileNotFoundError, match="did you mean probe_synthetic"):
        configs.load_config("probe_synthetc")


def test_every_experiment_key_is_a_base_key():
    """Experiments change base values; they add no key (free-form sections excepted)."""
    def keys(config, prefix=""):
        out = set()
        for key, value in config.items():
            dotted = prefix + key
            if hasattr(value, "items") and dotted not in ("data.builder_kwargs", "data.sensors",
                                                          "probe.builder_kwargs", "probe.sensors"):
                out |= keys(value, dotted + ".")
            else:
                out.add(dotted)
        return out

    base_keys = keys(configs.base_config())
    for name in configs.shipped_experiments():
        assert keys(configs.load_config(name)) == base_keys, name


def test_saved_config_loads_onto_the_base_and_rejects_unknown_fields():
    saved = configs.load_config("demo_cpu:fast").to_dict()
    del saved["train"]["keep_best"]          # an older run: missing keys take the base default
    saved["model"]["name"] = "seamo"         # retired key, dropped
    config = configs.config_from_dict(saved)
    assert config.train.keep_best == configs.base_config().train.keep_best and "name" not in config.model
    assert config.data.builder_kwargs.num_train == 64
    saved["model"]["depthh"] = 3
    with pytest.raises(configs.ConfigError, match="'model.depthh'"):
        configs.config_from_dict(saved, "run config")


def test_json_round_trip(repo_root):
    config = configs.load_config("demo_cpu")
    again = configs.config_from_json(configs.config_to_json(config))
    assert again.to_dict() == config.to_dict()
