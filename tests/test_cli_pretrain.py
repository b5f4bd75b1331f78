"""`seamo pretrain` turns a diverged run (NonFiniteLossError) into exit status 3
with the loop's message on stderr and no traceback. The loop itself is
replaced by one that raises at once, so no model is built."""

import subprocess
import sys

from test_train_helpers import REPO, worker_env

_SCRIPT = """
import sys
import seamo_jax.train.loop as loop

def diverged(config, workdir, **kwargs):
    raise loop.NonFiniteLossError("loss is nan at step 7; Last good checkpoint: step 6 in X")

loop.run_pretraining = diverged
from seamo_jax import cli
sys.exit(cli.main(["pretrain", "--config", "experiments/demo_cpu.py:fast", "--workdir", sys.argv[1]]))
"""


def test_pretrain_non_finite_loss_exits_3_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "run")], cwd=REPO, env=worker_env(1),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, (out.returncode, out.stderr[-2000:])
    assert "loss is nan at step 7; Last good checkpoint: step 6 in X" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.strip() == ""  # no summary JSON for a failed run
