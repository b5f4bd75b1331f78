"""One build step: `seamo data build` builds; `seamo pretrain` / `seamo probe` only open a prepared dataset."""

import json
import shlex

from data_pipelines import registry
from seamo_jax import cli
from seamo_jax.configs import load_config
from seamo_jax.train.loop import builder_kwargs

FAST = "demo_cpu:fast"
SMALL = ["--config.data.builder_kwargs.num_train=16", "--config.data.builder_kwargs.num_test=8"]


def test_pretrain_on_a_missing_dataset_prints_the_build_command_and_builds_nothing(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    code = cli.main(["pretrain", "--config", FAST, "--workdir", str(tmp_path / "run"),
                     f"--config.data.data_dir={data_dir}", *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("seamo pretrain: error: dataset 'synthetic_seasons'")
    command = err.split("before training: ", 1)[1]
    assert command.startswith(f"seamo data build --builder synthetic_seasons --data-dir {data_dir}")
    assert not data_dir.exists()  # nothing was built
    # The printed command is the one that prepares exactly this dataset.
    words = shlex.split(command)
    assert cli.main(words[1:]) == 0
    capsys.readouterr()
    config = load_config(FAST, SMALL)
    source = registry.load_source("synthetic_seasons", "train", str(data_dir), **builder_kwargs(config.data))
    assert len(source) == 16


def test_data_build_from_a_config_builds_what_it_trains_on(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    assert cli.main(["data", "build", "--config", FAST, "--data-dir", str(data_dir), *SMALL]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{\n"):])  # the summary JSON follows the builder's progress lines
    assert info["prepared"] and info["splits"] == {"train": 16, "test": 8}
    config = load_config(FAST, SMALL)
    assert registry.is_prepared(registry.get_builder("synthetic_seasons", str(data_dir), **builder_kwargs(config.data)))


def test_data_build_into_a_bucket_is_refused_with_the_copy_up_recipe(capsys):
    assert cli.main(["data", "build", "--builder", "synthetic_seasons", "--data-dir", "gs://b/tfds"]) == 2
    assert "seamo data build: error: ArrayRecord shards cannot be written to gs://b/tfds; build into a local" in (
        capsys.readouterr().err)
