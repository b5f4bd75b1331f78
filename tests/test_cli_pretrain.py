"""`seamo pretrain` on a run that diverges: exit status 3, the loop's one-paragraph message on
stderr (step, last good checkpoint, what to change), no traceback, no summary.

The divergence is real: the demo's tiny SeaMo with an absurd learning rate and no clipping
overflows its params within a few steps."""

import subprocess
import sys

from data_pipelines import registry
from test_train_helpers import REPO, demo_config, worker_env


def test_pretrain_non_finite_loss_exits_3_without_traceback(tmp_path):
    data_dir = tmp_path / "tfds"
    kwargs = dict(demo_config("fast").data.builder_kwargs)
    registry.prepare("synthetic_seasons", str(data_dir), num_workers=1, **kwargs)
    command = [sys.executable, "-m", "seamo_jax.cli", "pretrain", "--config", "demo_cpu:fast",
               "--workdir", str(tmp_path / "run"), f"--config.data.data_dir={data_dir}",
               "--config.optim.learning_rate=1e30", "--config.optim.warmup_steps=0",
               "--config.optim.clip_grad_norm=0.0", "--config.train.checkpoint_every=1",
               "--config.train.recon_every=0", "--config.train.progress_bar=False"]
    out = subprocess.run(command, cwd=tmp_path, env=worker_env(1), capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, (out.returncode, out.stderr[-2000:])
    assert "seamo pretrain: loss is" in out.stderr and "non-finite" in out.stderr
    assert "Last good checkpoint:" in out.stderr and "optim.learning_rate" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.strip() == ""  # no summary JSON for a failed run
