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


class EncodedArray:
    """One blosc2 frame of a C-contiguous array of `shape` and `dtype` (picklable for Grain workers)."""

    __slots__ = ("frame", "shape", "dtype")

    def __init__(self, frame: bytes, shape: Sequence[int], dtype: Any):
        self.frame = frame
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

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


def _stack(*rows: Any) -> np.ndarray:
    if not any(isinstance(row, EncodedArray) for row in rows):
        return np.stack(rows)
    first = rows[0]
    out = np.empty((len(rows),) + tuple(first.shape), first.dtype)
    for i, row in enumerate(rows):
        if isinstance(row, EncodedArray):
            row.decode(out[i])
        else:
            out[i] = row
    return out


def stack_samples(samples: Sequence[Any]) -> Any:
    """Grain batch function: `np.stack` of every leaf, frames decoded into their batch row."""
    return jax.tree.map(_stack, *samples, is_leaf=_is_encoded)
