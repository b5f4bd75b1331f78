"""Sharded initialisation and state shardings.

Params are "born sharded": we trace the init function abstractly
(`jax.eval_shape`), read the logical partitioning Flax attached to each param,
map it to `NamedSharding`s with the rules, and run the real init under
`jax.jit(out_shardings=...)`. No host ever materialises the full params, which
is what lets a ViT-L/H initialise on a pod slice.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any


def logical_shardings(abstract_boxed: PyTree, mesh: Mesh, rules: Sequence[tuple]) -> PyTree:
    """NamedSharding tree for a (boxed) abstract pytree.

    Leaves boxed with `nn.LogicallyPartitioned` get their logical spec mapped
    through `rules`; unannotated leaves are replicated.
    """
    specs = nn.get_partition_spec(abstract_boxed)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def sharded_init(init_fn: Callable[..., PyTree], mesh: Mesh, rules: Sequence[tuple], *args: Any) -> tuple[PyTree, PyTree]:
    """Runs `init_fn(*args)` so that its outputs are created already sharded.

    Args:
      init_fn: returns a pytree of (possibly `nn.LogicallyPartitioned`) arrays,
        e.g. `lambda key: model.init(key, batch)`.
      mesh: the device mesh.
      rules: logical-axis rules (`seamo_jax.parallel.rules.logical_rules`).
      *args: passed to `init_fn` (e.g. PRNG keys); traced, not baked in.
    Returns:
      (params, shardings): the unboxed pytree of global `jax.Array`s and the
      matching tree of `NamedSharding`s.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = logical_shardings(abstract, mesh, rules)
    unboxed_init = lambda *a: nn.meta.unbox(init_fn(*a))  # noqa: E731
    # No mesh/rules context needed: out_shardings already places every param
    # and the init forward pass is dead code for XLA (only params are output),
    # so activation constraints would not change anything here.
    params = jax.jit(unboxed_init, out_shardings=shardings)(*args)
    return params, shardings


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of a fully replicated array (scalars, step, RNG)."""
    return NamedSharding(mesh, P())


def like_params_shardings(tree: PyTree, params_shardings: PyTree, mesh: Mesh) -> PyTree:
    """Shardings for a pytree whose param-shaped subtrees mirror the params.

    Optimiser states (Adam `mu`/`nu`, MultiSteps accumulators) contain whole
    copies of the params tree; each such subtree gets the params' shardings so
    optimiser memory is split exactly like the params (ZeRO/FSDP). Every other
    leaf (counters, scalars) is replicated.

    Args:
      tree: abstract (or concrete) pytree, e.g. `jax.eval_shape(tx.init, params)`.
      params_shardings: NamedSharding tree with the params' structure.
    """
    params_def = jax.tree.structure(params_shardings)

    def is_params_like(node: Any) -> bool:
        try:
            return jax.tree.structure(node) == params_def
        except Exception:  # noqa: BLE001 - unflattenable leaves are simply not param trees
            return False

    rep = replicated(mesh)
    return jax.tree.map(lambda node: params_shardings if is_params_like(node) else rep, tree, is_leaf=is_params_like)


def shardings_match(tree: PyTree, shardings: PyTree) -> bool:
    """True when every array in `tree` carries an equivalent sharding."""
    pairs = zip(jax.tree.leaves(tree), jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding)))
    return all(a.sharding.is_equivalent_to(s, a.ndim) for a, s in pairs)
