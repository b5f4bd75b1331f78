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

from typing import Any, Mapping

import grain
from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from seamo_jax import sensors as sensors_lib
from seamo_jax.configs import config_from_json
from seamo_jax.paths import PathLike, user_path
from seamo_jax.models import layer_layout

PyTree = Any
CHECKPOINT_SUBDIR = "checkpoints"


def sensor_specs_from_config(data_config: Any) -> dict[str, sensors_lib.SensorSpec]:
    """modality -> SensorSpec for the modalities the run trains on."""
    return {m: sensors_lib.get_sensor(data_config.sensors[m]) for m in data_config.modalities}


def write_run_metadata(workdir: PathLike, config: ml_collections.ConfigDict,
                       specs: Mapping[str, sensors_lib.SensorSpec]) -> None:
    """Writes config.json and sensors.json into the workdir and its checkpoint dir (process 0 only)."""
    if jax.process_index() != 0:
        return
    workdir = user_path(workdir)
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

    def __init__(self, directory: PathLike, *, save_every: int, keep: int = 2, keep_best: int = 0,
                 async_save: bool = True, compression: bool = False):
        self.directory = user_path(directory)
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


def resolve_checkpoint_dir(path: PathLike) -> epath.Path:
    """Accepts a workdir or its `checkpoints/` dir (local or a bucket URL); returns the CheckpointManager dir."""
    path = user_path(path)
    if (path / CHECKPOINT_SUBDIR).is_dir():
        return path / CHECKPOINT_SUBDIR
    return path


def _read_metadata_file(checkpoint_dir: epath.Path, name: str) -> str:
    for directory in (checkpoint_dir, checkpoint_dir.parent):
        if (directory / name).exists():
            return (directory / name).read_text()
    raise FileNotFoundError(f"{name} not found in {checkpoint_dir} or its parent; not a seamo_jax checkpoint dir?")


def latest_complete_step(checkpoint_dir: PathLike) -> int | None:
    """Newest fully written checkpoint step in a workdir or checkpoints/ dir (None if none)."""
    directory = resolve_checkpoint_dir(checkpoint_dir)
    if not directory.exists():  # before Orbax, which would log read-only notices about a missing folder
        raise FileNotFoundError(f"checkpoint directory {user_path(checkpoint_dir)} does not exist")
    manager = ocp.CheckpointManager(directory,
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        return manager.latest_step()
    finally:
        manager.close()


def read_run_metadata(checkpoint_dir: PathLike) -> tuple[ml_collections.ConfigDict, dict[str, sensors_lib.SensorSpec]]:
    """(config, modality -> SensorSpec) of the run that wrote a workdir or checkpoints/ dir."""
    directory = resolve_checkpoint_dir(checkpoint_dir)
    config = config_from_json(_read_metadata_file(directory, "config.json"))  # lists back to tuples
    specs = sensors_lib.specs_from_json(_read_metadata_file(directory, "sensors.json"))
    return config, specs


def _state_dir(directory: epath.Path, step: int | None) -> epath.Path:
    """`<directory>/<step>/state` of a complete checkpoint (default: the latest)."""
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        steps = list(manager.all_steps())
        step = manager.latest_step() if step is None else step
    finally:
        manager.close()
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint in {directory}")
    if step not in steps:
        raise FileNotFoundError(f"no complete checkpoint for step {step} in {directory}; have {steps}")
    return directory / str(step) / "state"


def flat_leaves(tree: PyTree) -> dict[str, Any]:
    """{keystr(path): leaf} of a pytree (the names warm-start reports use)."""
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _unflatten_like(tree: PyTree, flat: Mapping[str, Any]) -> dict:
    """The nested dict of `tree` holding only the leaves whose key string is in `flat`."""
    out: dict = {}
    for path, _ in jax.tree_util.tree_leaves_with_path(tree):
        key = jax.tree_util.keystr(path)
        if key not in flat:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part.key, {})
        node[path[-1].key] = flat[key]
    return out


def restore_params(checkpoint_dir: PathLike, target: PyTree, step: int | None = None
                   ) -> tuple[dict, dict[str, list[str]]]:
    """Reads a checkpoint's params straight into the shardings of `target` (partial where the trees differ).

    Every process reads only the shards its devices hold (Orbax/TensorStore),
    so no host ever holds the full params and nothing crosses hosts: this is
    how a pod warm-starts phase 2 from phase 1 (MaxText's partial restore).

    Args:
      checkpoint_dir: a workdir or its `checkpoints/` dir (local or URL).
      target: abstract params (`jax.ShapeDtypeStruct`s with `.sharding`), in
        either block layout (models/layer_layout.py).
      step: default the latest complete one.
    Returns:
      (restored, report): `restored` is the nested dict of the target's
      leaves that the checkpoint has with the same shape, as global arrays in
      the CHECKPOINT's block layout (scanned), sharded like the target;
      report lists "copied", "fresh" (missing or differently shaped) and
      "unused" (checkpoint-only) leaf paths, in the target's layout.
    """
    state_dir = _state_dir(resolve_checkpoint_dir(checkpoint_dir), step)
    checkpointer = ocp.PyTreeCheckpointer()
    saved = checkpointer.metadata(state_dir).item_metadata.tree["params"]
    read_target = layer_layout.match_layout(target, like=saved)
    saved_flat, target_flat = flat_leaves(saved), flat_leaves(read_target)
    matching = {k: v for k, v in target_flat.items()
                if k in saved_flat and tuple(saved_flat[k].shape) == tuple(v.shape)}
    item = {"params": _unflatten_like(read_target, matching)}
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
    # Report in the target's own layout, so names match the model's params.
    copied_like_target = flat_leaves(layer_layout.match_layout(_unflatten_like(read_target, matching), like=target))
    target_keys = set(flat_leaves(target))
    report = {"copied": sorted(copied_like_target), "fresh": sorted(target_keys - set(copied_like_target)),
              "unused": sorted(set(saved_flat) - set(matching))}
    return restored["params"], report


def load_params(checkpoint_dir: PathLike, step: int | None = None
                ) -> tuple[PyTree, ml_collections.ConfigDict, dict[str, sensors_lib.SensorSpec]]:
    """Reads the params of a training checkpoint for evaluation / export (one process).

    Args:
      checkpoint_dir: a workdir or its `checkpoints/` dir (local or URL).
      step: checkpoint step; default the latest complete one.
    Returns:
      (params, config, sensor_specs): params as a nested dict of `jax.Array`s
      on the first local device (optimiser state is not read), with block
      stacks in the layout of the run's model (`config.model.scan_layers`),
      the run's ConfigDict, and modality -> SensorSpec. Training on several
      hosts warm-starts through `restore_params` instead, which never
      gathers the params on one device.
    """
    directory = resolve_checkpoint_dir(checkpoint_dir)
    config, specs = read_run_metadata(directory)
    state_dir = _state_dir(directory, step)
    # Read only the params subtree, placed on one local device whatever mesh
    # wrote it: evaluation runs on a different device layout than training.
    checkpointer = ocp.PyTreeCheckpointer()
    params_meta = checkpointer.metadata(state_dir).item_metadata.tree["params"]
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), params_meta)}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = checkpointer.restore(
        state_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
    # Hand the params over in the layout of the run's model, as it would build them.
    params = restored["params"]
    scan_layers = bool(config.model.scan_layers)
    params = layer_layout.stack_layers(params) if scan_layers else layer_layout.unstack_layers(params)
    return params, config, specs
