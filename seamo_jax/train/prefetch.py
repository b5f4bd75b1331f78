"""Background-thread prefetch of training batches, placed on the mesh.

The loop used to call `next(iterator)` (Grain: read, crop, mask, batch) and
`to_global_batch` (host -> device copy) on the main thread between two train
steps, so each step waited for its own input. Here a Grain
`ThreadPrefetchDatasetIterator` runs both in a daemon thread while the
device runs the current step; the main thread only pops a ready
`(local_batch, global_batch)` pair.

Checkpointing stays exact: Grain's thread prefetcher records the parent's
state right after producing each element and `get_state()` returns the state
of the last element *consumed*, so batches still sitting in the buffer are
read again after a resume, never skipped.
"""

from __future__ import annotations

from typing import Any, Callable

import grain

PyTree = Any
StateT = dict[str, Any]


class _PlacedBatches:
    """Grain iterator -> `(local_batch, place(local_batch))`, forwarding its checkpoint state."""

    def __init__(self, iterator: Any, place: Callable[[PyTree], PyTree]):
        self._iterator = iterator
        self._place = place

    def __iter__(self) -> "_PlacedBatches":
        return self

    def __next__(self) -> tuple[PyTree, PyTree]:
        local = next(self._iterator)
        return local, self._place(local)

    def get_state(self) -> StateT:
        return self._iterator.get_state()

    def set_state(self, state: StateT) -> None:
        self._iterator.set_state(state)


def prefetch_to_device(iterator: Any, place: Callable[[PyTree], PyTree], buffer_size: int = 2
                       ) -> grain.experimental.ThreadPrefetchDatasetIterator:
    """Iterator of `(local_batch, global_batch)` pairs produced `buffer_size` ahead in a thread.

    Args:
      iterator: checkpointable Grain iterator of per-process numpy batches.
      place: local batch -> global `jax.Array`s (e.g. `TrainSetup.to_global`).
      buffer_size: ready batches kept ahead (each holds a batch in device
        memory); 0 = produce on the caller's thread (no prefetch).
    Returns:
      a Grain iterator: pass it to `Checkpointer.save` (its `get_state()` is
      the position after the last batch returned); `close()` it to stop the
      thread.
    """
    return grain.experimental.ThreadPrefetchDatasetIterator(_PlacedBatches(iterator, place), int(buffer_size))


__all__ = ["prefetch_to_device"]
