"""A non-editable install works from any directory: experiments ship as package data and are
addressable by name (`seamo demo`, `--config demo_cpu:fast`).

The wheel is built from this checkout and unpacked into a temporary folder; the command runs
with `python -S` (no site-packages .pth files, so the editable install of the checkout is out
of sight) from a working directory that holds nothing of the source tree, with the venv's
third-party packages on PYTHONPATH behind the unpacked wheel.
"""

import json
import os
import pathlib
import site
import subprocess
import sys
import zipfile

from test_train_helpers import REPO


def _third_party_paths() -> list[str]:
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def test_wheel_runs_demo_by_name_from_an_empty_directory(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheel_dir.glob("seamo_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "seamo_jax/experiments/base.py" in names and "seamo_jax/experiments/demo_cpu.py" in names
    assert "data_pipelines/registry.py" in names and not any(n.startswith("tests/") for n in names)
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed), *_third_party_paths()]),
               XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
               SEAMO_DEFAULT_MALLOC="1")  # no malloc re-exec: it would drop -S
    where = subprocess.run([sys.executable, "-S", "-c", "import seamo_jax; print(seamo_jax.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert pathlib.Path(where.stdout.strip()).is_relative_to(installed), where.stdout

    out = subprocess.run([sys.executable, "-S", "-m", "seamo_jax.cli", "demo", "--config", "demo_cpu:fast",
                          "--workdir", "demo", "--config.train.progress_bar=False",
                          "--config.probe.seeds=(0,)"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((cwd / "demo" / "demo_results.json").read_text())
    assert results["pretraining"]["final_step"] == 6
    assert set(results["probe"]["linear_top1"]) == {"pretrained", "random_init", "band_stats"}
    assert (cwd / "demo" / "probe" / "probe_results.md").exists()
    assert not (cwd / "experiments").exists()
