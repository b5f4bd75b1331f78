"""Mesh construction, logical-axis rules, sharded init and batch placement."""

from seamo_jax.data.global_batch import batch_sharding
from seamo_jax.parallel.init import like_params_shardings, logical_shardings, replicated, sharded_init, shardings_match
from seamo_jax.parallel.mesh import (MeshConfigError, data_parallel_size, group_into_slices, hybrid_device_array,
                                    make_mesh, resolve_mesh_shape)
from seamo_jax.parallel.rules import ShardingRulesError, batch_mesh_axes, logical_rules

__all__ = [
    "MeshConfigError", "ShardingRulesError", "batch_mesh_axes", "batch_sharding", "data_parallel_size",
    "group_into_slices", "hybrid_device_array",
    "like_params_shardings", "logical_rules", "logical_shardings", "make_mesh", "replicated", "resolve_mesh_shape",
    "sharded_init", "shardings_match",
]
