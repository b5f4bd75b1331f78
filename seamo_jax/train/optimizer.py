"""AdamW with warmup + cosine, decoupled weight decay on kernels only,
global-norm clipping and optional layer-wise lr decay, built from `config.optim`.

Gradient accumulation is not an optax wrapper here: the train step scans over
micro-batches (`config.optim.grad_accum_steps`) and applies one update per
global batch, so `state.step`, the schedule and checkpoints all count real
optimiser updates.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

PyTree = Any

# Param names (last path element) that get weight decay. Everything else --
# biases, LayerNorm scales, position/season/modality embeddings, cls/mask
# tokens -- is excluded, as in MAE/BEiT. Scanned blocks stack params along a
# leading `layers` axis, so the rule is name-based rather than ndim-based.
DECAY_PARAM_NAMES = ("kernel",)


def _path_names(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def weight_decay_mask(params: PyTree) -> PyTree:
    """Bool tree: True where weight decay applies (`kernel` leaves)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _path_names(path)[-1] in DECAY_PARAM_NAMES, params)


def learning_rate_schedule(optim_config: Any, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, cosine to `learning_rate * end_lr_ratio` at `num_steps`."""
    peak = float(optim_config.learning_rate)
    warmup = int(min(optim_config.warmup_steps, max(num_steps - 1, 0)))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(int(num_steps), warmup + 1),
        end_value=peak * float(optim_config.end_lr_ratio),
    )


def layer_decay_scales(
    params: PyTree,
    decay: float,
    *,
    scanned_pattern: str = r"^encoder/blocks/",
    unrolled_pattern: str = r"^encoder/blocks_(\d+)/",
    embed_pattern: str = r"^encoder/(patch_embed|pos_embed|cls_token|season_embed|modality_embed)",
) -> PyTree:
    """Per-leaf lr multipliers for layer-wise lr decay (BEiT style).

    With L encoder blocks, block i (0-based) gets `decay ** (L - i)`, the
    input embeddings `decay ** (L + 1)`, everything else (final encoder norm,
    fusion, decoders) 1. Scanned blocks stack their params `[L, ...]`, so
    their multiplier is an `[L, 1, ...]` array broadcast over the rest.
    Default patterns follow `seamo_jax.models` param names.

    Args:
      params: the params tree (only shapes and paths are used).
      decay: in (0, 1]; 1 means no decay.
      scanned_pattern / unrolled_pattern: regexes on the '/'-joined path for
        scanned blocks (leading axis = block) / unrolled blocks (group 1 = index).
      embed_pattern: regex selecting the input embeddings.
    """
    named = [("/".join(_path_names(path)), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)]
    depths = [leaf.shape[0] for name, leaf in named if re.search(scanned_pattern, name)]
    depths += [int(m.group(1)) + 1 for name, _ in named if (m := re.search(unrolled_pattern, name))]
    num_layers = max(depths, default=0)

    def scale(path: tuple, leaf: Any) -> Any:
        name = "/".join(_path_names(path))
        if re.search(embed_pattern, name):
            return jnp.float32(decay ** (num_layers + 1))
        if re.search(scanned_pattern, name):
            per_layer = jnp.asarray([decay ** (num_layers - i) for i in range(num_layers)], jnp.float32)
            return per_layer.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
        if match := re.search(unrolled_pattern, name):
            return jnp.float32(decay ** (num_layers - int(match.group(1))))
        return jnp.float32(1.0)

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_tree(scales_fn: Callable[[PyTree], PyTree]) -> optax.GradientTransformation:
    """Multiplies updates leaf-wise by `scales_fn(params)` (stateless)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        scales = scales_fn(updates)
        return jax.tree.map(lambda u, s: (u * s).astype(u.dtype), updates, scales), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(optim_config: Any, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optimiser from `config.optim`.

    Keys: learning_rate, warmup_steps, end_lr_ratio, weight_decay, b1, b2,
    clip_grad_norm (<= 0 disables), layer_decay (1.0 disables).
    Returns:
      (tx, schedule): `schedule(step)` is the lr logged by the train step.
    """
    schedule = learning_rate_schedule(optim_config, num_steps)
    parts = []
    if float(optim_config.clip_grad_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(optim_config.clip_grad_norm)))
    parts.append(optax.adamw(
        schedule,
        b1=float(optim_config.b1),
        b2=float(optim_config.b2),
        weight_decay=float(optim_config.weight_decay),
        mask=weight_decay_mask,
    ))
    decay = float(optim_config.layer_decay)
    if decay != 1.0:
        parts.append(scale_by_tree(lambda tree: layer_decay_scales(tree, decay)))
    return optax.chain(*parts), schedule
