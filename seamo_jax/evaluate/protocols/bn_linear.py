"""BatchNorm1d + Linear probe heads, trained in JAX with a seeded minibatch plan.

- `batch_plan`: the seeded minibatch order (and augmented-view choice) of
  every epoch, drawn on the host so a run is reproducible from its seed.
- `torch_linear_init`: torch.nn.Linear's default initialisation, seeded.
- `train_bn_linear`: BatchNorm1d + Linear head trained with minibatches
  (one `jit`, epochs and steps as nested `lax.scan`s, `vmap` over a
  hyper-parameter sweep). BatchNorm follows torch.nn.BatchNorm1d: batch
  statistics (biased variance) in training, running statistics (momentum
  0.1, unbiased batch variance) at evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# ----------------------------------------------------------------------------------------------
# Minibatch order
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """The minibatches of every epoch.

    indices: [E, S, B] int32 train sample of each batch slot (0 on padding).
    views: [E, S, B] int32 augmented view of that sample (one draw per sample per epoch).
    mask: [E, S, B] float32, 1 for real rows, 0 for padding of a short last batch.
    """

    indices: np.ndarray
    views: np.ndarray
    mask: np.ndarray

    @property
    def steps_per_epoch(self) -> int:
        return int(self.indices.shape[1])


def batch_plan(seed: int, *, num_epochs: int, num_samples: int, batch_size: int, drop_last: bool,
               num_views: int = 1) -> BatchPlan:
    """Seeded shuffled minibatches (a torch DataLoader with shuffle=True, in numpy).

    Each epoch draws a fresh permutation of the N samples and, with
    num_views = A > 1, one view in [0, A) per sample, uniformly (so A = 4 views
    identity / hflip / vflip / hvflip is RandomHorizontalFlip(0.5) +
    RandomVerticalFlip(0.5)). drop_last=True drops the N mod B tail
    (S = N // B steps); drop_last=False keeps it as a short last batch padded
    to B with mask 0 (S = ceil(N / B)); a batch never exceeds N rows.
    """
    if num_epochs < 1 or num_samples < 1 or batch_size < 1 or num_views < 1:
        raise ValueError("num_epochs, num_samples, batch_size and num_views must be >= 1")
    batch_size = min(batch_size, num_samples)
    steps = num_samples // batch_size if drop_last else -(-num_samples // batch_size)
    rng = np.random.default_rng(seed)
    indices = np.zeros((num_epochs, steps * batch_size), np.int32)
    views = np.zeros_like(indices)
    mask = np.zeros(indices.shape, np.float32)
    for epoch in range(num_epochs):
        perm = rng.permutation(num_samples)[:steps * batch_size]
        view = rng.integers(0, num_views, num_samples) if num_views > 1 else np.zeros(num_samples, np.int64)
        indices[epoch, :len(perm)] = perm
        views[epoch, :len(perm)] = view[perm]
        mask[epoch, :len(perm)] = 1.0
    shape = (num_epochs, steps, batch_size)
    return BatchPlan(indices.reshape(shape), views.reshape(shape), mask.reshape(shape))


def torch_linear_init(seed: int, in_features: int, out_features: int,
                      weight_std: float | None = None) -> dict[str, np.ndarray]:
    """torch.nn.Linear's default init, transposed to W [D, C], b [C], drawn from numpy default_rng(seed).

    W ~ U(-1/sqrt(D), 1/sqrt(D)) (kaiming_uniform, a = sqrt(5)), or, with
    `weight_std`, timm trunc_normal_(std) (normal cut at +-2 absolute); b ~ U(-1/sqrt(D), 1/sqrt(D)).
    """
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(in_features)
    if weight_std is None:
        w = rng.uniform(-bound, bound, (in_features, out_features))
    else:
        w = np.clip(rng.normal(0.0, weight_std, (in_features, out_features)), -2.0, 2.0)
    b = rng.uniform(-bound, bound, (out_features,))
    return {"w": w.astype(np.float32), "b": b.astype(np.float32)}


# ----------------------------------------------------------------------------------------------
# BatchNorm1d + Linear training
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BNLinearConfig:
    """Static settings of a BatchNorm1d + Linear head.

    loss: "cross_entropy" (torch CrossEntropyLoss, mean over the batch) or
      "multilabel_soft_margin" (torch MultiLabelSoftMarginLoss: BCE-with-logits
      averaged over classes, then over the batch).
    bn_affine: learnable BatchNorm scale / shift (gamma = 1, beta = 0 at start).
    bn_eps / bn_momentum: torch BatchNorm1d eps and running-stat momentum.
    """

    loss: str
    bn_affine: bool
    bn_eps: float
    bn_momentum: float = 0.1


# make_optimizer(hyper, steps_per_epoch, num_epochs) -> optax transformation; hyper is a dict
# of traced scalars (one sweep entry), so it must be a module-level function (static jit arg).
OptimizerFactory = Callable[[Mapping[str, jax.Array], int, int], optax.GradientTransformation]


def _head_loss(params: dict, xhat: jax.Array, targets: jax.Array, mask: jax.Array, config: BNLinearConfig):
    h = xhat * params["gamma"] + params["beta"] if config.bn_affine else xhat
    logits = h @ params["w"] + params["b"]
    if config.loss == "cross_entropy":
        per_row = -jnp.sum(targets * jax.nn.log_softmax(logits), -1)
    else:
        per_row = jnp.mean(jax.nn.softplus(logits) - targets * logits, -1)
    return jnp.sum(mask * per_row) / jnp.sum(mask)


def _train_one(views, targets, indices, view_idx, mask, init_params, hyper, *,
               make_optimizer: OptimizerFactory, config: BNLinearConfig):
    num_epochs, steps, _ = indices.shape
    tx = make_optimizer(hyper, steps, num_epochs)
    dim = views.shape[-1]
    bn0 = (jnp.zeros((dim,), jnp.float32), jnp.ones((dim,), jnp.float32))

    def step(carry, batch):
        params, opt_state, (run_mean, run_var) = carry
        idx, view, m = batch
        x = views[view, idx]                                    # [B, D]
        n = jnp.sum(m)
        mean = jnp.sum(m[:, None] * x, 0) / n
        var = jnp.sum(m[:, None] * (x - mean) ** 2, 0) / n      # biased: used to normalise
        xhat = (x - mean) * jax.lax.rsqrt(var + config.bn_eps)
        grads = jax.grad(_head_loss)(params, xhat, targets[idx], m, config)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        mom = config.bn_momentum
        run_mean = (1 - mom) * run_mean + mom * mean
        run_var = (1 - mom) * run_var + mom * var * n / jnp.maximum(n - 1, 1)  # unbiased
        return (params, opt_state, (run_mean, run_var)), None

    def epoch(carry, batches):
        carry, _ = jax.lax.scan(step, carry, batches)
        params, _, (run_mean, run_var) = carry
        return carry, {**params, "running_mean": run_mean, "running_var": run_var}

    carry = (init_params, tx.init(init_params), bn0)
    _, per_epoch = jax.lax.scan(epoch, carry, (indices, view_idx, mask))
    return per_epoch


@functools.partial(jax.jit, static_argnames=("make_optimizer", "config"))
def _train_sweep(views, targets, indices, view_idx, mask, init_params, hypers, make_optimizer, config):
    fn = functools.partial(_train_one, make_optimizer=make_optimizer, config=config)
    return jax.vmap(fn, in_axes=(None, None, None, None, None, None, 0))(
        views, targets, indices, view_idx, mask, init_params, hypers)


def train_bn_linear(views: np.ndarray, targets: np.ndarray, plan: BatchPlan, init: Mapping[str, np.ndarray],
                    hypers: Mapping[str, Sequence[float]], make_optimizer: OptimizerFactory,
                    config: BNLinearConfig) -> dict[str, np.ndarray]:
    """Trains one BatchNorm1d + Linear head per sweep entry, all with the same batches and init.

    Args:
      views: [A, N, D] train features (A augmented views).
      targets: [N, C] one-hot or multi-hot float targets.
      plan: minibatch order (`batch_plan`).
      init: {"w": [D, C], "b": [C]} starting head (BatchNorm gamma = 1, beta = 0).
      hypers: {name: [L] values}: L sweep entries, passed to make_optimizer one at a time.
      make_optimizer: module-level OptimizerFactory.
      config: loss and BatchNorm settings.
    Returns:
      Per-epoch state after each epoch, leading axes [L, E]: "w" [L, E, D, C],
      "b" [L, E, C], "running_mean" / "running_var" [L, E, D], and with
      bn_affine "gamma" / "beta" [L, E, D].
    """
    params = {"w": jnp.asarray(init["w"], jnp.float32), "b": jnp.asarray(init["b"], jnp.float32)}
    if config.bn_affine:
        dim = params["w"].shape[0]
        params.update(gamma=jnp.ones((dim,), jnp.float32), beta=jnp.zeros((dim,), jnp.float32))
    hypers = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in hypers.items()}
    out = _train_sweep(jnp.asarray(views, jnp.float32), jnp.asarray(targets, jnp.float32),
                       jnp.asarray(plan.indices), jnp.asarray(plan.views), jnp.asarray(plan.mask),
                       params, hypers, make_optimizer, config)
    return jax.tree.map(np.asarray, out)


@functools.partial(jax.jit, static_argnames=("eps",))
def _eval_logits(state: dict, x: jax.Array, eps: float) -> jax.Array:
    scale = jax.lax.rsqrt(state["running_var"] + eps)                         # [..., D]
    shift = -state["running_mean"] * scale
    if "gamma" in state:
        scale, shift = scale * state["gamma"], shift * state["gamma"] + state["beta"]
    w = state["w"] * scale[..., :, None]                                       # BN folded into W
    b = state["b"] + jnp.einsum("...d,...dc->...c", shift, state["w"])
    return jnp.einsum("md,...dc->...mc", x, w) + b[..., None, :]


def bn_linear_logits(state: Mapping[str, np.ndarray], x: np.ndarray, eps: float) -> np.ndarray:
    """Eval-mode logits [..., M, C] of heads `state` (leading axes [...]) on features x [M, D]."""
    return np.asarray(_eval_logits({k: jnp.asarray(v) for k, v in state.items()}, jnp.asarray(x, jnp.float32),
                                   float(eps)))


def select(state: Mapping[str, np.ndarray], *index: Any) -> dict[str, np.ndarray]:
    """state[k][index] for every key (e.g. select(state, 0, -1): first sweep entry, last epoch)."""
    return {k: v[index] for k, v in state.items()}
