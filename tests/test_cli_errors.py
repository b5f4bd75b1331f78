"""A user's mistakes print `seamo <command>: error: <what, and what to do>` in one line, no traceback.

Exit status 2 for usage errors (the command line or its config), 1 for inputs
that are wrong at run time (a missing checkpoint); `--debug` shows the traceback.
"""

import pytest

from seamo_jax import cli

DEMO = "demo_cpu"


def _run(capsys, *argv):
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, code, expected", [
    (("pretrain", "--config", DEMO, "--workdir", "r", "--config.model.sizee=tiny"), 2,
     "seamo pretrain: error: override '--config.model.sizee=tiny': no config field 'model.sizee'; "
     "did you mean config.model.size?"),
    (("pretrain", "--config", DEMO, "--workdir", "r", "--config.train.num_steps=abc"), 2,
     "seamo pretrain: error: override '--config.train.num_steps=abc': config.train.num_steps takes a value of "
     "type int (now 500), got 'abc'"),
    (("pretrain", "--config", "seamo_jax/experiments/nope.py", "--workdir", "r"), 2,
     "seamo pretrain: error: config file seamo_jax/experiments/nope.py not found"),
    (("data", "build", "--builder", "eurosat_ms", "--data-dir", "tfds"), 2,
     "seamo data build: error: eurosat_ms is built from the downloaded release: pass --manual-dir FOLDER"),
    (("data", "build", "--builder", "eurosat", "--data-dir", "tfds"), 2,
     "seamo data build: error: unknown dataset 'eurosat'; registered: bigearthnet, eurosat_ms, ssl4eo_s12, "
     "synthetic_seasons"),
])
def test_usage_errors_are_one_line_with_exit_2(capsys, argv, code, expected):
    got_code, err = _run(capsys, *argv)
    assert got_code == code
    assert err.startswith(expected), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_empty_manual_dir_is_one_line_with_exit_2(capsys, tmp_path):
    (tmp_path / "raw").mkdir()
    code, err = _run(capsys, "data", "build", "--builder", "eurosat_ms", "--data-dir", str(tmp_path / "tfds"),
                     "--manual-dir", str(tmp_path / "raw"))
    assert code == 2 and len(err.splitlines()) == 1
    assert f"(got {tmp_path / 'raw'}, which is empty;" in err


def test_missing_checkpoint_is_one_line_with_exit_1_and_debug_shows_the_traceback(capsys, tmp_path):
    code, err = _run(capsys, "export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"seamo export: error: checkpoint directory {tmp_path / 'nope'} does not exist")
    with pytest.raises(FileNotFoundError):
        cli.main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--debug"])
