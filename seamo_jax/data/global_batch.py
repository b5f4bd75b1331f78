"""Per-process numpy batches -> global jax.Arrays sharded over the data axes.

Each process holds B_local = B / process_count samples; the global array has
the leading axis split over the mesh axes ("data", "fsdp") (docs/contracts.md
section 2), so data parallelism and FSDP both see distinct samples per device.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """NamedSharding splitting the leading (batch) axis over ("data", "fsdp")."""
    missing = [a for a in BATCH_AXES if a not in mesh.axis_names]
    if missing:
        raise ValueError(f"mesh axes {mesh.axis_names} lack batch axes {missing}")
    return NamedSharding(mesh, P(BATCH_AXES))


def to_global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Turns this process's batch (pytree of numpy [B_local, ...]) into global arrays [B, ...].

    The leading axis of every leaf must divide evenly over this process's
    share of the ("data", "fsdp") devices; leaves keep their dtype.
    """
    sharding = batch_sharding(mesh)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(place, local_batch)
