"""Where the batch lives on the mesh: leading (batch) axis split over data axes."""

from __future__ import annotations

from typing import Sequence

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp")) -> NamedSharding:
    """`NamedSharding(mesh, P(("data", "fsdp")))`: dim 0 split over the batch axes.

    Axes missing from `mesh` are dropped, so a pure data-parallel mesh works
    with the default. Trailing dims are replicated.
    """
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    return NamedSharding(mesh, P(axes if axes else None))
