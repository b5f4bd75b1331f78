"""The jitted train step: forward + backward (+ micro-batch accumulation) + update.

Compiled once with explicit in/out shardings (state sharded like the params,
batch split over the data axes, metrics replicated) and the state donated, so
the update happens in place in device memory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seamo_jax.parallel.init import replicated
from seamo_jax.train.state import TrainState, step_key

PyTree = Any
Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]


@contextlib.contextmanager
def tracing_context(mesh: Mesh, rules: Sequence[tuple], activation_constraints: bool):
    """Mesh + logical rules for tracing (no-op when constraints are off)."""
    if not activation_constraints:
        yield
        return
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


BatchFn = Callable[[Batch], Batch]


def _identity(batch: Batch) -> Batch:
    return batch


def _loss_and_losses(model: nn.Module, params: PyTree, batch: Batch, key: jax.Array,
                     prepare_batch: BatchFn = _identity) -> tuple[jax.Array, dict]:
    """Scalar loss and the model's dict of named scalar losses (per modality/season)."""
    loss, aux = model.apply({"params": params}, prepare_batch(batch), train=True, rngs={"dropout": key})
    return loss, dict(aux["losses"])


def _split_micro_batches(batch: Batch, num_micro: int, mesh: Mesh, batch_axes: Sequence[str]) -> Batch:
    """[B, ...] -> [num_micro, B / num_micro, ...], keeping dim 1 split over the data axes.

    Reshaping to [B/k, k] then swapping keeps every device's rows local (each
    device's contiguous block of rows splits into its own micro-batches), so
    no data moves between devices.
    """
    axes = tuple(a for a in batch_axes if a in mesh.axis_names) or None

    def split(x):
        x = x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:])
        x = jnp.swapaxes(x, 0, 1)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, axes)))

    return jax.tree.map(split, batch)


def train_step_fn(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    *,
    grad_accum_steps: int = 1,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    prepare_batch: BatchFn = _identity,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The un-jitted step `(state, batch) -> (new_state, metrics)`.

    `prepare_batch` runs first on every (micro-)batch inside the step, e.g.
    `device_views.materialise` (config.data.views = "device").

    metrics: "loss", "loss/<name>" for every entry of `aux["losses"]`,
    "grad_norm" (before clipping), "lr" (used for this update), "param_norm",
    all float32 scalars averaged over micro-batches.
    """
    grad_fn = jax.value_and_grad(lambda p, b, k: _loss_and_losses(model, p, b, k, prepare_batch), has_aux=True)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = step_key(state)
        if grad_accum_steps == 1:
            (loss, losses), grads = grad_fn(state.params, batch, key)
        else:
            micro = _split_micro_batches(batch, grad_accum_steps, mesh, batch_axes)
            zero_grads = jax.tree.map(jnp.zeros_like, state.params)

            def body(carry, xs):
                grads_sum, loss_sum, losses_sum = carry
                index, micro_batch = xs
                (loss_i, losses_i), grads_i = grad_fn(state.params, micro_batch, jax.random.fold_in(key, index))
                grads_sum = jax.tree.map(jnp.add, grads_sum, grads_i)
                losses_sum = jax.tree.map(jnp.add, losses_sum, losses_i)
                return (grads_sum, loss_sum + loss_i, losses_sum), None

            # Shapes of the named losses, for a zero-initialised carry.
            first = jax.tree.map(lambda x: x[0], micro)
            losses_shape = jax.eval_shape(lambda: _loss_and_losses(model, state.params, first, key, prepare_batch)[1])
            zero_losses = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), losses_shape)
            (grads, loss, losses), _ = jax.lax.scan(
                body, (zero_grads, jnp.zeros((), jnp.float32), zero_losses),
                (jnp.arange(grad_accum_steps), micro))
            inv = 1.0 / grad_accum_steps
            grads = jax.tree.map(lambda g: g * inv, grads)
            loss = loss * inv
            losses = jax.tree.map(lambda x: x * inv, losses)

        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss.astype(jnp.float32),
            "grad_norm": optax.global_norm(grads).astype(jnp.float32),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "param_norm": optax.global_norm(params).astype(jnp.float32),
        }
        metrics.update({f"loss/{k}": jnp.asarray(v, jnp.float32) for k, v in losses.items()})
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return step


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    rules: Sequence[tuple],
    state_shardings: TrainState,
    batch_sharding: NamedSharding,
    *,
    grad_accum_steps: int = 1,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    activation_constraints: bool = True,
    prepare_batch: BatchFn = _identity,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Jitted, state-donating train step with explicit shardings.

    Args:
      state_shardings: NamedSharding tree matching TrainState.
      batch_sharding: one sharding applied to every batch leaf (dim 0 split).
      activation_constraints: trace under the mesh + logical rules so the
        model's `nn.with_logical_constraint`s pin activation shardings; False
        leaves activations to XLA's propagation from params and batch.
      prepare_batch: see `train_step_fn`.
    Returns:
      `step(state, batch) -> (state, metrics)`; the input state is donated
      (do not use it afterwards); metrics are replicated scalars.
    """
    fn = train_step_fn(model, tx, schedule, mesh, grad_accum_steps=grad_accum_steps, batch_axes=batch_axes,
                       prepare_batch=prepare_batch)
    jitted = jax.jit(fn, in_shardings=(state_shardings, batch_sharding),
                     out_shardings=(state_shardings, replicated(mesh)), donate_argnums=(0,))

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        # Mesh + rules must be active while tracing so the model's logical
        # activation constraints resolve to this mesh.
        with tracing_context(mesh, rules, activation_constraints):
            return jitted(state, batch)

    step.jitted = jitted  # for AOT lowering / cost analysis in benchmarks
    return step


def make_predict_fn(
    model: nn.Module, mesh: Mesh, rules: Sequence[tuple], params_shardings: PyTree, batch_sharding: NamedSharding,
    activation_constraints: bool = True, prepare_batch: BatchFn = _identity,
) -> Callable[[PyTree, Batch], dict]:
    """Jitted `(params, batch) -> aux` (train=False) plus aux["views"] (the model's input views,
    [B, S, h, w, C_m] per modality), used for reconstruction images."""

    def predict(params, batch):
        batch = prepare_batch(batch)
        _, aux = model.apply({"params": params}, batch, train=False)
        return {**aux, "views": batch["views"]}

    jitted = jax.jit(predict, in_shardings=(params_shardings, batch_sharding))

    def call(params, batch):
        with tracing_context(mesh, rules, activation_constraints):
            return jitted(params, batch)

    return call
