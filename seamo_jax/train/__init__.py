"""TrainState, optimiser, jitted step, Orbax checkpoints, telemetry and the pretraining loop.

Public API: `run_pretraining(config, workdir) -> dict` and
`load_params(checkpoint_dir) -> (params, config, sensor_specs)`. Submodules are
imported lazily so that `from seamo_jax.train import load_params` does not pull
in the data pipeline.
"""

from __future__ import annotations

from typing import Any


def run_pretraining(config: Any, workdir: Any) -> dict:
    from seamo_jax.train.loop import run_pretraining as _run
    return _run(config, workdir)


def load_params(checkpoint_dir: Any, step: int | None = None):
    from seamo_jax.train.checkpoint import load_params as _load
    return _load(checkpoint_dir, step)


__all__ = ["load_params", "run_pretraining"]
