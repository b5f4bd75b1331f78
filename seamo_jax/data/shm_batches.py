"""Batches that Grain worker processes hand to the trainer through reused shared-memory slots.

Why: with config.data.worker_count > 0, Grain copies every batch a worker
makes into a new shared-memory segment, and the trainer process maps it,
reads it once and unlinks it. Every page of every batch is therefore
allocated, zeroed and faulted in anew: ~1,100 page faults for one
SSL4EO-sized sample (4.2 MB of tiles), measured at ~3 CPU-ms of kernel time
per sample in the worker, more than the ~2.6 ms of reading and decoding
(docs/performance.md, "Worker processes").

Here each worker writes its batches straight into a few /dev/shm files that
it creates once and reuses (slots, `SlotWriter`); the trainer maps each slot
once and keeps it mapped (`SlotReader`). A slot is handed back to its worker
when the last array of the batch read from it is garbage (a
`weakref.finalize` on the batch's buffer), so a slot is never rewritten while
anything still holds the batch (a jax CPU buffer aliasing it, a prefetch
queue, the training loop). When all of a worker's slots are held, the worker
makes a private batch instead, which Grain copies as before: slower, never
blocked.

Protocol: per worker one control file ([max_slots] uint8, 0 = free, 1 = held)
and one file per slot, all created by the worker. What crosses the process
boundary is a `SlotBatch` (file names and the batch's layout, a few hundred
bytes, pickled by Grain). The trainer unlinks each file as soon as it has
mapped it, so a crash of either process leaves nothing behind in /dev/shm
once both have exited; files the trainer never opened are unlinked by the
worker at exit.

This module imports only the standard library and numpy (it runs in every
worker process).
"""

from __future__ import annotations

import atexit
import logging
import mmap
import os
import time
import uuid
import weakref
from typing import Any, Callable, Sequence

import numpy as np

SHM_DIR = "/dev/shm"
_ALIGN = 64  # every array starts on a cache line
FREE, HELD = 0, 1


def available(directory: str = SHM_DIR) -> bool:
    """Whether slots can be made here (a POSIX shared-memory folder: Linux's /dev/shm)."""
    return os.name == "posix" and os.path.isdir(directory) and os.access(directory, os.W_OK)


def slots_per_worker(buffer_size: int) -> int:
    """Batches of one worker that can be alive at once with Grain's `mp_prefetch(per_worker_buffer_size=
    buffer_size)`: its output queue and the trainer's read-ahead of that worker (interleave) hold
    `buffer_size` each, plus the batch being written, the one waiting to enter the queue, and the
    two the trainer works on (the train step's and the device prefetch's)."""
    return 2 * int(buffer_size) + 4


def _map(path: str, size: int, create: bool) -> mmap.mmap:
    fd = os.open(path, (os.O_RDWR | os.O_CREAT | os.O_EXCL) if create else os.O_RDWR, 0o600)
    try:
        if create:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _layout(specs: Sequence[tuple[tuple[int, ...], np.dtype]]) -> tuple[list[int], int]:
    """Byte offsets of arrays of these (shape, dtype) packed in one buffer, and the buffer's size."""
    offsets, end = [], 0
    for shape, dtype in specs:
        offsets.append(end)
        end += -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
    return offsets, max(end, _ALIGN)


def _views(buffer: Any, specs: Sequence[tuple[tuple[int, ...], np.dtype]], offsets: Sequence[int]
           ) -> list[np.ndarray]:
    """Arrays of `specs` at `offsets` in `buffer` (a uint8 array: every view keeps it alive)."""
    out = []
    for (shape, dtype), offset in zip(specs, offsets):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out.append(buffer[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape))
    return out


class SlotBatch:
    """What a worker sends for a batch written into a slot: where it is and how to read it (picklable, small).

    `tree` is the batch with every array replaced by its index in `specs`
    (`SlotLeaf`); `SlotReader.open` turns it back into arrays.
    """

    __slots__ = ("control_path", "slot_path", "slot", "size", "specs", "offsets", "tree")

    def __init__(self, header: dict, tree: Any):
        """header: from `SlotWriter.allocate`; tree: the batch, its slot arrays as SlotLeaf."""
        for name in self.__slots__[:-1]:
            setattr(self, name, header[name])
        self.tree = tree

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state):
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"SlotBatch({self.slot_path}, {len(self.specs)} arrays, {self.size} bytes)"


