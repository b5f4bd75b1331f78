"""Everything the loop needs, built from the config: mesh, model, optimiser,
sharded state (fresh, resumed or warm-started), data iterator, checkpointer,
compiled step. Kept apart from the loop so benchmarks and tests build the
same objects without running it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import optax
from jax.sharding import Mesh

from seamo_jax import models, parallel
from seamo_jax.data import device_views
from seamo_jax.data.global_batch import loader_shard, to_global_batch
from seamo_jax.data.pipeline import make_train_iterator
from seamo_jax.paths import PathLike, user_path
from seamo_jax.sensors import SensorSpec
from seamo_jax.train import checkpoint as ckpt_lib
from seamo_jax.train.optimizer import make_optimizer
from seamo_jax.train.state import TrainState, create_train_state, state_shardings
from seamo_jax.train.step import make_predict_fn, make_train_step
from seamo_jax.train.warm_start import warm_start_params

PyTree = Any


@dataclasses.dataclass
class TrainSetup:
    config: ml_collections.ConfigDict
    mesh: Mesh
    rules: tuple
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    state: TrainState
    shardings: TrainState
    sensor_specs: dict[str, SensorSpec]
    train_step: Callable
    predict: Callable
    num_params: int
    iterator: Any = None
    checkpointer: ckpt_lib.Checkpointer | None = None
    warm_start_report: dict | None = None

    batch_sharding: Any = None  # NamedSharding of the batch axis, from the config's batch rules

    def to_global(self, local_batch: Any) -> Any:
        """This process's rows (numpy) -> the global batch, placed with the batch rules."""
        return to_global_batch(local_batch, self.batch_sharding)


def check_batch_layout(config: ml_collections.ConfigDict, mesh: Mesh, batch_axes: tuple[str, ...]) -> None:
    """The global batch must split evenly over data shards x micro-batches."""
    shards = parallel.data_parallel_size(mesh, batch_axes)
    accum = int(config.optim.grad_accum_steps)
    batch = int(config.data.batch_size)
    if batch % (shards * accum):
        raise ValueError(
            f"config.data.batch_size={batch} must be divisible by data shards ({shards}, mesh {dict(mesh.shape)}) "
            f"x optim.grad_accum_steps ({accum})")
    loaders = loader_shard(parallel.batch_sharding(mesh, batch_axes)).count
    if batch % loaders:
        raise ValueError(f"config.data.batch_size={batch} not divisible by the {loaders} data shards the processes load")


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, seed: int, mesh: Mesh, rules: tuple,
                     init_batch_size: int) -> tuple[TrainState, TrainState, PyTree]:
    """Fresh, born-sharded TrainState.

    Returns:
      (state, state_shardings, params_shardings).
    """
    init_key, train_key = jax.random.split(jax.random.key(seed))
    example = models.example_batch(model, batch_size=init_batch_size)
    init_fn = lambda key: model.init({"params": key, "dropout": key}, example, train=False)["params"]  # noqa: E731
    params, params_shardings = parallel.sharded_init(init_fn, mesh, rules, init_key)
    make_state = lambda p, k: create_train_state(p, tx, k)  # noqa: E731
    abstract = jax.eval_shape(make_state, params, train_key)
    shardings = state_shardings(abstract, params_shardings, mesh)
    state = jax.jit(make_state, out_shardings=shardings)(params, train_key)
    return state, shardings, params_shardings


def build_train_setup(config: ml_collections.ConfigDict, workdir: PathLike | None, source: Any, *,
                      mesh: Mesh | None = None) -> TrainSetup:
    """Builds the full training setup; resumes from `<workdir>/checkpoints` if it holds a checkpoint.

    Args:
      source: random-access record source (None: no iterator, e.g. benchmarks
        feeding synthetic batches).
      workdir: None: no checkpointer and no metadata files.
      mesh: default `make_mesh(config.mesh)`.
    """
    mesh = parallel.make_mesh(config.mesh) if mesh is None else mesh
    rules = parallel.logical_rules(config.sharding_rules, mesh)
    batch_axes = parallel.batch_mesh_axes(rules)
    check_batch_layout(config, mesh, batch_axes)
    specs = ckpt_lib.sensor_specs_from_config(config.data)
    model = models.build_model_from_config(config, specs, mesh=mesh)  # resolves model.cpu_kernels once
    tx, schedule = make_optimizer(config.optim, int(config.train.num_steps))
    state, shardings, params_shardings = init_train_state(
        model, tx, int(config.seed), mesh, rules, parallel.data_parallel_size(mesh, batch_axes))
    batch_sharding = parallel.batch_sharding(mesh, batch_axes)
    constraints = bool(config.train.activation_constraints)  # base.py says why
    # config.data.views = "device": the step makes the views from the batch's tiles (no-op on host views).
    prepare_batch = functools.partial(device_views.materialise, view_spec=device_views.view_spec_from_config(config))
    setup = TrainSetup(
        config=config, mesh=mesh, rules=rules, model=model, tx=tx, schedule=schedule, state=state,
        shardings=shardings, sensor_specs=specs,
        train_step=make_train_step(model, tx, schedule, mesh, rules, shardings, batch_sharding,
                                   grad_accum_steps=int(config.optim.grad_accum_steps),
                                   batch_axes=batch_axes, activation_constraints=constraints,
                                   prepare_batch=prepare_batch),
        predict=make_predict_fn(model, mesh, rules, params_shardings, batch_sharding, constraints, prepare_batch),
        num_params=models.param_count(state.params), batch_sharding=batch_sharding,
    )
    if source is not None:
        shard = loader_shard(batch_sharding)  # processes holding the same batch rows read the same records
        setup.iterator = make_train_iterator(config, source, shard_index=shard.index, shard_count=shard.count)
    if workdir is None:
        return setup
    ckpt_lib.write_run_metadata(workdir, config, specs)
    train = config.train
    setup.checkpointer = ckpt_lib.Checkpointer(
        user_path(workdir) / ckpt_lib.CHECKPOINT_SUBDIR, save_every=int(train.checkpoint_every),
        keep=int(train.keep_checkpoints), keep_best=int(train.keep_best),
        async_save=bool(train.async_checkpointing),
        compression=bool(train.checkpoint_compression))
    if setup.checkpointer.latest_step() is not None:
        target = ckpt_lib.abstract_with_shardings(jax.eval_shape(lambda s: s, state), shardings)
        del state, setup.state  # free the fresh state before reading the checkpoint
        setup.state, setup.iterator = setup.checkpointer.restore(target, setup.iterator)
    elif config.init_from:
        params, setup.warm_start_report = warm_start_params(state.params, config.init_from, params_shardings)
        # Re-create the optimiser state for the new params (phase 2 starts its own schedule).
        setup.state = jax.jit(lambda p: state.replace(params=p, opt_state=tx.init(p)),
                              out_shardings=shardings)(params)
    return setup
