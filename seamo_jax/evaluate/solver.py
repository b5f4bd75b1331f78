"""Deterministic full-batch L-BFGS for the convex probe objectives.

Linear probes are small convex problems (a [D, C] matrix), so instead of SGD
with a schedule to tune we minimise the exact full-batch objective with
L-BFGS (optax.lbfgs, zoom line search) to convergence, the way sklearn /
CLIP-style linear-probe protocols do. The whole loop is one `lax.while_loop`
inside `jit`: no host round trips per iteration, and the same inputs give the
same bits every run (no data order, no randomness).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


def padded_size(num_rows: int, minimum: int = 64) -> int:
    """Next power of two >= num_rows (>= minimum): row counts of a probe grid share few compilations."""
    return max(minimum, 1 << max(int(num_rows) - 1, 0).bit_length())


def pad_with_weights(features: np.ndarray, targets: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Zero-pads rows to `padded_size` and returns (features, targets, weights), weight 0 on padding.

    Objectives average per-sample losses with these weights, so padding does
    not change the optimum, while every label fraction / validation carve of
    similar size reuses one compiled solver instead of compiling its own.
    """
    rows = padded_size(len(features))
    pad = rows - len(features)
    features = np.concatenate([np.asarray(features, np.float32), np.zeros((pad, *features.shape[1:]), np.float32)])
    targets = np.concatenate([np.asarray(targets, np.float32), np.zeros((pad, *targets.shape[1:]), np.float32)])
    weights = np.concatenate([np.ones(rows - pad, np.float32), np.zeros(pad, np.float32)])
    return jnp.asarray(features), jnp.asarray(targets), jnp.asarray(weights)


@dataclasses.dataclass(frozen=True)
class SolverInfo:
    """How a minimisation ended: iterations used, final objective and gradient norm."""

    iterations: int
    loss: float
    grad_norm: float
    converged: bool


def minimise(objective: Callable[..., jax.Array], init_params: PyTree, hyper: float,
             data: tuple[jax.Array, ...], *, max_iter: int = 500, tol: float = 1e-5,
             memory_size: int = 10) -> tuple[PyTree, SolverInfo]:
    """Minimises `objective(params, hyper, *data)` over params with L-BFGS.

    Args:
      objective: smooth convex scalar function, defined at module level so
        jit caches one compilation per (objective, data shapes).
      init_params: starting point (zeros for logistic regression).
      hyper: float scalar (e.g. the L2 weight), traced so one compilation
        serves a whole grid.
      data: arrays the objective reads (features, targets), traced arguments
        rather than closed-over constants so large feature sets are not
        baked into the compiled program.
      max_iter: iteration cap; hitting it is reported as converged=False.
      tol: stop when the global L2 norm of the gradient falls below `tol`.
    Returns:
      (params, SolverInfo).
    """
    params, iterations, loss, grad_norm = _run_lbfgs(objective, max_iter, float(tol), memory_size,
                                                     init_params, jnp.asarray(hyper, jnp.float32), tuple(data))
    grad_norm = float(grad_norm)
    return params, SolverInfo(iterations=int(iterations), loss=float(loss), grad_norm=grad_norm,
                              converged=grad_norm < tol)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _run_lbfgs(objective, max_iter: int, tol: float, memory_size: int, init_params, hyper, data):
    def loss_fn(params):
        return objective(params, hyper, *data)

    optimiser = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(loss_fn)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimiser.update(grad, state, params, value=value, grad=grad, value_fn=loss_fn)
        return optax.apply_updates(params, updates), state

    def keep_going(carry):
        _, state = carry
        count = optax.tree_utils.tree_get(state, "count")
        grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

    params, state = jax.lax.while_loop(keep_going, step, (init_params, optimiser.init(init_params)))
    # Report the objective and gradient at the returned point, not the line search's last probe.
    loss, grad = jax.value_and_grad(loss_fn)(params)
    return params, optax.tree_utils.tree_get(state, "count"), loss, optax.tree_utils.tree_norm(grad)
