"""Orbax checkpoints: TrainState + Grain iterator state, async and atomic.

Layout of a workdir:

    <workdir>/config.json                 the run's ConfigDict
    <workdir>/sensors.json                modality -> SensorSpec (seamo_jax.sensors)
    <workdir>/checkpoints/                Orbax CheckpointManager directory
        config.json, sensors.json         copies, so the dir is self-describing
        <step>/state/                     TrainState (step, params, opt_state, rng), block
                                          stacks always in the scanned layout (models/layer_layout.py)
        <step>/data/process_<i>-of-<n>.json   Grain iterator state per process

Writes go to a temporary directory renamed on completion (or a commit file
on object stores), so a save killed half-way is never listed as a step and
resume always picks the newest *complete* checkpoint.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from seamo_jax import sensors as sensors_lib
from seamo_jax.models import layer_layout

PyTree = Any
CHECKPOINT_SUBDIR = "checkpoints"


def sensor_specs_from_config(data_config: Any) -> dict[str, sensors_lib.SensorSpec]:
    """modality -> SensorSpec for the modalities the run trains on."""
    return {m: sensors_lib.get_sensor(data_config.sensors[m]) for m in data_config.modalities}


def write_run_metadata(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
                       specs: Mapping[str, sensors_lib.SensorSpec]) -> None:
    """Writes config.json and sensors.json into the workdir and its checkpoint dir (process 0 only)."""
    if jax.process_index() != 0:
        return
    workdir = pathlib.Path(workdir)
    for directory in (workdir, workdir / CHECKPOINT_SUBDIR):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
        (directory / "sensors.json").write_text(sensors_lib.specs_to_json(specs))


class Checkpointer:
    """Thin policy layer over `ocp.CheckpointManager` for training runs.

    Args:
      directory: the CheckpointManager dir (normally `<workdir>/checkpoints`).
      save_every: save when `step % save_every == 0` (plus forced saves).
      keep: number of most recent checkpoints kept.
      keep_best: additionally keep this many lowest-`loss` checkpoints (0 = off).
      async_save: write in a background thread; call `wait()` before reading.
      compression: zstd-compress the arrays. Off by default: fp32 params and
        Adam moments shrink by only ~8%, while compressing (zarr3 + zstd, the
        `StandardSave` default) costs ~5x the CPU time of an uncompressed
        zarr2 write (measured: 5.5 s vs 0.7-1.1 s of CPU for 0.95 GB), CPU
        that the async write takes from the training step on small hosts.
    """

    def __init__(self, directory: str | pathlib.Path, *, save_every: int, keep: int = 2, keep_best: int = 0,
                 async_save: bool = True, compression: bool = False):
        self.directory = pathlib.Path(directory).absolute()
        policies: list[Any] = [ocm.LatestN(n=max(int(keep), 1))]
        if keep_best > 0:
            # BestN keeps the highest values, so rank by negative loss.
            policies.append(ocm.BestN(get_metric_fn=lambda m: -float(m["loss"]), n=int(keep_best)))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(save_every), 1),
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            atomicity_options=ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.AUTO),
            # Temp dirs of saves killed mid-write are never listed as steps;
            # removing them on start keeps the dir tidy.
            cleanup_tmp_directories=True,
            create=True,
        )
        # PyTreeCheckpointHandler rather than StandardCheckpointHandler: only
        # it exposes `use_compression`. Restores read the format from the
        # checkpoint's metadata, so older (zarr3 + zstd) checkpoints still load.
        state_handler = ocp.PyTreeCheckpointHandler(use_compression=compression, use_zarr3=compression)
        self._stack_fn = None  # (tree structure, jitted stack_layers) for unrolled states
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": state_handler, "data": grain.checkpoint.CheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: PyTree, data_iterator: Any = None, *, metrics: Mapping[str, float] | None = None,
             force: bool = False) -> bool:
        """Starts an (async) save of `state` and the iterator position; returns whether it saved.

        The Grain iterator state is captured synchronously inside this call,
        so the iterator may be advanced as soon as it returns.
        """
        if layer_layout.is_unrolled(state):
            state = self._stacked(state)
        items = {"state": ocp.args.PyTreeSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        return self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def restore(self, abstract_state: PyTree, data_iterator: Any = None, step: int | None = None) -> tuple[PyTree, Any]:
        """Restores `state` (and the iterator in place) from `step` (default: latest).

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` with `.sharding`
            set: the target layout. It may be a different mesh from the one
            that saved; Orbax reshards on read.
          data_iterator: Grain iterator to reposition, or None.
        Returns:
          (state, data_iterator).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        # Read in the checkpoint's block layout (scanned; unrolled in checkpoints
        # written before layouts were unified), then convert to the target's.
        saved_tree = self.manager.item_metadata(step)["state"].tree
        read_target = layer_layout.match_layout(abstract_state, like=saved_tree)
        restore_args = ocp.checkpoint_utils.construct_restore_args(read_target)
        items = {"state": ocp.args.PyTreeRestore(item=read_target, restore_args=restore_args)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        state = restored["state"]
        if layer_layout.is_unrolled(read_target) != layer_layout.is_unrolled(abstract_state):
            state = jax.jit(lambda s: layer_layout.match_layout(s, like=abstract_state),
                            out_shardings=jax.tree.map(lambda a: a.sharding, abstract_state))(state)
        return state, (restored["data"] if data_iterator is not None else None)

    def _stacked(self, state: PyTree) -> PyTree:
        """`state` with unrolled block stacks stacked (a device copy), in the checkpoint layout."""
        if not all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state)):
            return layer_layout.stack_layers(state)  # host (numpy) leaves: no shardings to keep
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
        structure = jax.tree.structure(abstract)
        if self._stack_fn is None or self._stack_fn[0] != structure:
            out_shardings = jax.tree.map(lambda a: a.sharding, layer_layout.stack_layers(abstract))
            self._stack_fn = (structure, jax.jit(layer_layout.stack_layers, out_shardings=out_shardings))
        return self._stack_fn[1](state)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
    """ShapeDtypeStructs carrying the target shardings (restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def resolve_checkpoint_dir(path: str | pathlib.Path) -> pathlib.Path:
    """Accepts a workdir or its `checkpoints/` dir; returns the CheckpointManager dir."""
    path = pathlib.Path(path).absolute()
    if (path / CHECKPOINT_SUBDIR).is_dir():
        return path / CHECKPOINT_SUBDIR
    return path


def _read_metadata_file(checkpoint_dir: pathlib.Path, name: str) -> str:
    for directory in (checkpoint_dir, checkpoint_dir.parent):
        if (directory / name).exists():
            return (directory / name).read_text()
    raise FileNotFoundError(f"{name} not found in {checkpoint_dir} or its parent; not a seamo_jax checkpoint dir?")


def latest_complete_step(checkpoint_dir: str | pathlib.Path) -> int | None:
    """Newest fully written checkpoint step in a workdir or checkpoints/ dir (None if none)."""
    manager = ocp.CheckpointManager(resolve_checkpoint_dir(checkpoint_dir),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        return manager.latest_step()
    finally:
        manager.close()


def load_params(checkpoint_dir: str | pathlib.Path, step: int | None = None
                ) -> tuple[PyTree, ml_collections.ConfigDict, dict[str, sensors_lib.SensorSpec]]:
    """Reads the params of a training checkpoint for evaluation / export.

    Args:
      checkpoint_dir: a workdir or its `checkpoints/` dir.
      step: checkpoint step; default the latest complete one.
    Returns:
      (params, config, sensor_specs): params as a nested dict of `jax.Array`s
      on the first local device (optimiser state is not read), with block
      stacks in the layout of the run's model (`config.model.scan_layers`),
      the run's ConfigDict, and modality -> SensorSpec.
    """
    directory = resolve_checkpoint_dir(checkpoint_dir)
    config = ml_collections.ConfigDict(json.loads(_read_metadata_file(directory, "config.json")))
    specs = sensors_lib.specs_from_json(_read_metadata_file(directory, "sensors.json"))
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint in {directory}")
    if step not in manager.all_steps():
        raise FileNotFoundError(f"no complete checkpoint for step {step} in {directory}; have {manager.all_steps()}")
    # Read only the params subtree, placed on one local device whatever mesh
    # wrote it: evaluation runs on a different device layout than training.
    state_dir = directory / str(step) / "state"
    device = jax.local_devices()[0]
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(state_dir).item_metadata.tree
    params_meta = metadata["params"]
    sharding = jax.sharding.SingleDeviceSharding(device)
    target = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), params_meta)}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = checkpointer.restore(
        state_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
    manager.close()
    # Hand the params over in the layout of the run's model, as it would build them.
    params = restored["params"]
    scan_layers = bool(config.get("model", {}).get("scan_layers", True))
    params = layer_layout.stack_layers(params) if scan_layers else layer_layout.unstack_layers(params)
    return params, config, specs
