"""Bucket workdirs, end to end against a local GCS emulator (127.0.0.1 only).

`seamo pretrain --workdir gs://...` must put checkpoints, metrics, TensorBoard
events and reconstructions in the bucket (not a local `./gs:` folder), resume
from there, and export / probe must read and write buckets too. The journey
runs in a child process (tests/bucket_journey.py) because the GCS clients read
the emulator settings at import.
"""

import json
import subprocess
import sys

import pytest

from gcs_emulator import BUCKET, child_env, gcs_emulator
from test_train_helpers import REPO
from seamo_jax.paths import is_url, user_path


def test_user_path_keeps_urls_and_absolutises_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(user_path("gs://b/run/x")) == "gs://b/run/x" and is_url("gs://b/run")
    assert str(user_path("s3://b/run") / "checkpoints") == "s3://b/run/checkpoints"
    assert str(user_path("run")) == str(tmp_path / "run") and not is_url("run")
    assert str(user_path("~/x")).startswith("/") and "~" not in str(user_path("~/x"))


@pytest.mark.timeout(900)
def test_pretrain_resume_export_probe_with_everything_in_a_bucket(tmp_path):
    with gcs_emulator() as url:
        env = child_env(url)
        env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}"
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "bucket_journey.py"), str(tmp_path),
                               f"gs://{BUCKET}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["copied_files"] > 0
    assert result["first"]["start_step"] == 0 and result["first"]["final_step"] == 4
    assert result["first"]["checkpoint_dir"] == f"gs://{BUCKET}/run/checkpoints"
    assert result["resumed"] == {"start_step": 4, "final_step": 6}  # resumed from the bucket checkpoint
    assert result["checkpoint_steps"] == [4, 6]  # keep_checkpoints=2
    names = {p.rsplit("/", 1)[-1] for p in result["run_listing"]}
    assert {"checkpoints", "config.json", "sensors.json", "metrics.jsonl", "tensorboard", "recon"} <= names
    assert result["metrics_lines"] >= 3 and result["tensorboard_files"] >= 1  # both runs appended
    assert any(n.startswith("step_000004") for n in result["recon_files"])
    assert {"encoder.safetensors", "model_card.json"} <= set(result["export_files"]) and result["card_step"] == 6
    assert {"probe_results.json", "probe_results.md"} <= set(result["probe_files"])
    assert result["probe_encoders"] == ["band_stats", "pretrained"]
    assert result["probe_checkpoint"] == [f"gs://{BUCKET}/run", 6]
    assert not result["local_gs_folder"]  # nothing went to a local "gs:" directory
