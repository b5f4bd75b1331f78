"""The training state: everything a checkpoint must hold to resume bit-exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from seamo_jax.parallel.init import like_params_shardings, replicated

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Explicit pytree of training state (the optimiser itself stays outside).

    Attributes:
      step: int32 scalar, number of optimiser updates applied.
      params: model params (plain nested dict of arrays).
      opt_state: optax state for `params`.
      rng: uint32 `[2]` raw PRNG key data; per-step keys are
        `fold_in(rng, step)`, so the stream does not depend on how often
        training was interrupted. Stored raw (not a typed key) so it
        checkpoints as an ordinary array.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    rng: jax.Array


def create_train_state(params: PyTree, tx: optax.GradientTransformation, seed_key: jax.Array) -> TrainState:
    """Fresh state at step 0. `seed_key`: typed key or raw uint32 key data."""
    raw = jax.random.key_data(seed_key) if jnp.issubdtype(seed_key.dtype, jax.dtypes.prng_key) else seed_key
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=raw)


def state_shardings(abstract_state: TrainState, params_shardings: PyTree, mesh: Mesh) -> TrainState:
    """NamedSharding tree for a TrainState: opt state sharded like params, rest replicated."""
    rep = replicated(mesh)
    return TrainState(
        step=rep,
        params=params_shardings,
        opt_state=like_params_shardings(abstract_state.opt_state, params_shardings, mesh),
        rng=rep,
    )


def step_key(state: TrainState) -> jax.Array:
    """Typed PRNG key for this step (dropout etc.)."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
