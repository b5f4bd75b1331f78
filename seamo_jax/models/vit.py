"""Pre-LN ViT block and a stack of them (scanned over depth, optionally remat'd).

Block (as MAE / timm `Block`):  x = x + attn(norm1(x));  x = x + mlp(norm2(x)).

With `scan=True` the blocks are one `nn.scan` over a single block whose params
carry a leading [depth] axis (logical name "layers"): compile time and
program size no longer grow with depth, which matters on CPU and on TPU pods.
Param tree of a stack (under its parent, e.g. `encoder/`):

    blocks/norm1/{scale,bias}            [depth, D]
    blocks/attn/qkv/{kernel,bias}        [depth, D, 3, H, Dh], [depth, 3, H, Dh]
    blocks/attn/proj/{kernel,bias}       [depth, H, Dh, D], [depth, D]
    blocks/norm2/{scale,bias}            [depth, D]
    blocks/mlp/fc1/{kernel,bias}         [depth, D, F], [depth, F]
    blocks/mlp/fc2/{kernel,bias}         [depth, F, D], [depth, D]

With `scan=False` the same subtrees are `blocks_0`, `blocks_1`, ... without
the leading axis.

Stochastic depth (`drop_path` > 0 and not `deterministic`, fine-tuning):
each residual branch of block i is dropped per sequence with probability
`drop_path * i / (depth - 1)` (timm / MAE: linear from 0 to the rate), kept
branches scaled by 1 / keep; rng stream "dropout". With `drop_path` = 0 (the
default) or `deterministic` the stack is exactly the plain one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax.models import layers
from seamo_jax.models.attention import SelfAttention
from seamo_jax.models.backend import Backend

_ACTIVATION = ("batch", "length", "embed")

REMAT_POLICIES = {
    "none": None,  # no rematerialisation: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block in backward
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
    """One pre-LN Transformer block. `scanned=True` makes it return (x, None) for nn.scan.

    The optional second call argument is this block's stochastic-depth rate
    (a float, or a traced scalar when scanned); None = no drop path.
    """

    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()
    scanned: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, drop_rate=None):
        """[B, L, D] -> [B, L, D] (or ([B, L, D], None) when scanned)."""
        x = nn.with_logical_constraint(x, _ACTIVATION)
        h = layers.layer_norm("norm1", self.dtype, self.backend)(x)
        x = x + self._drop_path(SelfAttention(self.num_heads, self.dtype, self.backend, name="attn")(h), drop_rate)
        x = nn.with_logical_constraint(x, _ACTIVATION)
        h = layers.layer_norm("norm2", self.dtype, self.backend)(x)
        x = x + self._drop_path(layers.Mlp(self.mlp_dim, self.dtype, self.backend, name="mlp")(h), drop_rate)
        x = nn.with_logical_constraint(x, _ACTIVATION)
        return (x, None) if self.scanned else x

    def _drop_path(self, branch: jnp.ndarray, rate) -> jnp.ndarray:
        """Zeroes the residual branch of whole sequences with probability `rate`, scales the rest by 1/keep."""
        if rate is None:
            return branch
        keep = 1.0 - jnp.asarray(rate, jnp.float32)
        shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
        kept = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(kept, branch / keep.astype(branch.dtype), jnp.zeros((), branch.dtype))


def block_stack(x: jnp.ndarray, *, depth: int, num_heads: int, mlp_dim: int, dtype: jnp.dtype = jnp.float32,
                scan: bool = True, remat_policy: str = "none", backend: Backend = Backend(),
                name: str = "blocks", drop_path: float = 0.0, deterministic: bool = True) -> jnp.ndarray:
    """Applies `depth` Blocks; call inside a parent's `nn.compact` method.

    A function rather than a wrapper Module so the params sit directly at
    `<parent>/blocks/...` (scanned) or `<parent>/blocks_<i>/...` (unrolled),
    the layout timm/MAE exports expect, without an extra nesting level.

    Args:
      x: [B, L, D].
      depth, num_heads, mlp_dim: block shapes.
      dtype: compute dtype (params stay float32).
      scan: one nn.scan over depth (True) or unrolled blocks (False).
      remat_policy: a key of REMAT_POLICIES.
      backend: attention implementation and CPU kernels (models/backend.py).
      name: param subtree name.
      drop_path: stochastic-depth rate of the last block (linear from 0 at the
        first); used only when not `deterministic` (module docstring).
      deterministic: True (inference, pretraining default) = no drop path.
    Returns:
      [B, L, D].
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat_policy {remat_policy!r}; known: {sorted(REMAT_POLICIES)}")
    block_cls = Block
    if remat_policy != "none":
        # Inside scan the loop boundary already stops XLA from CSE-ing the
        # recomputation away, so prevent_cse (extra barriers) would only cost speed.
        block_cls = nn.remat(Block, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
    kwargs = dict(num_heads=num_heads, mlp_dim=mlp_dim, dtype=dtype, backend=backend)
    rates = None  # per-block stochastic-depth rates (timm: linspace(0, drop_path, depth))
    if drop_path > 0 and not deterministic:
        rates = [float(r) for r in np.linspace(0.0, float(drop_path), depth)]
    if scan:
        scanned = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            length=depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = scanned(**kwargs, scanned=True, name=name)(x, None if rates is None else jnp.asarray(rates, jnp.float32))
        return x
    for i in range(depth):
        block = block_cls(**kwargs, name=f"{name}_{i}")
        x = block(x) if rates is None else block(x, rates[i])
    return x
