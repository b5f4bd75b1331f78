"""The one way to build SeaMo from an experiment config (train, probe, export, benchmarks).

Training, evaluation and export used to build the model from different
arguments (the probe took `data.seasons`, training `model.num_seasons`), so a
phase-1 checkpoint was probed without its season table, silently. Every
caller now goes through `build_model_from_config`, and params read from a
checkpoint are checked against the model's own tree (`check_params_tree`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections

from seamo_jax import sensors
from seamo_jax.models import backend as backend_lib

PyTree = Any


def num_seasons_of(config: ml_collections.ConfigDict) -> int:
    """Rows of the season-embedding table: `model.num_seasons`, or `data.seasons` when it is 0."""
    return int(config.model.num_seasons or config.data.seasons)


def build_model_from_config(config: ml_collections.ConfigDict,
                            sensor_specs: Mapping[str, sensors.SensorSpec] | None = None, *,
                            mesh: Any = None) -> Any:
    """SeaMo as `config` describes it.

    Args:
      config: the full experiment config (data.modalities, data.sensors,
        data.crop_size, data.seasons, mask.ratio, model.*), or the config.json
        of a checkpoint.
      sensor_specs: modality -> SensorSpec (default from config.data.sensors;
        a checkpoint passes its sensors.json).
      mesh: the run's mesh (or device count): resolves `model.cpu_kernels`
        once for the run (models/backend.py). None = the generic XLA path,
        which evaluation and export use on any machine.
    Returns:
      the SeaMo module (params do not depend on `mesh`).
    """
    from seamo_jax.models import build_model  # package __init__ imports this module

    modalities = tuple(config.data.modalities)
    specs = sensor_specs or {m: sensors.get_sensor(config.data.sensors[m]) for m in modalities}
    backend = None if mesh is None else backend_lib.resolve_backend(config.model, mesh)
    return build_model(config.model, modalities=modalities, in_chans={m: specs[m].num_bands for m in modalities},
                       num_seasons=num_seasons_of(config), image_size=int(config.data.crop_size),
                       mask_ratio=float(config.mask.ratio), backend=backend)


def check_params_tree(params: PyTree, expected: PyTree, *, what: str = "checkpoint params") -> None:
    """Raises ValueError naming the first path where `params` and `expected` differ (missing, extra, shape).

    Args:
      params: restored params (arrays).
      expected: the model's params (arrays or ShapeDtypeStructs, e.g. from
        `jax.eval_shape` of its init), same block layout.
    """
    got = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(expected)}
    for key in sorted(set(got) | set(want)):
        if key not in got:
            raise ValueError(f"{what} lack {key} {want[key]} that the model built from the config has; "
                             f"the checkpoint was written by a different model config")
        if key not in want:
            raise ValueError(f"{what} have {key} {got[key]} that the model built from the config does not")
        if got[key] != want[key]:
            raise ValueError(f"{what} {key} has shape {got[key]}, the model expects {want[key]}")
