"""Compressed record arrays decoded straight into the batch (config.data.views = "device").

A record array stored as a blosc2 frame (`data_pipelines.features.Blosc2Tensor`)
is normally decoded into a fresh array per record, which the batch then
copies again. For the device-views pipeline the reader hands an
`EncodedArray` instead (the frame plus its shape and dtype,
`data_pipelines.features.LazyBlosc2`), the sample transform passes it
through untouched, and `stack_samples` (the pipeline's batch function)
decodes every frame once, into its row of the batch: one write per byte
instead of decode + copy (docs/performance.md, "Record storage").

An EncodedArray behaves as a read-only array where code needs one
(`np.asarray`, indexing): it then decodes. Only arrays whose values need no
check beyond shape and dtype (S2 uint16 reflectances) are read lazily; the
validation of records (`sensors.validate_array`) reads shape and dtype only.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from seamo_jax.data import shm_batches


class EncodedArray:
    """One blosc2 frame (bytes or a memoryview of the record) of a C-contiguous array of `shape` and `dtype`
    (picklable for Grain workers)."""

    __slots__ = ("frame", "shape", "dtype")

    def __init__(self, frame: bytes, shape: Sequence[int], dtype: Any):
        self.frame = frame
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    def __reduce__(self):
        # The frame may be a memoryview of the record (data_pipelines.example_reader): pickle its bytes.
        return EncodedArray, (bytes(self.frame), self.shape, self.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def decode(self, out: np.ndarray | None = None) -> np.ndarray:
        """The array (into `out`, a C-contiguous array of this shape and dtype, when given)."""
        import imagecodecs  # pylint: disable=g-import-not-at-top  (only blosc2 datasets need it)

        if out is None:
            out = np.empty(self.shape, self.dtype)
        elif out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"decode into {out.dtype} {out.shape} (contiguous: {out.flags.c_contiguous}); "
                             f"the frame holds {self.dtype} {self.shape}")
        imagecodecs.blosc2_decode(self.frame, out=out.reshape(-1).view(np.uint8), numthreads=1)
        return out

    def __array__(self, dtype=None, copy=None):
        values = self.decode()
        return values if dtype is None else values.astype(dtype)

    def __getitem__(self, index):
        # The sample transform takes the first S seasons: of a record with S seasons that is all of it.
        if isinstance(index, slice) and index.step in (None, 1) and (index.start or 0) == 0 \
                and (index.stop is None or index.stop >= self.shape[0]):
            return self
        return self.decode()[index]

    def __repr__(self) -> str:
        return f"EncodedArray({self.dtype}{list(self.shape)}, {len(self.frame)} bytes)"


def _is_encoded(x: Any) -> bool:
    return isinstance(x, EncodedArray)


def _row_spec(row: Any) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(row, EncodedArray):
        return row.shape, row.dtype
    row = np.asarray(row)
    return row.shape, row.dtype


def _fill(out: np.ndarray, rows: Sequence[Any]) -> np.ndarray:
    for i, row in enumerate(rows):
        if isinstance(row, EncodedArray):
            row.decode(out[i])
        else:
            out[i] = row
    return out


class StackSamples:
    """Grain batch function: `np.stack` of every leaf, frames decoded into their batch row.

    Args:
      slots: in Grain worker processes (config.data.worker_count > 0), the
        worker's shared-memory slots (`shm_batches.SlotWriter`): the batch is
        written straight into one and handed over as a `shm_batches.SlotBatch`,
        which `shm_batches.SlotReader` (the pipeline's stage in the trainer)
        opens. None: private arrays (in-process pipeline).
    """

    def __init__(self, slots: "shm_batches.SlotWriter | None" = None):
        self.slots = slots

    def __call__(self, samples: Sequence[Any]) -> Any:
        columns_by_sample = [jax.tree.leaves(s, is_leaf=_is_encoded) for s in samples]
        treedef = jax.tree.structure(samples[0], is_leaf=_is_encoded)
        columns = list(zip(*columns_by_sample))
        specs = []
        for rows in columns:
            shape, dtype = _row_spec(rows[0])
            specs.append(((len(rows),) + tuple(shape), dtype))
        numeric = [i for i, (_, dtype) in enumerate(specs) if not dtype.hasobject and dtype.kind not in "US"]
        if self.slots is None:
            arrays, header = [np.empty(*specs[i]) for i in numeric], None
        else:
            arrays, header = self.slots.allocate([specs[i] for i in numeric])
        leaves: list[Any] = [None] * len(columns)
        for k, i in enumerate(numeric):
            _fill(arrays[k], columns[i])
            leaves[i] = arrays[k] if header is None else shm_batches.SlotLeaf(k)
        for i, rows in enumerate(columns):
            if leaves[i] is None:  # strings / objects: as np.stack makes them
                leaves[i] = np.stack([np.asarray(r) for r in rows])
        tree = jax.tree.unflatten(treedef, leaves)
        return tree if header is None else shm_batches.SlotBatch(header, tree)


stack_samples = StackSamples()  # the in-process batch function
