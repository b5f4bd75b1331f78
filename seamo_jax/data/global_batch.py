"""Per-process numpy batches -> global jax.Arrays sharded over the data axes.

Each process holds B_local = B / process_count samples; the global array has
the leading axis split over the mesh axes ("data", "fsdp") (docs/contracts.md
section 2), so data parallelism and FSDP both see distinct samples per device.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES) -> NamedSharding:
    """NamedSharding splitting the leading (batch) axis over `batch_axes` (default ("data", "fsdp")).

    Axes missing from `mesh` are dropped, so a pure data-parallel mesh works
    with the default. Trailing dims are replicated. This is the one batch
    sharding of the project (`seamo_jax.parallel` re-exports it).
    """
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    return NamedSharding(mesh, P(axes if axes else None))


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
