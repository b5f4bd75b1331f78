"""Shared-memory batch slots of Grain worker processes (seamo_jax/data/shm_batches.py)."""

from __future__ import annotations

import gc
import glob
import multiprocessing
import os
import pickle

import numpy as np
import pytest

from seamo_jax.data import shm_batches

pytestmark = pytest.mark.skipif(not shm_batches.available(), reason="needs a POSIX shared-memory folder")

SPECS = [((4, 8, 8, 3), np.uint16), ((4, 2), np.float32), ((4,), np.int32)]


def _batch(writer: shm_batches.SlotWriter, value: int):
    """A batch {"tiles": {"a": ..}, "boxes": .., "ids": ..} filled with `value`, as Grain gets it from a worker."""
    arrays, header = writer.allocate(SPECS)
    for array in arrays:
        array[...] = value
    if header is None:
        return {"tiles": {"a": arrays[0]}, "boxes": arrays[1], "ids": arrays[2], "name": "x"}
    tree = {"tiles": {"a": shm_batches.SlotLeaf(0)}, "boxes": shm_batches.SlotLeaf(1), "ids": shm_batches.SlotLeaf(2),
            "name": "x"}
    return shm_batches.SlotBatch(header, tree)


def _files(pid: int) -> list[str]:
    return glob.glob(os.path.join(shm_batches.SHM_DIR, f"seamo-batch-{pid}-*"))


def _check(batch, value: int) -> None:
    assert batch["name"] == "x"
    for leaf, (shape, dtype) in zip((batch["tiles"]["a"], batch["boxes"], batch["ids"]), SPECS):
        assert leaf.shape == shape and leaf.dtype == dtype
        assert np.all(leaf == value)


def test_a_slot_is_reused_once_the_trainer_drops_its_batch_and_no_file_is_left():
    writer, reader = shm_batches.SlotWriter(max_slots=2, wait_s=0.01), shm_batches.SlotReader()
    first_sent = _batch(writer, 1)
    first = reader.open(pickle.loads(pickle.dumps(first_sent)))
    _check(first, 1)
    second_sent = _batch(writer, 2)
    assert (first_sent.slot, second_sent.slot) == (0, 1)  # slot 0 is held by `first`
    second = reader.open(pickle.loads(pickle.dumps(second_sent)))
    _check(first, 1)  # writing slot 1 left slot 0 alone
    _check(second, 2)

    view = first["boxes"][1:]  # any view of a batch keeps its slot held
    del first
    gc.collect()
    private = _batch(writer, 3)  # both held: after wait_s the batch is made outside the slots
    assert isinstance(private, dict) and writer.private_batches == 1
    _check(private, 3)
    del view
    gc.collect()
    third_sent = _batch(writer, 4)
    assert third_sent.slot == 0 and third_sent.slot_path == first_sent.slot_path
    third = reader.open(pickle.loads(pickle.dumps(third_sent)))
    _check(third, 4)
    _check(second, 2)
    assert _files(os.getpid()) == []  # the trainer unlinks every file once it has mapped it


def test_a_batch_needing_more_bytes_than_a_free_slot_gets_a_new_one():
    writer = shm_batches.SlotWriter(max_slots=3, wait_s=0.01)
    arrays, small = writer.allocate([((4,), np.uint8)])
    writer._state["control"][small["slot"]] = shm_batches.FREE  # as the trainer's release does
    arrays, large = writer.allocate([((1 << 16,), np.float32)])
    assert large["slot"] != small["slot"] and large["size"] >= 4 << 16
    assert arrays[0].shape == (1 << 16,) and arrays[0].dtype == np.float32
    for path in _files(os.getpid()):  # nobody opened these: unlink as the worker does at exit
        os.unlink(path)


def _worker(queue, count: int) -> None:
    writer = shm_batches.SlotWriter(max_slots=2, wait_s=30.0)
    for value in range(count):
        queue.put(_batch(writer, value))
    queue.put(writer.private_batches)


def test_batches_from_another_process_arrive_intact_through_two_reused_slots():
    """A worker writes 8 batches through 2 slots; each is read while the next ones are written."""
    context = multiprocessing.get_context("spawn")  # what Grain's workers use
    queue = context.Queue()
    worker = context.Process(target=_worker, args=(queue, 8))
    worker.start()
    reader, held, paths = shm_batches.SlotReader(), [], set()
    for value in range(8):
        sent = queue.get(timeout=60)
        paths.add(sent.slot_path)
        batch = reader.open(sent)
        _check(batch, value)
        held.append(batch)
        if len(held) == 2:  # the worker waits for a slot until this one is dropped
            _check(held[0], value - 1)  # untouched while held
            held.pop(0)
            gc.collect()
    assert queue.get(timeout=60) == 0  # no batch had to go around the slots
    worker.join(timeout=60)
    assert worker.exitcode == 0
    assert len(paths) == 2
    assert _files(worker.pid) == []


def test_grain_worker_batches_through_slots_equal_those_through_grain_segments():
    """The pipeline with worker processes: slots (the default) give bitwise Grain's own batches, as views of
    shared memory, and the workers leave no file behind."""
    import jax  # noqa: PLC0415

    from seamo_jax.data import pipeline, testing  # noqa: PLC0415
    from seamo_jax.experiments.demo_cpu import get_config  # noqa: PLC0415

    config = get_config("fast")
    config.data.batch_size = 4
    config.data.overlap_range = (0.6, 1.0)
    config.data.prefetch = 1
    records = testing.make_records(12, tile_size=40)
    batches = {}
    for slots in (True, False):
        config.data.worker_batch_slots = slots
        it = pipeline.make_train_iterator(config, records, seed=5, worker_count=2)
        batches[slots] = [next(it) for _ in range(5)]  # crosses an epoch; more batches than one worker's slots
        it.close()
    for with_slots, plain in zip(batches[True], batches[False]):
        jax.tree.map(np.testing.assert_array_equal, with_slots, plain)
        assert jax.tree.structure(with_slots) == jax.tree.structure(plain)
    tiles = batches[True][0]["tiles"]["s2"]
    assert isinstance(tiles.base, np.ndarray) and type(tiles.base.base).__name__ == "memoryview"  # a slot's mmap
    assert not glob.glob(os.path.join(shm_batches.SHM_DIR, "seamo-batch-*"))