class SlotLeaf:
    """Placeholder of one array of a SlotBatch: its index in the batch's specs."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __getstate__(self):
        return self.index

    def __setstate__(self, state):
        self.index = state

    def __repr__(self) -> str:
        return f"SlotLeaf({self.index})"


class SlotWriter:
    """A worker's slots (module docstring). Made in the trainer process and pickled to the workers;
    each worker makes its own files on first use, so the trainer never owns any.

    Args:
      max_slots: files per worker.
      wait_s: how long a batch waits for a held slot to be freed before it
        is made privately instead (so a trainer keeping many batches slows
        the workers down but never blocks them).
      directory: the shared-memory folder (Linux: /dev/shm).
    """

    def __init__(self, max_slots: int, directory: str = SHM_DIR, wait_s: float = 2.0):
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}")
        self.max_slots = int(max_slots)
        self.directory = directory
        self.wait_s = float(wait_s)
        self._state: dict | None = None  # per process: not pickled
        self.private_batches = 0  # batches made outside the slots (all held, or no /dev/shm)

    def __getstate__(self):
        return {"max_slots": self.max_slots, "directory": self.directory, "wait_s": self.wait_s}

    def __setstate__(self, state):
        self.__init__(**state)

    def _open(self) -> dict | None:
        """This process's control file and slots (made on first use), or None without a shared-memory folder."""
        if self._state is None or self._state["pid"] != os.getpid():
            if not available(self.directory):
                self._state = {"pid": os.getpid(), "control": None}
                return None
            stem = os.path.join(self.directory, f"seamo-batch-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            control_path = f"{stem}-control"
            control = _map(control_path, self.max_slots, create=True)
            self._state = {"pid": os.getpid(), "stem": stem, "control_path": control_path,
                           "control": np.frombuffer(control, np.uint8), "slots": []}
            paths = [control_path]
            self._state["paths"] = paths
            atexit.register(lambda: [_unlink(p) for p in paths])
        return self._state if self._state["control"] is not None else None

    def _free_slot(self, size: int) -> int | None:
        control, slots = self._state["control"], self._state["slots"]
        return next((i for i, (_, mapped) in enumerate(slots) if control[i] == FREE and len(mapped) >= size), None)

    def allocate(self, specs: Sequence[tuple[tuple[int, ...], Any]]) -> tuple[list[np.ndarray], dict | None]:
        """Arrays of `specs` (shape, dtype) to fill, and the header of their slot.

        With a header, the arrays are views of a slot: hand Grain
        `SlotBatch(header, tree)`, `tree` being the batch with the i-th array
        replaced by `SlotLeaf(i)`. Without (None: every slot held, or no
        shared-memory folder) they are private arrays: hand the batch itself.
        """
        specs = [(tuple(int(d) for d in shape), np.dtype(dtype)) for shape, dtype in specs]
        offsets, size = _layout(specs)
        state = self._open()
        if state is None:  # no shared-memory folder here
            self.private_batches += 1
            return [np.empty(shape, dtype) for shape, dtype in specs], None
        control, slots = state["control"], state["slots"]
        slot = self._free_slot(size)
        if slot is None and len(slots) < self.max_slots:
            slot = len(slots)
            path = f"{state['stem']}-slot{slot}"
            state["paths"].append(path)
            slots.append((path, _map(path, size, create=True)))
        deadline = time.monotonic() + self.wait_s
        while slot is None and time.monotonic() < deadline:  # the trainer frees one when it drops a batch
            time.sleep(0.0005)
            slot = self._free_slot(size)
        if slot is None:
            self.private_batches += 1
            if self.private_batches == 1:
                logging.warning("shm_batches: all %d batch slots of worker %d held for %.1f s; this and later "
                                "such batches are copied through a new shared-memory segment (slower). The "
                                "trainer holds more of this worker's batches than slots_per_worker("
                                "config.data.prefetch) allows: drop or copy batches it keeps.",
                                self.max_slots, os.getpid(), self.wait_s)
            return [np.empty(shape, dtype) for shape, dtype in specs], None
        control[slot] = HELD
        path, mapped = slots[slot]
        header = {"control_path": state["control_path"], "slot_path": path, "slot": slot, "size": len(mapped),
                  "specs": [(shape, dtype.str) for shape, dtype in specs], "offsets": offsets}
        return _views(np.frombuffer(mapped, np.uint8), specs, offsets), header


def _replace_arrays(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """`tree` (nested dicts / lists / tuples) with every leaf x replaced by fn(x)."""
    if isinstance(tree, dict):
        return {k: _replace_arrays(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_replace_arrays(v, fn) for v in tree)
    return fn(tree)


class SlotReader:
    """The trainer's side: maps every slot file once (then unlinks it) and hands batches back when freed."""

    def __init__(self):
        self._mapped: dict[str, mmap.mmap] = {}
        self._controls: dict[str, np.ndarray] = {}

    def _mapping(self, path: str, size: int) -> mmap.mmap:
        mapped = self._mapped.get(path)
        if mapped is None:
            mapped = self._mapped[path] = _map(path, size, create=False)
            _unlink(path)  # both processes hold it mapped; no name is needed any more
        return mapped

    def open(self, batch: Any) -> Any:
        """A SlotBatch as its arrays (views of the slot, freed for the worker when the last one is garbage);
        anything else unchanged."""
        if not isinstance(batch, SlotBatch):
            return batch
        control = self._controls.get(batch.control_path)
        if control is None:
            size = os.stat(batch.control_path).st_size
            control = self._controls[batch.control_path] = np.frombuffer(
                self._mapping(batch.control_path, size), np.uint8)
        buffer = np.frombuffer(self._mapping(batch.slot_path, batch.size), np.uint8)
        finaliser = weakref.finalize(buffer, control.__setitem__, batch.slot, FREE)
        finaliser.atexit = False
        arrays = _views(buffer, [(tuple(s), np.dtype(d)) for s, d in batch.specs], batch.offsets)
        return _replace_arrays(batch.tree, lambda x: arrays[x.index] if isinstance(x, SlotLeaf) else x)
