"""Per-process numpy batches -> global jax.Arrays sharded over the data axes.

The global array has the leading axis split over the batch mesh axes (from
the config's `sharding_rules`, ("data", "fsdp") by default; docs/contracts.md
section 2), so data parallelism and FSDP both see distinct samples per device.
Each process loads the rows its devices hold (`loader_shard`): B / count
rows, where processes holding the same rows (a `model` axis spanning hosts)
load the same ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

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


@dataclasses.dataclass(frozen=True)
class LoaderShard:
    """Which part of every global batch this process loads.

    Attributes:
      index: this process's data shard, in [0, count).
      count: distinct row sets the processes hold; each holds B / count rows.
    """

    index: int
    count: int


def _num_batch_shards(sharding: NamedSharding) -> int:
    """How many pieces the batch axis is cut into (product of the mesh axes in the spec's first entry)."""
    first = sharding.spec[0] if len(sharding.spec) else None
    axes = () if first is None else (first if isinstance(first, tuple) else (first,))
    return int(np.prod([sharding.mesh.shape[a] for a in axes], dtype=np.int64))


def loader_shard(sharding: NamedSharding, process_index: int | None = None,
                 process_of: Callable[[jax.Device], int] | None = None) -> LoaderShard:
    """The data shard of `process_index` (default this process) under the batch sharding.

    Derived from the mesh and the batch rules, not from the process index
    alone: when `model` (or an fsdp axis that the rules leave out of the
    batch) spans hosts, several processes hold the same rows, and they must
    load the same samples or the global array would mix different batches.
    Processes whose rows are the same form one shard; shards are numbered in
    the order of their first row.

    Args:
      process_of: device -> process index (default `device.process_index`;
        tests lay out several hosts over one host's devices).
    Raises:
      ValueError: a process's rows are not one contiguous block (e.g. a
        hand-made device order that interleaves hosts), which per-process
        loading cannot fill.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_of = process_of or (lambda device: device.process_index)
    pieces = _num_batch_shards(sharding)  # rows counted in units of one batch piece
    ranges: dict[int, set] = {}
    for device, index in sharding.devices_indices_map((pieces,)).items():
        ranges.setdefault(process_of(device), set()).add(index[0].indices(pieces)[:2])
    blocks = {}
    for proc, held in ranges.items():
        held = sorted(held)
        if any(a[1] != b[0] for a, b in zip(held[:-1], held[1:])):
            raise ValueError(f"process {proc} holds batch pieces {held} of {pieces}: not one contiguous block; "
                             f"lay the mesh out so each host's devices hold consecutive batch shards")
        blocks[proc] = (held[0][0], held[-1][1])
    distinct = sorted(set(blocks.values()))
    if len({stop - start for start, stop in distinct}) != 1 or sum(
            stop - start for start, stop in distinct) != pieces:
        raise ValueError(f"processes hold unequal or overlapping batch pieces {distinct} of {pieces}")
    return LoaderShard(index=distinct.index(blocks[process_index]), count=len(distinct))


@functools.lru_cache(maxsize=16)
def _loader_count(sharding: NamedSharding) -> int:
    """`loader_shard(sharding).count`, once per sharding: it walks every device, and batches come every step."""
    return loader_shard(sharding).count


def to_global_batch(local_batch: Any, sharding: NamedSharding) -> Any:
    """Turns this process's rows of the batch (pytree of numpy [B / shard count, ...]) into global arrays [B, ...].

    Args:
      local_batch: the rows of this process's data shard (`loader_shard`),
        the same on every process of that shard.
      sharding: the batch sharding (`batch_sharding(mesh, rules' batch axes)`).
    """
    count = _loader_count(sharding)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * count, *x.shape[1:]))

    return jax.tree.map(place, local_batch)
