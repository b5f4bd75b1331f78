"""Host malloc tunables (seamo_jax/host_memory.py): merging, opt-out, CPU-run detection and the one-time re-exec."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seamo_jax import host_memory

GLIBC = ("glibc", "2.36")


def test_merge_keeps_user_values_and_adds_ours():
    merged = host_memory.merged_tunables("glibc.malloc.hugetlb=0:glibc.foo=1")
    entries = dict(item.split("=", 1) for item in merged.split(":"))
    assert entries == {"glibc.malloc.hugetlb": "0", "glibc.foo": "1"}  # the user's value wins
    entries = dict(item.split("=", 1) for item in host_memory.merged_tunables("glibc.foo=1").split(":"))
    assert entries == {"glibc.foo": "1", **dict(host_memory.MALLOC_TUNABLES)}


def test_nothing_to_apply_off_glibc_opted_out_or_already_set():
    assert host_memory.tunables_to_apply({}, "Linux", GLIBC) == host_memory.merged_tunables("")
    assert host_memory.tunables_to_apply({}, "Darwin", ("", "")) is None
    assert host_memory.tunables_to_apply({}, "Linux", ("musl", "1.2")) is None
    assert host_memory.tunables_to_apply({"SEAMO_DEFAULT_MALLOC": "1"}, "Linux", GLIBC) is None
    full = {"GLIBC_TUNABLES": host_memory.merged_tunables("")}
    assert host_memory.tunables_to_apply(full, "Linux", GLIBC) is None


def test_cpu_run_detected_from_jax_platforms_or_absent_accelerators():
    no_devices = lambda pattern: []  # noqa: E731
    gpu_host = lambda pattern: ["/dev/nvidia0"] if pattern.startswith("/dev/nvidia") else []  # noqa: E731
    tpu_host = lambda pattern: ["/dev/vfio/0"] if pattern.startswith("/dev/vfio") else []  # noqa: E731
    assert host_memory.likely_cpu_run({}, glob_fn=no_devices)
    assert not host_memory.likely_cpu_run({}, glob_fn=gpu_host)
    assert not host_memory.likely_cpu_run({}, glob_fn=tpu_host)
    # JAX_PLATFORMS decides when set: its first platform is the one jax uses.
    assert host_memory.likely_cpu_run({"JAX_PLATFORMS": "cpu"}, glob_fn=gpu_host)
    assert not host_memory.likely_cpu_run({"JAX_PLATFORMS": "cuda,cpu"}, glob_fn=no_devices)
    assert not host_memory.likely_cpu_run({"JAX_PLATFORMS": "tpu"}, glob_fn=no_devices)
    assert host_memory.likely_cpu_run({"JAX_PLATFORMS": "", "JAX_PLATFORM_NAME": "CPU"}, glob_fn=tpu_host)


def _child(tmp_path, entry: str):
    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys\n"
        "print('start', os.getpid(), flush=True)\n"
        f"from seamo_jax.host_memory import {entry}\n"
        f"{entry}()\n"
        "print('tuned', os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SEAMO_MALLOC_TUNED",
                                                            "SEAMO_DEFAULT_MALLOC", "JAX_PLATFORMS")}
    return script, env


@pytest.mark.skipif(host_memory.tunables_to_apply({}) is None, reason="needs Linux with glibc")
def test_reexec_only_for_cpu_runs(tmp_path):
    """`seamo` calls reexec_for_cpu_run: a GPU/TPU run starts once, untouched; a CPU run re-executes."""
    script, env = _child(tmp_path, "reexec_for_cpu_run")
    accelerator = subprocess.run([sys.executable, str(script)], env={**env, "JAX_PLATFORMS": "tpu"},
                                 capture_output=True, text=True, check=True).stdout
    assert accelerator.count("start") == 1 and "tuned" in accelerator and "None" in accelerator
    cpu = subprocess.run([sys.executable, str(script)], env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, check=True).stdout
    assert cpu.count("start") == 2 and host_memory.merged_tunables("") in cpu


@pytest.mark.skipif(host_memory.tunables_to_apply({}) is None, reason="needs Linux with glibc")
def test_reexec_sets_tunables_once_and_keeps_pid_and_argv(tmp_path):
    script, env = _child(tmp_path, "reexec_with_malloc_tunables")
    out = subprocess.run([sys.executable, str(script), "--flag", "x"], env=env, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    starts = [line for line in out if line.startswith("start")]
    tuned = [line.split() for line in out if line.startswith("tuned")]
    assert len(starts) == 2 and len(tuned) == 1  # ran the top twice (exec), the rest once
    assert starts[0].split()[1] == starts[1].split()[1] == tuned[0][1]  # same PID
    assert tuned[0][2] == host_memory.merged_tunables("")
    assert tuned[0][3:] == ["['--flag',", "'x']"]

    opted_out = subprocess.run([sys.executable, str(script)], env={**env, "SEAMO_DEFAULT_MALLOC": "1"},
                               capture_output=True, text=True)
    assert opted_out.stdout.count("start") == 1
