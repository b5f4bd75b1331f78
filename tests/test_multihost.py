"""Pod behaviour on one machine (slow): two jax.distributed CPU processes x 4 devices.

- Warm start (phase 1 -> phase 2) on 2 processes restores the checkpoint straight
  into the sharded params: every copied leaf is bitwise phase 1's.
- With the `model` axis spanning both processes, both load the same samples
  (their batch rows are the same) and the loss equals a 1-process run of the
  same mesh shape.
"""

import jax
import numpy as np
import pytest

from test_train_helpers import worker_env
from test_train_resume import free_port, run_worker, worker_cmd
from seamo_jax.train.checkpoint import load_params


def run_processes(workdir, env, *extra, steps=4, timeout=900) -> list[dict]:
    import json
    import subprocess

    port = free_port()
    procs = [subprocess.Popen(worker_cmd(workdir, "--num-processes", "2", "--process-id", str(i), "--port", str(port),
                                         "--checkpoint-every", "4", *extra, steps=steps),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    return [json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0]) for out, _ in outs]


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.slow  # 2 x 2 processes, ~2-3 min
def test_two_process_warm_start_copies_phase1_leaves_bitwise(tmp_path):
    env = worker_env(4, str(tmp_path / "jax_cache"))
    run_processes(tmp_path / "a", env, "--seasons", "1", "--fusion", "none")  # phase 1: one season, no TM
    summaries = run_processes(tmp_path / "b", env, "--seasons", "2", "--fusion", "tm", "--init-from",
                              str(tmp_path / "a"), "--save-init-only", steps=8)
    report = summaries[0]["warm_start"]
    assert summaries[1]["warm_start"] == report
    a, b = _flat(load_params(tmp_path / "a")[0]), _flat(load_params(tmp_path / "b", step=0)[0])
    assert report["copied"] and set(report["copied"]) <= set(a)
    assert any("fusion" in k for k in report["fresh"]) and any("season_embed" in k for k in report["fresh"])
    for key in report["copied"]:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert set(report["copied"]) | set(report["fresh"]) == set(b)


@pytest.mark.slow  # 2 processes + 1 process, ~2 min
def test_model_axis_across_processes_loads_same_samples_and_matches_one_process(tmp_path):
    two = run_processes(tmp_path / "two", worker_env(4, str(tmp_path / "cache2")), "--mesh", "1,1,8",
                        "--replicate-heads", steps=2)
    assert two[0]["mesh"] == {"data": 1, "fsdp": 1, "model": 8}
    assert two[0]["first_batch_sha256"] == two[1]["first_batch_sha256"]
    one = run_worker(tmp_path / "one", worker_env(8, str(tmp_path / "cache1")), "--mesh", "1,1,8",
                     "--replicate-heads", "--checkpoint-every", "4", steps=2)
    assert one["first_batch_sha256"] == two[0]["first_batch_sha256"]
    np.testing.assert_allclose(two[0]["loss_start"], one["loss_start"], rtol=1e-5)
    np.testing.assert_allclose(two[0]["loss_end"], one["loss_end"], rtol=1e-5)


@pytest.mark.slow  # 2 processes, ~1-2 min
def test_sigterm_on_one_host_saves_the_same_step_on_both_and_exits_cleanly(tmp_path):
    """JAX's coordination service spreads one host's preemption notice; both save one agreed step."""
    import json
    import signal
    import subprocess

    from test_train_resume import wait_for_checkpoint

    workdir, port = tmp_path / "run", free_port()
    env = worker_env(4, str(tmp_path / "jax_cache"))
    procs = [subprocess.Popen(worker_cmd(workdir, "--num-processes", "2", "--process-id", str(i), "--port", str(port),
                                         "--checkpoint-every", "4", "--slow-after-reads", "48", steps=40),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    wait_for_checkpoint(procs[0], workdir, 4)
    procs[0].send_signal(signal.SIGTERM)  # host 0 only, as when one VM of a slice is preempted
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    summaries = [json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0]) for out, _ in outs]
    assert all(s["preempted"] for s in summaries)
    assert summaries[0]["final_step"] == summaries[1]["final_step"] < 40
    assert (workdir / "checkpoints" / str(summaries[0]["final_step"])).is_dir()
