"""Bilinear resizing of crop_area windows to the model's input size, on the host.

`region_reading="crop_area"` (CropMAE-style) cuts square windows of varying
size and resizes each to `crop_size` in the input pipeline (numpy, per read
thread), so the model always sees views of one size.
"""

from __future__ import annotations

import math
import threading

import numpy as np


def _bilinear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows i0, i1 and weight of i1 per output row (half-pixel centres, edge clamped)."""
    pos = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0.0, src - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (pos - i0).astype(np.float32)


_SCRATCH = threading.local()  # per thread (Grain read threads): reused float32 buffers of resize_bilinear


def _scratch(slot: int, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of `shape` backed by this thread's reusable buffer `slot`.

    Fresh multi-MB temporaries are mmap'd and page-faulted on every call,
    which costs more than the arithmetic; reusing the buffers avoids that.
    """
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    count = math.prod(shape)
    buffer = buffers.get(slot)
    if buffer is None or buffer.size < count:
        buffer = buffers[slot] = np.empty(count, np.float32)
    return buffer[:count].reshape(shape)


def resize_bilinear(image: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resize of [h, w, C] (any dtype, any strides) to float32 [size, size, C].

    Half-pixel centres with edge clamping and no antialiasing (=
    `jax.image.resize(..., "bilinear", antialias=False)` up to float32
    rounding); separable: one float32 copy of the window, then two row
    gathers and two column gathers into reused buffers, so cheap enough for
    the host pipeline.
    """
    h, w, channels = image.shape
    if out is None:
        out = np.empty((size, size, channels), np.float32)
    if (h, w) == (size, size):
        out[...] = image
        return out
    y0, y1, wy = _bilinear_taps(h, size)
    x0, x1, wx = _bilinear_taps(w, size)
    window = _scratch(0, (h, w, channels))
    window[...] = image                                   # one copy-convert of the window
    rows, below = _scratch(1, (size, w, channels)), _scratch(2, (size, w, channels))
    np.take(window, y0, axis=0, out=rows, mode="clip")    # indices are in range: "clip" skips buffering
    np.take(window, y1, axis=0, out=below, mode="clip")
    below -= rows
    below *= wy[:, None, None]
    rows += below                                         # rows lerped: [size, w, C]
    right = _scratch(3, (size, size, channels))
    np.take(rows, x0, axis=1, out=out, mode="clip")
    np.take(rows, x1, axis=1, out=right, mode="clip")
    right -= out
    right *= wx[None, :, None]
    out += right
    return out
