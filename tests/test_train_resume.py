"""Exact resume in subprocesses (slow): runs interrupted by SIGKILL (after a
checkpoint) or SIGTERM (preemption: save and exit) and then resumed end with
bitwise the same params as a run that went straight through; plus a
2-process x 4-device run (jax.distributed over localhost) that checkpoints
and resumes.

The single-process runs share a persistent compilation cache, so only the
first one compiles.
"""

import json
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from test_train_helpers import REPO, worker_env
from seamo_jax.train.checkpoint import Checkpointer, load_params

HELPER = str(REPO / "tests" / "test_train_helpers.py")
STEPS, EVERY, BATCH = 40, 10, 8


def worker_cmd(workdir, *extra, steps=STEPS):
    return [sys.executable, HELPER, str(workdir), "--steps", str(steps), "--checkpoint-every", str(EVERY),
            "--batch-size", str(BATCH), *extra]


def run_worker(workdir, env, *extra, steps=STEPS, timeout=900) -> dict:
    out = subprocess.run(worker_cmd(workdir, *extra, steps=steps), env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.split("SUMMARY ", 1)[1].splitlines()[0])


def wait_for_checkpoint(proc, workdir, step, timeout=900):
    deadline = time.time() + timeout
    while not (workdir / "checkpoints" / str(step)).is_dir():  # appears only once complete (atomic rename)
        assert proc.poll() is None, proc.stderr.read()[-4000:]
        assert time.time() < deadline, f"step-{step} checkpoint never appeared"
        time.sleep(0.2)


def assert_params_equal(a_dir, b_dir):
    a, _, _ = load_params(a_dir)
    b, _, _ = load_params(b_dir)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # ~2 min on an idle 2-core box (4 processes, one compile), ~5 min under load
def test_sigkill_or_sigterm_then_resume_is_bitwise_identical(tmp_path):
    env = worker_env(8, str(tmp_path / "jax_cache"))
    assert run_worker(tmp_path / "straight", env)["final_step"] == STEPS

    # SIGKILL: reads slow down after ~22 steps, so the run sits past its step-20 save when killed.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(worker_cmd(killed, "--slow-after-reads", str(BATCH * 22)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, killed, 20)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert max(Checkpointer(killed / "checkpoints", save_every=EVERY).all_steps()) == 20
    assert run_worker(killed, env)["start_step"] == 20
    assert_params_equal(tmp_path / "straight", killed)
    # Training moved the params after the resume point, so equality is not about untouched arrays.
    mid, _, _ = load_params(killed, step=30)
    end, _, _ = load_params(killed)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(mid),
                                                                                jax.tree.leaves(end)))
    with pytest.raises(FileNotFoundError, match="step 20"):  # keep_checkpoints=2 dropped it
        load_params(killed, step=20)

    # SIGTERM (preemption): the loop saves the step it is at and exits 0.
    termed = tmp_path / "termed"
    proc = subprocess.Popen(worker_cmd(termed, "--slow-after-reads", str(BATCH * 12)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, termed, 10)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    summary = json.loads(stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["preempted"] and 10 <= summary["final_step"] < STEPS
    assert Checkpointer(termed / "checkpoints", save_every=EVERY).latest_step() == summary["final_step"]
    assert run_worker(termed, env)["start_step"] == summary["final_step"]
    assert_params_equal(tmp_path / "straight", termed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, steps, env, timeout=900) -> list[dict]:
    port = free_port()
    procs = [subprocess.Popen(worker_cmd(workdir, "--num-processes", "2", "--process-id", str(i), "--port",
                                         str(port), "--checkpoint-every", "4", steps=steps),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    return [json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0]) for out, _ in outs]


@pytest.mark.slow  # two jax.distributed CPU processes x 4 devices; ~2-4 min
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    env = worker_env(4, str(tmp_path / "jax_cache"))
    first = run_two_processes(tmp_path / "run", 8, env)
    assert [s["final_step"] for s in first] == [8, 8]
    assert first[0]["mesh"] == {"data": 2, "fsdp": 2, "model": 2}
    data_dir = tmp_path / "run" / "checkpoints" / "8" / "data"
    assert sorted(p.name for p in data_dir.glob("process_*")) == ["process_0-of-2.json", "process_1-of-2.json"]
    second = run_two_processes(tmp_path / "run", 12, env)
    assert [s["start_step"] for s in second] == [8, 8] and [s["final_step"] for s in second] == [12, 12]
    assert second[0]["loss_end"] == second[1]["loss_end"]  # one global loss, seen by both processes
    params, _, _ = load_params(tmp_path / "run")
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
